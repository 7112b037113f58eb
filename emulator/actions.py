"""The API actions: each takes the request parameters and returns the ``Response`` payload.

Handlers are registered per ``(service, version, action)``; an unregistered
triple is ``InvalidAction``, as the real gateway answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from emulator import render
from emulator.errors import ApiError
from emulator.tasks import FAIL_MARKER, SILENT_MARKER, Task, new_task_id

if TYPE_CHECKING:
    from emulator.app import Emulator

MPS, VOD, AMS = ("mps", "2019-06-12"), ("vod", "2018-07-17"), ("ams", "2020-12-29")
Handler = Callable[["Emulator", dict[str, Any]], dict[str, Any]]
ACTIONS: dict[tuple[str, str, str], Handler] = {}


def action(product: tuple[str, str], name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ACTIONS[(*product, name)] = handler
        return handler
    return register


# --- shared helpers ------------------------------------------------------------


def _string(params: dict[str, Any], name: str, required: bool = False) -> str:
    value = params.get(name)
    if value is None:
        if required:
            raise ApiError("MissingParameter", f"The request is missing a required parameter `{name}`.")
        return ""
    if not isinstance(value, str):
        raise ApiError("InvalidParameter", f"`{name}` must be a string.")
    return value


def _limit(params: dict[str, Any], default: int, maximum: int) -> int:
    value = params.get("Limit", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ApiError("InvalidParameterValue.Limit", f"`Limit` must be an integer between 0 and {maximum}.")
    return value or default


def _time(value: Any, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError as exc:
        raise ApiError("InvalidParameterValue", f"`{name}` is not an ISO 8601 time.") from exc


def _in_range(ts: float, start: float | None, end: float | None) -> bool:
    return (start is None or ts >= start) and (end is None or ts <= end)


def _page(tasks: list[Task], token: str, limit: int) -> tuple[list[Task], str]:
    """Scroll pagination: the token is the id of the last task of the previous page."""
    start = 0
    if token:
        ids = [t.task_id for t in tasks]
        if token not in ids:
            raise ApiError("InvalidParameterValue.ScrollToken", "The scroll token is invalid.")
        start = ids.index(token) + 1
    page = tasks[start:start + limit]
    more = start + limit < len(tasks)
    return page, page[-1].task_id if page and more else ""


def _session(emu: Emulator, service: str, params: dict[str, Any], sub_app_id: int = 0) -> tuple[str, str]:
    session_id = _string(params, "SessionId")
    context = _string(params, "SessionContext")
    if len(session_id) > 50:
        raise ApiError("InvalidParameterValue.SessionIdTooLong", "SessionId is too long.")
    if len(context) > 1000:
        raise ApiError("InvalidParameterValue.SessionContextTooLong", "SessionContext is too long.")
    if not emu.store.claim_session(service, sub_app_id, session_id, time.time()):
        raise ApiError("InvalidParameterValue.SessionId",
                       "The deduplication ID already exists. The request is removed due to duplication.")
    return session_id, context


def _new_task(emu: Emulator, service: str, kind: str, params: dict[str, Any], **fields: Any) -> Task:
    """A task with the failure / silence markers of its request applied."""
    text = json.dumps(params, ensure_ascii=False)
    task = Task(service=service, kind=kind, task_id=new_task_id(kind), params=params, created_at=time.time(),
                fail=FAIL_MARKER in text, silent=SILENT_MARKER in text or emu.faults.current().never_callback,
                **fields)
    return emu.store.add(task)


def _notify_config(params: dict[str, Any]) -> dict[str, Any] | None:
    config = params.get("TaskNotifyConfig")
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ApiError("InvalidParameter", "`TaskNotifyConfig` must be an object.")
    return dict(config)


def _find(emu: Emulator, service: str, params: dict[str, Any], kinds: tuple[str, ...], code: str) -> Task:
    task_id = _string(params, "TaskId", required=True)
    task = emu.store.get(service, task_id)
    if task is None or task.kind not in kinds:
        raise ApiError(code, f"The task {task_id!r} does not exist.")
    return task


# --- MPS -------------------------------------------------------------------------


def _start_mps_task(emu: Emulator, task_type: str, params: dict[str, Any]) -> dict[str, Any]:
    """A media task notified through its TaskNotifyConfig, with SessionId dedup."""
    notify = _notify_config(params)
    session_id, context = _session(emu, "mps", params)
    task = _new_task(emu, "mps", task_type, params, notify=notify, session_id=session_id, session_context=context)
    return {"TaskId": task.task_id}


@action(MPS, "ProcessMedia")
def mps_process_media(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("InputInfo") is None and not params.get("ScheduleId"):
        raise ApiError("MissingParameter", "The request is missing a required parameter `InputInfo`.")
    return _start_mps_task(emu, "WorkflowTask", params)


@action(MPS, "BatchProcessMedia")
def mps_batch_process_media(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    if not params.get("InputInfo"):
        raise ApiError("MissingParameter", "The request is missing a required parameter `InputInfo`.")
    return _start_mps_task(emu, "BatchTask", params)


@action(MPS, "ProcessImage")
def mps_process_image(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("InputInfo") is None:
        raise ApiError("MissingParameter", "The request is missing a required parameter `InputInfo`.")
    notify = None
    if emu.config.image_notify_url:
        notify = {"NotifyType": "URL", "NotifyMode": "Finish", "NotifyUrl": emu.config.image_notify_url,
                  "NotifyKey": emu.config.image_notify_key}
    task = _new_task(emu, "mps", "ImageTask", params, notify=notify)
    return {"TaskId": task.task_id}


@action(MPS, "DescribeTaskDetail")
def mps_describe_task_detail(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    return render.mps_task_detail(_find(emu, "mps", params, ("WorkflowTask",), "ResourceNotFound"))


@action(MPS, "DescribeBatchTaskDetail")
def mps_describe_batch_task_detail(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    return render.mps_batch_task_detail(_find(emu, "mps", params, ("BatchTask",), "ResourceNotFound"))


@action(MPS, "DescribeImageTaskDetail")
def mps_describe_image_task_detail(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    return render.mps_image_task_detail(_find(emu, "mps", params, ("ImageTask",), "ResourceNotFound"))


@action(MPS, "DescribeTasks")
def mps_describe_tasks(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    status = _string(params, "Status")
    start, end = _time(params.get("StartTime"), "StartTime"), _time(params.get("EndTime"), "EndTime")
    tasks = [t for t in emu.store.list("mps") if (not status or t.status == status)
             and _in_range(t.created_at, start, end)]
    page, token = _page(tasks, _string(params, "ScrollToken"), _limit(params, 10, 100))
    return {"TaskSet": [render.mps_task_simple(t) for t in page], "ScrollToken": token, "TotalCount": len(tasks)}


# --- VOD -------------------------------------------------------------------------


def _sub_app_id(params: dict[str, Any]) -> int:
    value = params.get("SubAppId", 0) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError("InvalidParameterValue.SubAppId", "Incorrect parameter value: application id.")
    return value


@action(VOD, "ProcessMedia")
def vod_process_media(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    if not params.get("FileId") and not params.get("Url"):
        raise ApiError("MissingParameter", "The request is missing a required parameter `FileId`.")
    mode = _string(params, "TasksNotifyMode") or "Finish"
    if mode not in ("Finish", "Change", "None"):
        raise ApiError("InvalidParameterValue.TasksNotifyMode", "TasksNotifyMode must be Finish, Change or None.")
    sub_app_id = _sub_app_id(params)
    session_id, context = _session(emu, "vod", params, sub_app_id)
    task = _new_task(emu, "vod", "Procedure", {**params, "TasksNotifyMode": mode}, session_id=session_id,
                     session_context=context, sub_app_id=sub_app_id)
    return {"TaskId": task.task_id}


@action(VOD, "ModifyEventConfig")
def vod_modify_event_config(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    """Where VOD pushes events, per application: the real way a VOD NotifyUrl is set."""
    emu.set_vod_event_config(_sub_app_id(params), _string(params, "Mode"), _string(params, "NotificationUrl"),
                             _string(params, "SignKey"))
    return {}


@action(VOD, "DescribeTaskDetail")
def vod_describe_task_detail(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    task = _find(emu, "vod", params, ("Procedure",), "InvalidParameterValue.TaskId")
    if task.sub_app_id != _sub_app_id(params):
        raise ApiError("InvalidParameterValue.TaskId", "The task ID does not exist.")
    return render.vod_task_detail(task)


@action(VOD, "DescribeTasks")
def vod_describe_tasks(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    sub_app_id, status, file_id = _sub_app_id(params), _string(params, "Status"), _string(params, "FileId")
    created = params.get("CreateTime") or {}
    finished = params.get("FinishTime") or {}
    c_start, c_end = _time(created.get("After"), "CreateTime.After"), _time(created.get("Before"), "CreateTime.Before")
    f_start, f_end = _time(finished.get("After"), "FinishTime.After"), _time(finished.get("Before"),
                                                                              "FinishTime.Before")
    tasks = [
        t for t in emu.store.list("vod") if t.sub_app_id == sub_app_id and (not status or t.status == status)
        and (not file_id or t.params.get("FileId") == file_id) and _in_range(t.created_at, c_start, c_end)
        and (not finished or (t.finished_at is not None and _in_range(t.finished_at, f_start, f_end)))
    ]
    if (params.get("Sort") or {}).get("Order") == "Asc":
        tasks.reverse()
    page, token = _page(tasks, _string(params, "ScrollToken"), _limit(params, 10, 100))
    return {"TaskSet": [render.vod_task_simple(t) for t in page], "ScrollToken": token}


# --- AMS -------------------------------------------------------------------------


@action(AMS, "CreateAudioModerationTask")
def ams_create_audio_moderation_task(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    inputs = params.get("Tasks")
    if not isinstance(inputs, list) or not inputs or len(inputs) > 10:
        raise ApiError("InvalidParameterValue", "`Tasks` must hold between 1 and 10 tasks.")
    kind = _string(params, "Type") or "AUDIO"
    if kind not in ("AUDIO", "LIVE_AUDIO"):
        raise ApiError("InvalidParameterValue", "`Type` must be AUDIO or LIVE_AUDIO.")
    shared = {"BizType": _string(params, "BizType"), "Type": kind, "Seed": _string(params, "Seed"),
              "CallbackUrl": _string(params, "CallbackUrl")}
    results = []
    for item in inputs:
        item = item if isinstance(item, dict) else {}
        extra = {**shared, "DataId": item.get("DataId") or "", "Name": item.get("Name") or "",
                 "Input": item.get("Input") or {}}
        task = _new_task(emu, "ams", "AudioModeration", {**params, "Tasks": [item]}, extra=extra)
        results.append({"DataId": extra["DataId"], "TaskId": task.task_id, "Code": "OK", "Message": ""})
    return {"Results": results}


@action(AMS, "DescribeTaskDetail")
def ams_describe_task_detail(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    return render.ams_task_detail(_find(emu, "ams", params, ("AudioModeration",), "ResourceNotFound"))


@action(AMS, "DescribeTasks")
def ams_describe_tasks(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    flt = params.get("Filter") or {}
    start = _time(params.get("StartTime"), "StartTime")
    start = time.time() - 3 * 24 * 3600 if start is None else start
    end = _time(params.get("EndTime"), "EndTime")

    def matches(task: Task) -> bool:
        data = render.ams_task_data(task)
        return ((not flt.get("BizType") or data["BizType"] == flt["BizType"])
                and (not flt.get("Type") or data["Type"] == flt["Type"])
                and (not flt.get("Suggestion") or data["Suggestion"] == flt["Suggestion"])
                and (not flt.get("TaskStatus") or data["Status"] == flt["TaskStatus"])
                and _in_range(task.created_at, start, end))

    tasks = [t for t in emu.store.list("ams") if matches(t)]
    page, token = _page(tasks, _string(params, "PageToken"), _limit(params, 10, 100))
    return {"Total": str(len(tasks)), "Data": [render.ams_task_data(t) for t in page], "PageToken": token}
