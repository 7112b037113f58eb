"""From a validated callback to the inbox record: pure functions, no I/O.

The record says what the worker needs to reconcile the callback: which task
(or how to find it), the session it claims, the status it claims, and the
verified body itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from schemas.callbacks import (
    MPS_EVENT_FIELDS,
    VOD_FILE_EVENT_FIELDS,
    VOD_TASK_EVENT_FIELDS,
    is_live_stream_notification,
    live_stream_result_field,
)

# VOD events about files that DescribeMediaInfos confirms (SPEC 6).
VOD_FILE_EVENTS = ("NewFileUpload", "FileDeleted")

# How the worker finds what a callback is about.
RESOLVE_BY_TASK_ID = "task_id"
RESOLVE_BY_SESSION_ID = "session_id"  # MPS BatchTask callbacks without a task id
RESOLVE_BY_FILE_ID = "file_id"  # VOD NewFileUpload / FileDeleted: DescribeMediaInfos
RESOLVE_NOTHING = "none"  # other VOD events without a task: nothing to ask about

# Where a record came from: a callback received over HTTP, or a finished task the
# missed-callback sweeper listed (receiver/sweeper/).
ORIGIN_CALLBACK = "callback"
ORIGIN_SWEEPER = "sweeper"

# Parts of an MPS or VOD body that change on every retry of the same callback
# (AMS signs in a header: its whole body is content).
_SIGNATURE_FIELDS = frozenset({"Sign", "Timestamp", "T"})


@dataclass(frozen=True)
class CallbackRecord:
    id: str
    dedup_key: str
    source: str
    event_type: str
    task_id: str | None
    resolve_by: str
    session_id: str | None
    session_context: str | None
    claimed_status: str | None
    body: str
    received_at: float
    origin: str = ORIGIN_CALLBACK  # ORIGIN_SWEEPER for a task the sweeper found never called back


def new_record_id(now: float | None = None) -> str:
    """A time-ordered unique id: 48 bits of milliseconds, 80 random bits, in hex."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{os.urandom(10).hex()}"


def _nonempty(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def copy_key(source: str, payload: dict[str, Any]) -> str:
    """What identifies a copy of one callback: its whole body but the per-delivery signature.

    Two callbacks that differ in any field the checks read (a SessionContext,
    a status, an event type) are never copies, so a forged body can share a key
    only with a byte-for-byte copy of the genuine callback's content (SPEC 6).
    """
    stable = {k: v for k, v in payload.items() if k not in _SIGNATURE_FIELDS} if source != "ams" else payload
    canonical = json.dumps([source, stable], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_live_stream_event_type(source: str, event_type: str) -> bool:
    """A live-stream notification's type: an MPS event type that is no task event type (its NotificationType)."""
    return source == "mps" and event_type not in MPS_EVENT_FIELDS


def is_live_stream_record(record: CallbackRecord) -> bool:
    """A live-stream notification's record: received as a callback, with a live-stream event type."""
    return is_live_stream_event_type(record.source, record.event_type) and record.origin == ORIGIN_CALLBACK


def live_stream_result(record: CallbackRecord) -> Any:
    """The notification's own result object (AiReviewResultInfo, ProcessEofInfo, ...), which no Describe returns."""
    return json.loads(record.body).get(live_stream_result_field(record.event_type))


def _mps_parts(payload: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    if is_live_stream_notification(payload):
        # No status of its own: a notification says something happened to a task that goes on.
        return payload["NotificationType"], _nonempty(payload.get("TaskId")), {}
    event_type = payload["EventType"]
    event = payload.get(MPS_EVENT_FIELDS[event_type]) or {}
    task_id = _nonempty(event.get("TaskId")) or _nonempty(payload.get("TaskId"))
    return event_type, task_id, event


def _vod_event_object(payload: dict[str, Any], event_type: str) -> dict[str, Any]:
    field = VOD_TASK_EVENT_FIELDS.get(event_type) or VOD_FILE_EVENT_FIELDS.get(event_type)
    if field:
        return payload.get(field) or {}
    # An event type newer than our table: take the one event object that carries a task.
    for key, value in payload.items():
        if isinstance(value, dict) and "TaskId" in value and key not in ("Sign", "T"):
            return value
    return {}


def file_ids(record: CallbackRecord) -> list[str]:
    """The files a VOD NewFileUpload / FileDeleted callback is about, in the callback's order."""
    payload = json.loads(record.body)
    event = _vod_event_object(payload, record.event_type)
    if record.event_type == "NewFileUpload":
        return [str(event.get("FileId"))]
    return list(dict.fromkeys(str(file_id) for file_id in event.get("FileIdSet") or []))


def extract_record(
    source: str, payload: dict[str, Any], raw_body: bytes, received_at: float
) -> CallbackRecord:
    """Build the inbox record of a callback that passed authentication and its schema."""
    if source == "mps":
        event_type, task_id, event = _mps_parts(payload)
        session_id = _nonempty(payload.get("SessionId"))
        session_context = payload.get("SessionContext")
        resolve_by = RESOLVE_BY_TASK_ID if task_id else RESOLVE_BY_SESSION_ID
    elif source == "vod":
        event_type = payload["EventType"]
        event = _vod_event_object(payload, event_type)
        task_id = _nonempty(event.get("TaskId")) or _nonempty(payload.get("TaskId"))
        session_id = _nonempty(event.get("SessionId")) or _nonempty(payload.get("SessionId"))
        session_context = event.get("SessionContext", payload.get("SessionContext"))
        if task_id:
            resolve_by = RESOLVE_BY_TASK_ID
        else:
            resolve_by = RESOLVE_BY_FILE_ID if event_type in VOD_FILE_EVENTS else RESOLVE_NOTHING
    elif source == "ams":
        event_type = "AudioModeration"
        event = payload
        task_id = payload["TaskId"]
        session_id = session_context = None
        resolve_by = RESOLVE_BY_TASK_ID
    else:
        raise ValueError(f"unknown source {source!r}")

    return CallbackRecord(
        id=new_record_id(received_at),
        dedup_key=copy_key(source, payload),
        source=source,
        event_type=event_type,
        task_id=task_id,
        resolve_by=resolve_by,
        session_id=session_id,
        session_context=session_context if isinstance(session_context, str) else None,
        claimed_status=_nonempty(event.get("Status")),
        body=raw_body.decode("utf-8"),
        received_at=received_at,
    )


def swept_record(source: str, event_type: str, task_id: str, now: float, claimed_status: str = "FINISH",
                 listed_with: str | None = None) -> CallbackRecord:
    """The inbox record of a finished task the sweeper listed.

    Its key is that of its body, which holds nothing that changes between
    sweeps, so every sweep of the same task, from any sweeper, restart or
    overlapping window, is the same record. A late callback is a record of its
    own, and its event is the one already forwarded (same `event_id`).
    """
    payload = {"origin": ORIGIN_SWEEPER, "source": source, "event_type": event_type, "task_id": task_id,
               "claimed_status": claimed_status, "listed_with": listed_with or f"{source}:DescribeTasks"}
    return CallbackRecord(
        id=new_record_id(now),
        dedup_key=copy_key(source, payload),
        source=source,
        event_type=event_type,
        task_id=task_id,
        resolve_by=RESOLVE_BY_TASK_ID,
        session_id=None,
        session_context=None,
        claimed_status=claimed_status,
        body=json.dumps(payload),
        received_at=now,
        origin=ORIGIN_SWEEPER,
    )
