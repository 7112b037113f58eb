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

from schemas.callbacks import MPS_EVENT_FIELDS, VOD_FILE_EVENT_FIELDS, VOD_TASK_EVENT_FIELDS

# How the worker finds the task a callback is about.
RESOLVE_BY_TASK_ID = "task_id"
RESOLVE_BY_SESSION_ID = "session_id"  # MPS BatchTask callbacks without a task id
RESOLVE_NOTHING = "none"  # VOD file events: no task to ask about

# Where a record came from: a callback received over HTTP, or a finished task the
# missed-callback sweeper listed (receiver/sweeper.py).
ORIGIN_CALLBACK = "callback"
ORIGIN_SWEEPER = "sweeper"

# Parts of a body that change on every retry of the same callback.
_SIGNATURE_FIELDS = ("Sign", "Timestamp", "T")


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


def _dedup_key(
    source: str,
    event_type: str,
    subject: str,
    claimed_status: str | None,
    session_id: str | None,
) -> str:
    material = json.dumps([source, event_type, subject, claimed_status, session_id])
    return hashlib.sha256(material.encode()).hexdigest()


def _body_fingerprint(payload: dict[str, Any]) -> str:
    """Identifies a callback with no task id, ignoring the per-retry signature."""
    stable = {k: v for k, v in payload.items() if k not in _SIGNATURE_FIELDS}
    canonical = json.dumps(stable, sort_keys=True, separators=(",", ":"))
    return "body:" + hashlib.sha256(canonical.encode()).hexdigest()


def _mps_parts(payload: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
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


def _vod_subject(event_type: str, event: dict[str, Any]) -> str | None:
    """What a task-less VOD event is about: its file(s)."""
    if event_type == "NewFileUpload":
        return "file:" + str(event.get("FileId"))
    if event_type == "FileDeleted":
        return "files:" + ",".join(sorted(map(str, event.get("FileIdSet") or [])))
    return None


def extract_record(
    source: str, payload: dict[str, Any], raw_body: bytes, received_at: float
) -> CallbackRecord:
    """Build the inbox record of a callback that passed authentication and its schema."""
    if source == "mps":
        event_type, task_id, event = _mps_parts(payload)
        session_id = _nonempty(payload.get("SessionId"))
        session_context = payload.get("SessionContext")
        resolve_by = RESOLVE_BY_TASK_ID if task_id else RESOLVE_BY_SESSION_ID
        subject = task_id
    elif source == "vod":
        event_type = payload["EventType"]
        event = _vod_event_object(payload, event_type)
        task_id = _nonempty(event.get("TaskId")) or _nonempty(payload.get("TaskId"))
        session_id = _nonempty(event.get("SessionId")) or _nonempty(payload.get("SessionId"))
        session_context = event.get("SessionContext", payload.get("SessionContext"))
        resolve_by = RESOLVE_BY_TASK_ID if task_id else RESOLVE_NOTHING
        subject = task_id or _vod_subject(event_type, event)
    elif source == "ams":
        event_type = "AudioModeration"
        event = payload
        task_id = payload["TaskId"]
        session_id = session_context = None
        resolve_by = RESOLVE_BY_TASK_ID
        subject = task_id
    else:
        raise ValueError(f"unknown source {source!r}")

    claimed_status = _nonempty(event.get("Status"))
    subject = subject or _body_fingerprint(payload)
    return CallbackRecord(
        id=new_record_id(received_at),
        dedup_key=_dedup_key(source, event_type, subject, claimed_status, session_id),
        source=source,
        event_type=event_type,
        task_id=task_id,
        resolve_by=resolve_by,
        session_id=session_id,
        session_context=session_context if isinstance(session_context, str) else None,
        claimed_status=claimed_status,
        body=raw_body.decode("utf-8"),
        received_at=received_at,
    )


def swept_record(source: str, event_type: str, task_id: str, now: float, claimed_status: str = "FINISH",
                 listed_with: str | None = None) -> CallbackRecord:
    """The inbox record of a finished task the sweeper listed.

    Its dedup key is computed as a callback's (no session: the listing does not
    carry the one the callback would), so every sweep of the same task, from any
    sweeper, restart or overlapping window, is the same record; for a task
    without a session it is also the same key as its callback's.
    """
    body = json.dumps({"origin": ORIGIN_SWEEPER, "source": source, "event_type": event_type, "task_id": task_id,
                       "claimed_status": claimed_status, "listed_with": listed_with or f"{source}:DescribeTasks"})
    return CallbackRecord(
        id=new_record_id(now),
        dedup_key=_dedup_key(source, event_type, task_id, claimed_status, None),
        source=source,
        event_type=event_type,
        task_id=task_id,
        resolve_by=RESOLVE_BY_TASK_ID,
        session_id=None,
        session_context=None,
        claimed_status=claimed_status,
        body=body,
        received_at=now,
        origin=ORIGIN_SWEEPER,
    )
