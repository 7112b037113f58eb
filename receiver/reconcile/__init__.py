"""Reconciliation as pure functions: which Describe call, which checks, which verdict (the event: receiver.events).

Nothing here does I/O. The worker asks `describe_call()` what to call, makes
the call, and hands the answer to `judge()`, which says what to do with the
callback: forward an event, reject it with a reason, or look again later.

- `calls`: which Describe call a record needs (`describe_call`, `image_task_call`, `media_infos_call`);
- `event_types`: which callback event type fits which task type (`event_type_fits`), and back (`vod_event_type_for`);
- `verdicts`: the checks on an answer and what they decide (`check`, `judge`, `judge_file_event`).
"""

from receiver.reconcile.calls import describe_call, image_task_call, is_mps_image_task, media_infos_call
from receiver.reconcile.event_types import LIVE_STREAM_TASK_TYPE, event_type_fits, vod_event_type_for
from receiver.reconcile.verdicts import (
    EVENT_TYPE_MISMATCH,
    NOTIFY_CONFIG_MISMATCH,
    SESSION_MISMATCH,
    UNCONFIRMED,
    UNKNOWN_FILE,
    UNKNOWN_TASK,
    UNRECONCILABLE,
    Forward,
    LookAgain,
    Reject,
    Verdict,
    check,
    judge,
    judge_file_event,
    notify_url_matches,
    task_state,
)

__all__ = [
    "EVENT_TYPE_MISMATCH", "LIVE_STREAM_TASK_TYPE", "NOTIFY_CONFIG_MISMATCH", "SESSION_MISMATCH", "UNCONFIRMED",
    "UNKNOWN_FILE", "UNKNOWN_TASK", "UNRECONCILABLE", "Forward", "LookAgain", "Reject", "Verdict", "check",
    "describe_call", "event_type_fits", "image_task_call", "is_mps_image_task", "judge", "judge_file_event",
    "media_infos_call", "notify_url_matches", "task_state", "vod_event_type_for",
]
