"""Tasks rendered in each product's answer and callback shapes, with the seeds' fields, types and nulls."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from emulator.media import MediaFile, UploadSession, category
from emulator.tasks import FINISH, PROCESSING, WAITING, Task

NOTIFY_DEFAULTS: dict[str, Any] = {
    "NotifyType": "", "NotifyMode": "", "NotifyUrl": "", "CmqModel": "", "CmqRegion": "",
    "TopicName": "", "QueueName": "", "AwsSQS": None, "NotifyKey": "",
}
VOD_NULL_TASKS = (
    "EditMediaTask", "ComposeMediaTask", "SplitMediaTask", "WechatMiniProgramPublishTask", "WechatPublishTask",
    "TranscodeTask", "SnapshotByTimeOffsetTask", "ConcatTask", "ClipTask", "CreateImageSpriteTask",
    "PullUploadTask", "RemoveWatermarkTask", "ReviewAudioVideoTask", "ReduceMediaBitrateTask",
    "ExtractTraceWatermarkTask", "DescribeFileAttributesTask", "RebuildMediaTask",
)
# MediaInfo members the emulator never has (no transcoding, snapshots, reviews...), in the SDK model's order.
MEDIA_INFO_NULLS = (
    "MetaData", "TranscodeInfo", "AnimatedGraphicsInfo", "SampleSnapshotInfo", "ImageSpriteInfo",
    "SnapshotByTimeOffsetInfo", "KeyFrameDescInfo", "AdaptiveDynamicStreamingInfo", "MiniProgramReviewInfo",
    "SubtitleInfo",
)
# The members the model does not mark "may be null" are empty objects instead.
MEDIA_INFO_EMPTIES: dict[str, Any] = {
    "ReviewInfo": None, "MPSAiMediaInfo": {"AiMediaList": []}, "ImageUnderstandingInfo": None,
    "KnowledgeBasesInfo": {"Bases": [], "KnowledgeAnalysisInfos": [], "KnowledgeBaseDetails": []},
    "FaceRecognitionInfo": {"FaceRecognitionTasks": []},
}
AMS_STATUS = {WAITING: "PENDING", PROCESSING: "RUNNING", FINISH: "FINISH"}


def iso(ts: float | None, millis: bool = False) -> str:
    """Tencent's ISO 8601 UTC times; an unset time is the empty string."""
    if ts is None:
        return ""
    moment = datetime.fromtimestamp(ts, UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def notify_config(task: Task) -> dict[str, Any] | None:
    return None if task.notify is None else {**NOTIFY_DEFAULTS, **task.notify}


# --- MPS ---------------------------------------------------------------------


def mps_workflow_task(task: Task) -> dict[str, Any]:
    return {
        "TaskId": task.task_id, "Status": task.status, "ErrCode": task.err_code, "Message": task.message,
        "InputInfo": task.params.get("InputInfo"), "MetaData": None, "MediaProcessResultSet": [],
        "AiContentReviewResultSet": [], "AiAnalysisResultSet": [], "AiRecognitionResultSet": [],
        "AiQualityControlTaskResult": None, "SmartSubtitlesTaskResult": [], "SmartEraseTaskResult": None,
        "AiDubbingTaskResult": None,
    }


def mps_batch_result(task: Task) -> dict[str, Any]:
    inputs = task.params.get("InputInfo")
    return {
        "InputInfos": inputs if isinstance(inputs, list) else [inputs] if inputs else [],
        "Metadatas": [], "SmartSubtitlesTaskResult": None,
    }


def mps_common(task: Task) -> dict[str, Any]:
    return {
        "TaskType": task.kind, "Status": task.status, "CreateTime": iso(task.created_at),
        "BeginProcessTime": iso(task.began_at), "FinishTime": iso(task.finished_at),
        "TaskNotifyConfig": notify_config(task), "TasksPriority": task.params.get("TasksPriority", 0),
        "SessionId": task.session_id, "SessionContext": task.session_context, "ExtInfo": "",
    }


def mps_live_stream_task(task: Task) -> dict[str, Any]:
    return {"TaskId": task.task_id, "Status": task.status, "ErrCode": task.err_code, "Message": task.message,
            "Url": task.params.get("Url", "")}


def mps_task_detail(task: Task) -> dict[str, Any]:
    live = task.kind == "LiveStreamProcessTask"
    return {
        **mps_common(task), "EditMediaTask": None, "WorkflowTask": None if live else mps_workflow_task(task),
        "LiveStreamProcessTask": mps_live_stream_task(task) if live else None, "ExtractBlindWatermarkTask": None,
        "ScheduleTask": None, "LiveScheduleTask": None,
    }


def mps_batch_task_detail(task: Task) -> dict[str, Any]:
    return {**mps_common(task), "TaskId": task.task_id, "BatchTaskResult": mps_batch_result(task)}


def mps_image_task_detail(task: Task) -> dict[str, Any]:
    done = task.status == FINISH
    result = {
        "Status": ("FAIL" if task.fail else "SUCCESS") if done else task.status,
        "ErrMsg": task.message, "Message": task.message or ("SUCCESS" if done else ""),
        "Output": None, "Progress": 100 if done else 0,
    }
    return {
        "TaskType": "WorkflowTask", "Status": task.status, "ErrCode": task.err_code, "ErrMsg": task.message,
        "Message": task.message, "ImageProcessTaskResultSet": [result], "CreateTime": iso(task.created_at),
        "FinishTime": iso(task.finished_at), "Definition": task.params.get("Definition"),
        "ImageTask": task.params.get("ImageTask"), "InputInfo": task.params.get("InputInfo"),
    }


def mps_task_simple(task: Task) -> dict[str, Any]:
    return {
        "TaskId": task.task_id, "TaskType": task.kind if task.kind != "ImageTask" else "WorkflowTask",
        "CreateTime": iso(task.created_at), "BeginProcessTime": iso(task.began_at),
        "FinishTime": iso(task.finished_at), "SubTaskTypes": [],
    }


def mps_callback(task: Task) -> dict[str, Any]:
    """An MPS notification as ``ParseNotification`` describes it (before ``Timestamp``/``Sign``)."""
    if task.kind == "BatchTask":
        event = {"TaskId": task.task_id, "Status": task.status, "ErrCode": task.err_code,
                 "Message": task.message, **mps_batch_result(task)}
        body: dict[str, Any] = {"EventType": "BatchTask", "BatchTaskEvent": event}
    else:
        body = {"EventType": "WorkflowTask", "WorkflowTaskEvent": mps_workflow_task(task)}
    return {**body, "SessionId": task.session_id, "SessionContext": task.session_context}


# --- VOD ---------------------------------------------------------------------


def vod_procedure_task(task: Task) -> dict[str, Any]:
    return {
        "TaskId": task.task_id, "Status": task.status, "ErrCode": task.err_code, "Message": task.message,
        "SessionContext": task.session_context, "SessionId": task.session_id, "Operator": "",
        "OperationType": "", "FileId": task.params.get("FileId", ""), "FileName": task.extra.get("FileName", ""),
        "FileUrl": task.extra.get("FileUrl", ""),
        "MetaData": None, "MediaProcessResultSet": [], "AiContentReviewResultSet": [],
        "AiRecognitionResultSet": [], "AiAnalysisResultSet": [],
        "TasksPriority": task.params.get("TasksPriority", 0), "TasksNotifyMode": task.params.get("TasksNotifyMode", ""),
    }


def vod_task_detail(task: Task) -> dict[str, Any]:
    return {
        "TaskType": "Procedure", "Status": task.status, "CreateTime": iso(task.created_at),
        "BeginProcessTime": iso(task.began_at), "FinishTime": iso(task.finished_at),
        "ProcedureTask": vod_procedure_task(task), **dict.fromkeys(VOD_NULL_TASKS),
    }


def vod_task_simple(task: Task) -> dict[str, Any]:
    return {
        "TaskId": task.task_id, "Status": task.status, "FileId": task.params.get("FileId", ""),
        "TaskType": "Procedure", "CreateTime": iso(task.created_at), "BeginProcessTime": iso(task.began_at),
        "FinishTime": iso(task.finished_at), "SessionId": task.session_id, "SessionContext": task.session_context,
    }


def vod_callback(task: Task) -> dict[str, Any]:
    """A VOD ``ProcedureStateChanged`` event (before ``T``/``Sign``)."""
    return {
        "EventHandle": task.task_id.rsplit("-", 1)[-1] + f"{int(task.finished_at or task.began_at or 0)}",
        "EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": vod_procedure_task(task),
    }


# --- VOD media files -----------------------------------------------------------


def vod_apply_upload(session: UploadSession, certificate: dict[str, Any]) -> dict[str, Any]:
    return {
        "StorageBucket": session.bucket, "StorageRegion": session.region, "VodSessionKey": session.key,
        "MediaStoragePath": session.media_path, "CoverStoragePath": session.cover_path, "TempCertificate": certificate,
    }


def vod_media_basic_info(media: MediaFile) -> dict[str, Any]:
    """``MediaBasicInfo``: the same object in DescribeMediaInfos and in the NewFileUpload event."""
    return {
        "Name": media.name, "Description": "", "CreateTime": iso(media.created_at),
        "UpdateTime": iso(media.created_at), "ExpireTime": media.expire_time, "ClassId": media.class_id,
        # The emulator keeps no category tree, so a ClassId has no name or path.
        "ClassName": "", "ClassPath": "", "CoverUrl": media.cover_url, "Type": media.media_type,
        "MediaUrl": media.media_url,
        "SourceInfo": {"SourceType": "Upload", "SourceContext": media.source_context, "LiveRecordInfo": None,
                       "TrtcRecordInfo": None, "WebPageRecordInfo": None},
        "StorageRegion": media.region, "StoragePath": media.storage_path, "TagSet": [], "Vid": "",
        "Category": category(media.media_type), "Status": "Normal", "StorageClass": "STANDARD",
    }


def vod_media_info(media: MediaFile, basic: bool) -> dict[str, Any]:
    """One ``MediaInfo`` of DescribeMediaInfos; `basic` is whether the Filters asked for basicInfo."""
    return {
        "BasicInfo": vod_media_basic_info(media) if basic else None, **dict.fromkeys(MEDIA_INFO_NULLS),
        "FileId": media.file_id, **copy.deepcopy(MEDIA_INFO_EMPTIES),
    }


def vod_file_upload_event(media: MediaFile, handle: str) -> dict[str, Any]:
    """A VOD ``NewFileUpload`` event (before ``T``/``Sign``), ``FileUploadEvent`` shaped as ``FileUploadTask``."""
    upload = {"FileId": media.file_id, "MediaBasicInfo": vod_media_basic_info(media),
              "ProcedureTaskId": media.procedure_task_id, "ReviewAudioVideoTaskId": "", "MetaData": None}
    return {"EventHandle": handle, "EventType": "NewFileUpload", "FileUploadEvent": upload}


def vod_file_deleted_event(file_id: str, parts: list[dict[str, Any]], handle: str) -> dict[str, Any]:
    """A VOD ``FileDeleted`` event, ``FileDeleteEvent`` shaped as ``FileDeleteTask``; no parts is the whole file."""
    deleted = {"FileIdSet": [file_id], "FileDeleteResultInfo": [{"FileId": file_id, "DeleteParts": parts}]}
    return {"EventHandle": handle, "EventType": "FileDeleted", "FileDeleteEvent": deleted}


# --- AMS ---------------------------------------------------------------------


def ams_status(task: Task) -> str:
    if task.status == FINISH and task.fail:
        return "ERROR"
    return AMS_STATUS[task.status]


def _ams_common(task: Task) -> dict[str, Any]:
    done = task.status == FINISH and not task.fail
    source = task.extra.get("Input") or {}
    return {
        "TaskId": task.task_id, "DataId": task.extra.get("DataId", ""), "BizType": task.extra.get("BizType", ""),
        "Name": task.extra.get("Name", ""), "Status": ams_status(task), "Type": task.extra.get("Type", "AUDIO"),
        "Suggestion": "Pass" if done else "", "Labels": [],
        "InputInfo": {"Type": source.get("Type", "URL"), "Url": source.get("Url", ""),
                      "BucketInfo": source.get("BucketInfo")},
        "MediaInfo": {"Codecs": "", "Duration": 0, "Width": 0, "Height": 0, "Thumbnail": ""},
        "CreatedAt": iso(task.created_at, millis=True),
        "UpdatedAt": iso(task.finished_at or task.began_at or task.created_at, millis=True),
    }


def ams_task_detail(task: Task) -> dict[str, Any]:
    return {
        **_ams_common(task), "AudioText": "", "AudioSegments": [],
        "ErrorType": "EMULATED_FAILURE" if task.fail and task.status == FINISH else "",
        "ErrorDescription": task.message, "Label": "Normal" if task.status == FINISH and not task.fail else "",
        "HitSnippetInfos": [],
    }


def ams_task_data(task: Task) -> dict[str, Any]:
    return _ams_common(task)


def ams_callback(task: Task) -> dict[str, Any]:
    """The AMS moderation result callback: the task's data plus the detail's error fields."""
    detail = ams_task_detail(task)
    return {**_ams_common(task), "ErrorType": detail["ErrorType"], "ErrorDescription": detail["ErrorDescription"]}
