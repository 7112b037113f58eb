"""The API actions: each takes the request parameters and returns the ``Response`` payload.

Handlers are registered per ``(service, version, action)``; an unregistered
triple is ``InvalidAction``, as the real gateway answers.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from emulator import render
from emulator.errors import ApiError
from emulator.media import NEVER_EXPIRES, MediaFile, UploadSession, new_event_handle, new_file_id, new_session_key
from emulator.tasks import FAIL_MARKER, SILENT_MARKER, Task, new_task_id

if TYPE_CHECKING:
    from emulator.app import Emulator

MPS, VOD, AMS = ("mps", "2019-06-12"), ("vod", "2018-07-17"), ("ams", "2020-12-29")
Handler = Callable[["Emulator", dict[str, Any]], dict[str, Any]]
ACTIONS: dict[tuple[str, str, str], Handler] = {}


def served_actions() -> set[tuple[str, str]]:
    """(service, action) of every action the emulator answers, whatever the version."""
    return {(service, name) for service, _version, name in ACTIONS}


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


def _new_task(emu: Emulator, service: str, kind: str, params: dict[str, Any], task_id: str = "",
              **fields: Any) -> Task:
    """A task with the failure / silence markers of its request applied; `task_id` defaults to the kind's form."""
    text = json.dumps(params, ensure_ascii=False)
    task = Task(service=service, kind=kind, task_id=task_id or new_task_id(kind), params=params, created_at=time.time(),
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
    # Real image tasks come with either id form; in the WorkflowTask form only the kind (ImageTask) keeps
    # DescribeTaskDetail from finding them, as the real API does not.
    form = "WorkflowTask" if emu.faults.current().image_task_ids == "workflow" else "ImageTask"
    task = _new_task(emu, "mps", "ImageTask", params, task_id=new_task_id(form), notify=notify)
    return {"TaskId": task.task_id}


@action(MPS, "ProcessLiveStream")
def mps_process_live_stream(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    """A live-stream task: its notifications (emulator/livestream.py) go to its LiveStreamTaskNotifyConfig."""
    _string(params, "Url", required=True)
    if params.get("TaskNotifyConfig") is None:
        raise ApiError("MissingParameter", "The request is missing a required parameter `TaskNotifyConfig`.")
    return _start_mps_task(emu, "LiveStreamProcessTask", params)


@action(MPS, "DescribeTaskDetail")
def mps_describe_task_detail(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    task = _find(emu, "mps", params, ("WorkflowTask", "LiveStreamProcessTask"), "ResourceNotFound")
    return render.mps_task_detail(task)


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


def _file_fields(media: MediaFile | None) -> dict[str, Any]:
    """What a Procedure task shows of its file, when the FileId is one of the emulator's media files."""
    return {} if media is None else {"FileName": media.name, "FileUrl": media.media_url}


@action(VOD, "ProcessMedia")
def vod_process_media(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    if not params.get("FileId") and not params.get("Url"):
        raise ApiError("MissingParameter", "The request is missing a required parameter `FileId`.")
    mode = _string(params, "TasksNotifyMode") or "Finish"
    if mode not in ("Finish", "Change", "None"):
        raise ApiError("InvalidParameterValue.TasksNotifyMode", "TasksNotifyMode must be Finish, Change or None.")
    sub_app_id = _sub_app_id(params)
    session_id, context = _session(emu, "vod", params, sub_app_id)
    # Any FileId is accepted, uploaded or not, so tasks need no upload first; an uploaded one lends its name and URL.
    file_id = params.get("FileId")
    media = emu.media.get(sub_app_id, file_id) if isinstance(file_id, str) else None
    task = _new_task(emu, "vod", "Procedure", {**params, "TasksNotifyMode": mode}, session_id=session_id,
                     session_context=context, sub_app_id=sub_app_id, extra=_file_fields(media))
    return {"TaskId": task.task_id}


EVENT_SWITCHES = {"UploadMediaCompleteEventSwitch": "NewFileUpload", "DeleteMediaCompleteEventSwitch": "FileDeleted"}


def _event_switches(params: dict[str, Any]) -> dict[str, bool]:
    switches = {}
    for name, event_type in EVENT_SWITCHES.items():
        value = _string(params, name)
        if value not in ("", "ON", "OFF"):
            raise ApiError("InvalidParameterValue", f"`{name}` must be ON or OFF.")
        if value:
            switches[event_type] = value == "ON"
    return switches


@action(VOD, "ModifyEventConfig")
def vod_modify_event_config(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    """Where VOD pushes events, per application: the real way a VOD NotifyUrl is set."""
    emu.set_vod_event_config(_sub_app_id(params), _string(params, "Mode"), _string(params, "NotificationUrl"),
                             _string(params, "SignKey"), _event_switches(params))
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


# --- VOD media files -------------------------------------------------------------

DEFAULT_APP_ID = 1250000000  # stands for the account's own application in bucket names and URLs
DEFAULT_REGION = "ap-guangzhou"
CERTIFICATE_SECONDS = 3600
MAX_FILE_IDS = 20  # DescribeMediaInfos: "FileIds.N ... N from 0 to 19"
# DeleteMedia's documented codes (SDK client docs) hold ResourceNotFound for an unknown file, not a sub-code.
FILE_NOT_FOUND = "ResourceNotFound"
_FILE_TYPE = re.compile(r"[A-Za-z0-9]{1,16}")


def _file_type(params: dict[str, Any], name: str, required: bool = False) -> str:
    value = _string(params, name, required)
    if value and not _FILE_TYPE.fullmatch(value):
        raise ApiError(f"InvalidParameterValue.{name}", f"`{name}` must be a file extension such as mp4.")
    return value


def _expire_time(params: dict[str, Any]) -> str:
    value = _string(params, "ExpireTime")
    if not value:
        return NEVER_EXPIRES
    try:
        return render.iso(datetime.fromisoformat(value).timestamp())
    except ValueError as exc:
        raise ApiError("InvalidParameterValue.ExpireTime", "`ExpireTime` is not an ISO 8601 time.") from exc


def _class_id(params: dict[str, Any]) -> int:
    value = params.get("ClassId", 0) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError("InvalidParameter", "`ClassId` must be a non-negative integer.")
    return value


def _silent(emu: Emulator, params: dict[str, Any]) -> bool:
    """The no-callback marker, or the never_callback fault, silences file events as it silences tasks."""
    return SILENT_MARKER in json.dumps(params, ensure_ascii=False) or emu.faults.current().never_callback


def _certificate(now: float) -> dict[str, Any]:
    """Temporary COS credentials: nothing checks them, as the emulator has no bucket to PUT to."""
    return {"SecretId": "AKID" + secrets.token_hex(16), "SecretKey": secrets.token_hex(16),
            "Token": secrets.token_urlsafe(48), "ExpiredTime": int(now) + CERTIFICATE_SECONDS}


@action(VOD, "ApplyUpload")
def vod_apply_upload(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    sub_app_id = _sub_app_id(params)
    media_type, cover_type = _file_type(params, "MediaType", required=True), _file_type(params, "CoverType")
    # Refused here, as VOD refuses them, rather than at CommitUpload, which reads them again.
    _expire_time(params)
    _class_id(params)
    for name in ("MediaName", "Procedure", "StorageRegion", "SourceContext", "ExtInfo", "MediaStoragePath"):
        _string(params, name)
    if len(_string(params, "SessionContext")) > 1000:
        raise ApiError("InvalidParameterValue.SessionContextTooLong", "SessionContext is too long.")
    # Paths as VOD lays them out: the folder already names the FileId that CommitUpload will return.
    file_id, app = new_file_id(), sub_app_id or DEFAULT_APP_ID
    folder = f"/{secrets.token_hex(4)}{file_id}"
    session = UploadSession(
        key=new_session_key(), sub_app_id=sub_app_id, file_id=file_id, created_at=time.time(),
        bucket=f"{secrets.token_hex(4)}vodgzp{app}", region=_string(params, "StorageRegion") or DEFAULT_REGION,
        media_path=_string(params, "MediaStoragePath") or f"{folder}/f0.{media_type}",
        cover_path=f"{folder}/{file_id}.{cover_type}" if cover_type else "", params=dict(params))
    emu.media.open_session(session)
    return render.vod_apply_upload(session, _certificate(session.created_at))


def _start_procedure(emu: Emulator, session: UploadSession, media: MediaFile) -> str:
    """The task flow ApplyUpload's Procedure names, started on the new file, as VOD starts it after an upload."""
    params = {**session.params, "FileId": media.file_id, "TasksNotifyMode": "Finish"}
    task = _new_task(emu, "vod", "Procedure", params, session_context=_string(params, "SessionContext"),
                     sub_app_id=session.sub_app_id, extra=_file_fields(media))
    return task.task_id


def _committed_file(emu: Emulator, session: UploadSession) -> MediaFile:
    params = session.params
    cover_type = _string(params, "CoverType")
    base = f"https://{session.sub_app_id or DEFAULT_APP_ID}.vod2.myqcloud.com/{session.bucket}"
    media = MediaFile(
        file_id=session.file_id, sub_app_id=session.sub_app_id, created_at=time.time(),
        media_type=_string(params, "MediaType"), name=_string(params, "MediaName"),
        media_url=base + session.media_path, cover_url=base + session.cover_path if cover_type else "",
        region=session.region, storage_path=_string(params, "MediaStoragePath"), class_id=_class_id(params),
        expire_time=_expire_time(params), source_context=_string(params, "SourceContext"))
    if _string(params, "Procedure"):
        media = dataclasses.replace(media, procedure_task_id=_start_procedure(emu, session, media))
    return media


@action(VOD, "CommitUpload")
def vod_commit_upload(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    sub_app_id = _sub_app_id(params)
    session = emu.media.take_session(_string(params, "VodSessionKey", required=True), sub_app_id)
    if session is None:
        raise ApiError("InvalidParameterValue.VodSessionKey", "Incorrect parameter value: VOD session key.")
    media = _committed_file(emu, session)
    # Stored before the event is queued: a receiver that answers the event with DescribeMediaInfos finds the file.
    emu.media.add(media)
    emu.send_vod_file_event(sub_app_id, media.file_id, render.vod_file_upload_event(media, new_event_handle()),
                            _silent(emu, session.params))
    return {"FileId": media.file_id, "MediaUrl": media.media_url, "CoverUrl": media.cover_url}


def _delete_parts(params: dict[str, Any]) -> list[dict[str, Any]]:
    parts = params.get("DeleteParts") or []
    if not isinstance(parts, list) or not all(isinstance(p, dict) and isinstance(p.get("Type"), str) and p["Type"]
                                              for p in parts):
        raise ApiError("InvalidParameter", "`DeleteParts` must be a list of {Type, Definition} objects.")
    checked = []
    for part in parts:
        definition = part.get("Definition", 0) or 0
        if isinstance(definition, bool) or not isinstance(definition, int):
            raise ApiError("InvalidParameter", "`DeleteParts.N.Definition` must be an integer.")
        checked.append({"Type": part["Type"], "Definition": definition})
    return checked


@action(VOD, "DeleteMedia")
def vod_delete_media(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    sub_app_id, file_id = _sub_app_id(params), _string(params, "FileId", required=True)
    parts = _delete_parts(params)
    # DeleteParts deletes some of the file's outputs and keeps the media; none deletes the media itself.
    media = emu.media.get(sub_app_id, file_id) if parts else emu.media.remove(sub_app_id, file_id)
    if media is None:
        raise ApiError(FILE_NOT_FOUND, f"The media file {file_id!r} does not exist.")
    emu.send_vod_file_event(sub_app_id, file_id, render.vod_file_deleted_event(file_id, parts, new_event_handle()),
                            _silent(emu, params))
    return {}


def _file_ids(params: dict[str, Any]) -> list[str]:
    file_ids = params.get("FileIds")
    if file_ids is None or file_ids == []:
        raise ApiError("InvalidParameterValue.FileIdsEmpty", "`FileIds` is empty.")
    if (not isinstance(file_ids, list) or len(file_ids) > MAX_FILE_IDS
            or not all(isinstance(f, str) and f for f in file_ids)):
        raise ApiError("InvalidParameterValue.FileIds", f"`FileIds` must hold 1 to {MAX_FILE_IDS} file ids.")
    return list(dict.fromkeys(file_ids))  # an id asked twice is answered once


def _wants_basic_info(params: dict[str, Any]) -> bool:
    """No Filters is all the information; otherwise only basicInfo matters, as nothing else is ever known."""
    filters = params.get("Filters") or []
    if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
        raise ApiError("InvalidParameter", "`Filters` must be a list of strings.")
    return not filters or "basicInfo" in filters


@action(VOD, "DescribeMediaInfos")
def vod_describe_media_infos(emu: Emulator, params: dict[str, Any]) -> dict[str, Any]:
    sub_app_id, file_ids, basic = _sub_app_id(params), _file_ids(params), _wants_basic_info(params)
    found = {f: m for f in file_ids if (m := emu.media.get(sub_app_id, f)) is not None}
    return {"MediaInfoSet": [render.vod_media_info(m, basic) for m in found.values()],
            "NotExistFileIdSet": [f for f in file_ids if f not in found]}


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
