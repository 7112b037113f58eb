"""What an authoritative answer decides about a callback: the SPEC 6 checks, then the verdict.

`judge()` reads a Describe*TaskDetail answer, runs the checks (`check()`)
and says forward (with the event, receiver.events), reject (with a reason)
or look again later; `judge_file_event()` does the same for a VOD file event
from a DescribeMediaInfos answer. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from receiver.events import (
    FINAL_STATUSES,
    build_event,
    event_id,
    event_without_task,
    iso,
    redact,
)
from receiver.reconcile.event_types import event_type_fits
from receiver.records import (
    ORIGIN_SWEEPER,
    CallbackRecord,
    is_live_stream_record,
    live_stream_result,
)
from receiver.tencentcloud import DescribeCall
from schemas.describe import TaskState, task_state_of

# Reasons a callback is rejected (SPEC 6), kept with it and counted.
UNKNOWN_TASK = "unknown_task"
NOTIFY_CONFIG_MISMATCH = "notify_config_mismatch"
SESSION_MISMATCH = "session_mismatch"
EVENT_TYPE_MISMATCH = "event_type_mismatch"
UNKNOWN_FILE = "unknown_file"  # NewFileUpload: DescribeMediaInfos does not know the file
UNCONFIRMED = "unconfirmed"  # FileDeleted: a file of the event still exists
UNRECONCILABLE = "unreconcilable"  # a VOD event with neither task nor file to ask about


@dataclass(frozen=True)
class Forward:
    event: dict[str, Any]
    # False when the event says another status than the callback claimed (the
    # task moved on, or never got there): a later copy is then reconciled afresh.
    confirmed: bool = True


@dataclass(frozen=True)
class Reject:
    reason: str
    detail: str


@dataclass(frozen=True)
class LookAgain:
    """The answer lags behind the callback (eventual consistency): ask again soon."""

    detail: str


Verdict = Forward | Reject | LookAgain


# --- reading an answer ---------------------------------------------------------------


def task_state(call: DescribeCall, answer: dict[str, Any]) -> TaskState:
    """Read one Describe answer into a TaskState with its schema (schemas/describe.py).

    Raises UnreadableAnswer for an answer that does not fit: the worker
    retries its record, then buries it with that error (SPEC 6).
    """
    return task_state_of(call.service, call.action, answer)


# --- checks ----------------------------------------------------------------------------


def notify_url_matches(notify_url: str, expected_url: str) -> bool:
    """Same scheme, host and path (query ignored: it carries the URL token)."""
    got, want = urlsplit(notify_url), urlsplit(expected_url)
    return (
        (got.scheme.lower(), got.netloc.lower(), got.path.rstrip("/"))
        == (want.scheme.lower(), want.netloc.lower(), want.path.rstrip("/"))
    )


def _same(a: str | None, b: str | None) -> bool:
    return (a or "") == (b or "")


def check(
    record: CallbackRecord, state: TaskState, receiver_url: str, call: DescribeCall | None = None
) -> Reject | None:
    """The SPEC 6 checks on the authoritative answer; the first failure rejects.

    A record of the sweeper has no callback session to compare, so only the
    notify configuration is checked: it is what says an MPS task is ours. An
    MPS media task the sweeper listed without a TaskNotifyConfig does not
    notify us, so it is not ours either.
    """
    config = state.notify_config
    swept = record.origin == ORIGIN_SWEEPER
    if (swept and config is None and record.source == "mps" and call is not None
            and call.action != "DescribeImageTaskDetail"):
        return Reject(NOTIFY_CONFIG_MISMATCH, "task has no TaskNotifyConfig")
    if isinstance(config, dict):
        expected = f"{receiver_url}/callbacks/{record.source}"
        if config.get("NotifyType") != "URL" or not notify_url_matches(config.get("NotifyUrl") or "", expected):
            return Reject(NOTIFY_CONFIG_MISMATCH, f"task notifies {config.get('NotifyType')!r} elsewhere")
    if state.knows_session and not swept:
        if not _same(record.session_id, state.session_id) or not _same(
            record.session_context, state.session_context
        ):
            return Reject(SESSION_MISMATCH, "SessionId or SessionContext differs from the task's own")
    if not event_type_fits(record.source, record.event_type, state.task_type):
        return Reject(EVENT_TYPE_MISMATCH, f"a {record.event_type!r} callback for a {state.task_type!r} task")
    return None


def judge(
    record: CallbackRecord,
    call: DescribeCall,
    answer: dict[str, Any],
    receiver_url: str,
    reconciled_at: float,
    patience_left: bool,
) -> Verdict:
    """What to do with a callback, given the authoritative answer about its task.

    `patience_left` says whether the callback is still young enough to wait
    for a lagging answer; past that, the answer's status is forwarded as is.
    """
    state = task_state(call, answer)
    rejected = check(record, state, receiver_url, call)
    if rejected:
        return rejected
    source = record.source
    claimed_final = record.claimed_status in FINAL_STATUSES[source]
    if claimed_final and state.status not in FINAL_STATUSES[source] and patience_left:
        return LookAgain(f"callback says {record.claimed_status}, Describe still says {state.status}")
    task_id = record.task_id or call.params["TaskId"]  # a BatchTask found through its SessionId
    event = build_event(record, source, record.event_type, task_id, call, answer, state, reconciled_at)
    if is_live_stream_record(record):
        # A live stream sends many notifications of one type while its task stays PROCESSING: each is
        # its own event, and a copy of one (same body but its signature) is the same event.
        event["event_id"] = event_id(source, record.event_type, task_id, record.dedup_key)
        event["notification"] = redact(live_stream_result(record))
    return Forward(event, confirmed=record.claimed_status in (None, state.status))


# --- VOD file events ---------------------------------------------------------------------


def judge_file_event(
    record: CallbackRecord,
    file_ids: list[str],
    found: dict[str, dict[str, Any]],
    missing: set[str],
    reconciled_at: float,
    patience_left: bool,
) -> Verdict:
    """A NewFileUpload needs its file in MediaInfoSet; a FileDeleted every file in NotExistFileIdSet.

    `found` maps the file ids DescribeMediaInfos returned to their MediaInfo,
    `missing` holds its NotExistFileIdSet; a file can take a moment to appear
    or to go, so both wait for the patience before rejecting.
    """
    call = DescribeCall("vod", "DescribeMediaInfos", {})
    if record.event_type == "NewFileUpload":
        [file_id] = file_ids
        info = found.get(file_id)
        if info is None:
            if patience_left:
                return LookAgain(f"file {file_id} is not known to DescribeMediaInfos yet")
            return Reject(UNKNOWN_FILE, f"DescribeMediaInfos does not know file {file_id}")
        detail: dict[str, Any] = redact(info)
        basic = info.get("BasicInfo") if isinstance(info.get("BasicInfo"), dict) else {}
        created_at = basic.get("CreateTime") or None
        subject = f"file:{file_id}"
    else:
        still_there = [file_id for file_id in file_ids if file_id not in missing]
        if still_there or not file_ids:
            if patience_left and file_ids:
                return LookAgain(f"{len(still_there)} file(s) of the event still exist")
            return Reject(UNCONFIRMED, f"{len(still_there)} of {len(file_ids)} file(s) still exist")
        detail = {"NotExistFileIdSet": list(file_ids)}
        created_at = None
        subject = "files:" + ",".join(sorted(file_ids))
    return Forward(event_without_task(record, subject, created_at=created_at, reconciled_at=iso(reconciled_at),
                                       reconciled_with=call.label, detail=detail))
