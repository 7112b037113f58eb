"""The normalized event (SPEC 7) of an authoritative answer: its deterministic id, its fields, its redaction.

Pure functions: `receiver.reconcile` decides whether a callback is forwarded,
this module says what is forwarded.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from receiver.records import ORIGIN_SWEEPER, CallbackRecord
from receiver.tencentcloud import DescribeCall
from schemas.describe import TaskState
from schemas.event import SCHEMA_VERSION

REDACTED = "***"

# Statuses after which a task does not change any more.
FINAL_STATUSES = {"mps": {"FINISH"}, "vod": {"FINISH"}, "ams": {"FINISH", "ERROR", "CANCELLED"}}
FAILED_STATUSES = {"ERROR", "CANCELLED"}


# --- the event -------------------------------------------------------------------------


def event_id(source: str, event_type: str, subject: str, status: str | None) -> str:
    """Deterministic: one state of one task gives one id, whichever callback led to it.

    The event type is part of it, so a forged callback of another event type
    can never take the id of the genuine event (SPEC 7).
    """
    material = json.dumps([SCHEMA_VERSION, source, event_type, subject, status])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [(k, REDACTED if k == "token" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def is_secret_name(key: Any) -> bool:
    """NotifyKey, and the credentials of S3InputInfo, S3OutputStorage, AwsSQS (S3SecretId, S3SecretKey, ...)."""
    return isinstance(key, str) and (key == "NotifyKey" or key.endswith(("SecretId", "SecretKey")))


def redact(value: Any) -> Any:
    """A copy with secrets and NotifyUrl tokens replaced by ***, nothing else changed, at any depth.

    Iterative, not recursive: an answer nested deeper than the interpreter's
    stack is still redacted rather than failing its record.
    """
    if not isinstance(value, dict | list):
        return value
    result: Any = {} if isinstance(value, dict) else []
    stack = [(value, result)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(source, dict) and is_secret_name(key) and isinstance(item, str) and item:
                copied: Any = REDACTED
            elif isinstance(source, dict) and key == "NotifyUrl" and isinstance(item, str):
                copied = _redact_url(item)
            elif isinstance(item, dict | list):
                copied = {} if isinstance(item, dict) else []
                stack.append((item, copied))
            else:
                copied = item
            if isinstance(target, dict):
                target[key] = copied
            else:
                target.append(copied)
    return result


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_event(
    record: CallbackRecord | None,
    source: str,
    event_type: str,
    task_id: str,
    call: DescribeCall,
    answer: dict[str, Any],
    state: TaskState,
    reconciled_at: float,
) -> dict[str, Any]:
    """The normalized event of one Describe answer (`record` is None for a swept task)."""
    finished = state.status in FINAL_STATUSES[source]
    detail = redact({k: v for k, v in answer.items() if k != "RequestId"})
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id(source, event_type, task_id, state.status),
        "source": source,
        "event_type": event_type,
        "task_id": task_id,
        "task_type": state.task_type,
        "status": state.status,
        "succeeded": (state.error_code is None and state.status not in FAILED_STATUSES) if finished else None,
        "error_code": state.error_code,
        "error_message": state.error_message if state.error_code or state.status in FAILED_STATUSES else None,
        "session_id": state.session_id or None,
        "session_context": state.session_context or None,
        "created_at": state.created_at,
        "started_at": state.started_at,
        "finished_at": state.finished_at if finished else None,
        # A swept task's callback was never received.
        "received_at": iso(record.received_at) if record and record.origin != ORIGIN_SWEEPER else None,
        "reconciled_at": iso(reconciled_at),
        "reconciled_with": call.label,
        "detail": detail,
    }


def event_without_task(record: CallbackRecord, subject: str, **fields: Any) -> dict[str, Any]:
    """An event about no task (VOD file events, unreconciled VOD events): the task's fields are null."""
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id(record.source, record.event_type, subject, None),
        "source": record.source,
        "event_type": record.event_type,
        **dict.fromkeys(("task_id", "task_type", "status", "succeeded", "error_code", "error_message",
                         "session_id", "session_context", "created_at", "started_at", "finished_at")),
        "received_at": iso(record.received_at),
        "reconciled_at": None,
        "reconciled_with": None,
        "detail": None,
        **fields,
    }


def unreconciled_event(record: CallbackRecord, body: dict[str, Any]) -> dict[str, Any]:
    """A VOD event with nothing to describe, forwarded on its signature alone (VOD_FORWARD_UNRECONCILED=true)."""
    detail = {k: v for k, v in body.items() if k not in ("Sign", "T")}
    return event_without_task(record, record.dedup_key, session_id=record.session_id,
                               session_context=record.session_context, detail=redact(detail))
