"""What an SQS inbox message holds: one callback record as JSON (and, when queued afresh, when its latest copy came)."""

from __future__ import annotations

import json
from dataclasses import asdict

from receiver.records import CallbackRecord

MAX_RECEIVE = 10  # SQS's limit per ReceiveMessage and per DeleteMessageBatch


def message_body(record: CallbackRecord, patience_from: float | None = None) -> str:
    """An inbox message: the record, and when its latest copy came if it is queued afresh for one."""
    body = asdict(record)
    if patience_from is not None:
        body["patience_from"] = patience_from
    return json.dumps(body)


def record_of(body: str) -> tuple[CallbackRecord, float | None]:
    fields = json.loads(body)
    patience_from = fields.pop("patience_from", None)
    return CallbackRecord(**fields), patience_from
