"""Which callback event type fits which task type (SPEC 6), and the event a VOD task type calls back with."""

from __future__ import annotations

from receiver.records import is_live_stream_event_type
from schemas.callbacks import VOD_TASK_EVENT_FIELDS

# Event names whose task type is not the event name without its suffix.
_VOD_EVENT_TASK_ALIASES = {
    "pull": {"pullupload"},
    "createsnapshotbytimeoffset": {"snapshotbytimeoffset"},
    "createimagesprite": {"imagesprite"},
}
LIVE_STREAM_TASK_TYPE = "LiveStreamProcessTask"
_MPS_EVENT_TASK_TYPES = {
    "WorkflowTask": {"WorkflowTask"},
    "EditMediaTask": {"EditMediaTask"},
    "ScheduleTask": {"ScheduleTask"},
    "BatchTask": {"BatchTask"},
    "ExtractBlindWatermark": {"ExtractBlindWatermark", "ExtractBlindWatermarkTask"},
}


def _stem(name: str, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)].lower()
    return name.lower()


def event_type_fits(source: str, event_type: str, task_type: str | None) -> bool:
    """Whether a callback of `event_type` can be about a task of `task_type` (SPEC 6).

    A VOD `TranscodeComplete` for a `Procedure` task does not: its event is
    named after its task (`ProcedureStateChanged`, `EditMediaComplete`,
    `AigcImageTaskComplete` for `AigcImageTask`). An answer without a task type
    says nothing against the callback.
    """
    if task_type is None or source == "ams":
        return True
    if is_live_stream_event_type(source, event_type):  # a live-stream notification's NotificationType
        return task_type == LIVE_STREAM_TASK_TYPE
    if source == "mps":
        return task_type in _MPS_EVENT_TASK_TYPES[event_type]
    task = _stem(task_type, ("Task",))
    # A task type we know the event of takes that event only (not a look-alike such as "ProcedureComplete");
    # a task type newer than our table takes the event named after it.
    known = {known_event for known_event in VOD_TASK_EVENT_FIELDS if _names_task(known_event, task)}
    return event_type in known if known else _names_task(event_type, task)


def vod_event_type_for(task_type: str) -> str:
    """The event a VOD task of `task_type` calls back with (a task newer than our table: `<TaskType>Complete`)."""
    task = _stem(task_type, ("Task",))
    known = sorted(event for event in VOD_TASK_EVENT_FIELDS if _names_task(event, task))
    return known[0] if known else f"{task_type}Complete"


def _names_task(vod_event_type: str, task_stem: str) -> bool:
    event = _stem(vod_event_type, ("StateChanged", "TaskComplete", "Complete"))
    return task_stem == event or task_stem in _VOD_EVENT_TASK_ALIASES.get(event, set())
