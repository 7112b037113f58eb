"""Marshmallow schemas of the three callback formats (SPEC 3 and 5).

Every schema keeps unknown fields (Tencent adds fields often) and types the
fields the product reads. A failed load names the offending field in
`ValidationError.messages`, which becomes the ``fields`` of the 400 answer.

Field names and shapes follow the official SDK models:
MPS ``ParseNotificationResponse`` (2019-06-12), VOD ``EventContent``
(2018-07-17) and AMS ``TaskData`` / ``DescribeTaskDetailResponse`` (2020-12-29).
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, pre_load, validate, validates_schema

SESSION_ID_MAX = 50
SESSION_CONTEXT_MAX = 1000


class OpenSchema(Schema):
    """Keeps fields it does not declare."""

    class Meta:
        unknown = INCLUDE


def _optional_string(**kwargs) -> fields.String:
    return fields.String(allow_none=True, load_default=None, **kwargs)


def _session_fields() -> dict[str, fields.Field]:
    return {
        "SessionId": _optional_string(validate=validate.Length(max=SESSION_ID_MAX)),
        "SessionContext": _optional_string(
            validate=validate.Length(max=SESSION_CONTEXT_MAX)
        ),
    }


class TaskStateSchema(OpenSchema):
    """What every task-carrying event object has: its id and where it stands."""

    TaskId = fields.String(required=True, validate=validate.Length(min=1, max=256))
    Status = _optional_string()
    ErrCode = fields.Integer(allow_none=True)
    Message = _optional_string()


# --- MPS ParseNotification ---------------------------------------------------


class MpsWorkflowTaskSchema(TaskStateSchema):
    InputInfo = fields.Dict(allow_none=True)
    MetaData = fields.Dict(allow_none=True)
    MediaProcessResultSet = fields.List(fields.Dict(), allow_none=True)
    AiContentReviewResultSet = fields.List(fields.Dict(), allow_none=True)
    AiAnalysisResultSet = fields.List(fields.Dict(), allow_none=True)
    AiRecognitionResultSet = fields.List(fields.Dict(), allow_none=True)
    AiQualityControlTaskResult = fields.Dict(allow_none=True)
    SmartSubtitlesTaskResult = fields.List(fields.Dict(), allow_none=True)


class MpsEditMediaTaskSchema(TaskStateSchema):
    Input = fields.Dict(allow_none=True)
    Output = fields.Dict(allow_none=True)


class MpsScheduleTaskSchema(TaskStateSchema):
    InputInfo = fields.Dict(allow_none=True)
    MetaData = fields.Dict(allow_none=True)
    ActivityResultSet = fields.List(fields.Dict(), allow_none=True)


class MpsBatchSubTaskResultSchema(OpenSchema):
    """``BatchSubTaskResult``: the SDK model has no TaskId; a body may still carry one."""

    TaskId = _optional_string()
    InputInfos = fields.List(fields.Dict(), allow_none=True)
    Metadatas = fields.List(fields.Dict(), allow_none=True)
    SmartSubtitlesTaskResult = fields.Dict(allow_none=True)


class MpsExtractBlindWatermarkTaskSchema(TaskStateSchema):
    InputInfo = fields.Dict(allow_none=True)
    Type = _optional_string()
    IsDetected = fields.Boolean(allow_none=True)
    Result = _optional_string()
    ExtractBlindWatermarkConfig = fields.Dict(allow_none=True)


# EventType -> the field holding its event object.
MPS_EVENT_FIELDS: dict[str, str] = {
    "WorkflowTask": "WorkflowTaskEvent",
    "EditMediaTask": "EditMediaTaskEvent",
    "ScheduleTask": "ScheduleTaskEvent",
    "BatchTask": "BatchTaskEvent",
    "ExtractBlindWatermark": "ExtractBlindWatermarkTask",
}


class MpsNotificationSchema(OpenSchema):
    EventType = fields.String(required=True, validate=validate.OneOf(MPS_EVENT_FIELDS))
    WorkflowTaskEvent = fields.Nested(MpsWorkflowTaskSchema, allow_none=True)
    EditMediaTaskEvent = fields.Nested(MpsEditMediaTaskSchema, allow_none=True)
    ScheduleTaskEvent = fields.Nested(MpsScheduleTaskSchema, allow_none=True)
    BatchTaskEvent = fields.Nested(MpsBatchSubTaskResultSchema, allow_none=True)
    ExtractBlindWatermarkTask = fields.Nested(
        MpsExtractBlindWatermarkTaskSchema, allow_none=True
    )
    TaskId = _optional_string()
    Timestamp = fields.Integer(allow_none=True)
    Sign = _optional_string()
    locals().update(_session_fields())

    @validates_schema
    def _event_object_present(self, data: dict, **kwargs) -> None:
        event_field = MPS_EVENT_FIELDS.get(data.get("EventType", ""))
        if event_field and data.get(event_field) is None:
            raise ValidationError(
                f"required when EventType is {data['EventType']}", event_field
            )


# --- MPS live-stream notifications (ParseLiveStreamProcessNotification) -----------

# NotificationType -> the field holding its result; a type newer than this table
# has its result in "<NotificationType>Info" (the pattern of every one of them).
MPS_LIVE_STREAM_RESULT_FIELDS: dict[str, str] = {
    "AiReviewResult": "AiReviewResultInfo",
    "AiRecognitionResult": "AiRecognitionResultInfo",
    "AiAnalysisResult": "AiAnalysisResultInfo",
    "AiQualityControlResult": "AiQualityControlResultInfo",
    "ProcessEof": "ProcessEofInfo",
}


def live_stream_result_field(notification_type: str) -> str:
    return MPS_LIVE_STREAM_RESULT_FIELDS.get(notification_type, f"{notification_type}Info")


class MpsLiveStreamNotificationSchema(OpenSchema):
    """What MPS posts to the NotifyUrl of a ProcessLiveStream task: NotificationType, not EventType."""

    NotificationType = fields.String(required=True, validate=[
        validate.Regexp(r"^[A-Z][A-Za-z0-9]{0,63}$", error="must be a NotificationType name"),
        # The event types of task notifications name other callbacks: one body cannot be both.
        validate.NoneOf(MPS_EVENT_FIELDS, error="is an EventType, not a NotificationType"),
    ])
    TaskId = fields.String(required=True, validate=validate.Length(min=1, max=256))
    locals().update({field: fields.Dict(allow_none=True) for field in MPS_LIVE_STREAM_RESULT_FIELDS.values()})
    Timestamp = fields.Integer(allow_none=True)
    Sign = _optional_string()
    locals().update(_session_fields())


def is_live_stream_notification(payload: dict[str, Any]) -> bool:
    return "EventType" not in payload and "NotificationType" in payload


# --- VOD EventContent --------------------------------------------------------


class VodTaskEventSchema(TaskStateSchema):
    """Any VOD event object of a task (ProcedureTask, EditMediaTask, ...)."""

    FileId = _optional_string()
    locals().update(_session_fields())


class VodFileUploadSchema(OpenSchema):
    FileId = fields.String(required=True, validate=validate.Length(min=1))
    MediaBasicInfo = fields.Dict(allow_none=True)
    ProcedureTaskId = _optional_string()
    ReviewAudioVideoTaskId = _optional_string()
    MetaData = fields.Dict(allow_none=True)


class VodFileDeleteSchema(OpenSchema):
    FileIdSet = fields.List(fields.String(), required=True)
    FileDeleteResultInfo = fields.List(fields.Dict(), allow_none=True)


# EventType -> the field of EventContent holding its event object, for the
# events that carry a task id (from the SDK's EventContent documentation).
VOD_TASK_EVENT_FIELDS: dict[str, str] = {
    "ProcedureStateChanged": "ProcedureStateChangeEvent",
    "PullComplete": "PullCompleteEvent",
    "EditMediaComplete": "EditMediaCompleteEvent",
    "SplitMediaComplete": "SplitMediaCompleteEvent",
    "ComposeMediaComplete": "ComposeMediaCompleteEvent",
    "ClipComplete": "ClipCompleteEvent",
    "TranscodeComplete": "TranscodeCompleteEvent",
    "CreateImageSpriteComplete": "CreateImageSpriteCompleteEvent",
    "ConcatComplete": "ConcatCompleteEvent",
    "CreateSnapshotByTimeOffsetComplete": "SnapshotByTimeOffsetCompleteEvent",
    "WechatPublishComplete": "WechatPublishCompleteEvent",
    "WechatMiniProgramPublishComplete": "WechatMiniProgramPublishCompleteEvent",
    "RemoveWatermark": "RemoveWatermarkCompleteEvent",
    "RebuildMediaComplete": "RebuildMediaCompleteEvent",
    "ExtractTraceWatermarkComplete": "ExtractTraceWatermarkCompleteEvent",
    "ExtractCopyRightWatermarkComplete": "ExtractCopyRightWatermarkCompleteEvent",
    "ReviewAudioVideoComplete": "ReviewAudioVideoCompleteEvent",
    "ReduceMediaBitrateComplete": "ReduceMediaBitrateCompleteEvent",
    "DescribeFileAttributesComplete": "DescribeFileAttributesCompleteEvent",
    "QualityInspectComplete": "QualityInspectCompleteEvent",
    "QualityEnhanceComplete": "QualityEnhanceCompleteEvent",
    "ComplexAdaptiveDynamicStreamingComplete": "ComplexAdaptiveDynamicStreamingCompleteEvent",
    "ProcessMediaByMPSComplete": "ProcessMediaByMPSCompleteEvent",
    "AigcImageTaskComplete": "AigcImageCompleteEvent",
    "AigcVideoTaskComplete": "AigcVideoCompleteEvent",
    "ExtractBlindWatermarkComplete": "ExtractBlindWatermarkComplete",
    "SceneAigcImageTaskComplete": "SceneAigcImageCompleteEvent",
    "CreateAigcAdvancedCustomElementComplete": "CreateAigcAdvancedCustomElementCompleteEvent",
    "CreateAigcCustomVoiceComplete": "CreateAigcCustomVoiceCompleteEvent",
    "DescribeAigcFaceInfoAsyncComplete": "DescribeAigcFaceInfoAsyncCompleteEvent",
    "AigcHunyuan3DTaskComplete": "AigcHunyuan3DCompleteEvent",
}

# Events about files rather than tasks: nothing to reconcile them with.
VOD_FILE_EVENT_FIELDS: dict[str, str] = {
    "NewFileUpload": "FileUploadEvent",
    "FileDeleted": "FileDeleteEvent",
    "RestoreMediaComplete": "RestoreMediaCompleteEvent",
    "PersistenceComplete": "PersistenceCompleteEvent",
    "MediaCastStatusChanged": "MediaCastStatusChangedEvent",
    "ProcessImageAsyncComplete": "ProcessImageAsyncCompleteEvent",
}

# Event objects some VOD documentation pages name without their "Event" suffix.
VOD_EVENT_FIELD_ALIASES: dict[str, str] = {
    "EditMediaComplete": "EditMediaCompleteEvent",
    "WechatPublishComplete": "WechatPublishCompleteEvent",
}

_VOD_FILE_EVENT_SCHEMAS = {
    "FileUploadEvent": VodFileUploadSchema,
    "FileDeleteEvent": VodFileDeleteSchema,
}


def _vod_event_fields() -> dict[str, fields.Field]:
    declared: dict[str, fields.Field] = {
        name: fields.Nested(VodTaskEventSchema, allow_none=True)
        for name in VOD_TASK_EVENT_FIELDS.values()
    }
    for name in VOD_FILE_EVENT_FIELDS.values():
        schema = _VOD_FILE_EVENT_SCHEMAS.get(name, OpenSchema)
        declared[name] = fields.Nested(schema, allow_none=True)
    return declared


class VodEventSchema(OpenSchema):
    EventType = fields.String(required=True, validate=validate.Length(min=1))
    EventHandle = _optional_string()
    TaskId = _optional_string()
    Sign = _optional_string()
    T = fields.Raw(allow_none=True)
    locals().update(_vod_event_fields())
    locals().update(_session_fields())

    @pre_load
    def _aliased_event_object(self, data: Any, **kwargs) -> Any:
        """An event object under its alias is read as the object itself (the alias stays in the body too)."""
        if not isinstance(data, dict):
            return data
        moved = {canonical: data[alias] for alias, canonical in VOD_EVENT_FIELD_ALIASES.items()
                 if isinstance(data.get(alias), dict) and data.get(canonical) is None}
        return {**data, **moved} if moved else data

    @validates_schema
    def _event_object_present(self, data: dict, **kwargs) -> None:
        event_type = data.get("EventType", "")
        event_field = VOD_TASK_EVENT_FIELDS.get(event_type) or (
            event_type in ("NewFileUpload", "FileDeleted")
            and VOD_FILE_EVENT_FIELDS[event_type]
        )
        if event_field and data.get(event_field) is None:
            raise ValidationError(f"required when EventType is {event_type}", event_field)


def is_vod_legacy_format(payload: dict[str, Any]) -> bool:
    """A VOD v2.0 (legacy format) callback: lower-case ``version``, ``eventType`` and ``data``."""
    return "EventType" not in payload and "eventType" in payload and ("version" in payload or "data" in payload)


VOD_LEGACY_FORMAT_FIX = (
    "this is a VOD v2.0 (legacy format) callback, which the receiver does not read: switch the VOD "
    "application's event notifications to v3.0 (VOD console, Callback Settings, or the ModifyEventConfig "
    "API), and the same events come in the v3.0 format"
)


# --- AMS moderation callback ---------------------------------------------------


class AmsLabelSchema(OpenSchema):
    Label = _optional_string()
    Suggestion = _optional_string()
    Score = fields.Integer(allow_none=True)


class AmsCallbackSchema(OpenSchema):
    """The moderation result AMS posts, shaped like ``TaskData`` (seed 003)."""

    TaskId = fields.String(required=True, validate=validate.Length(min=1, max=256))
    DataId = _optional_string()
    BizType = _optional_string()
    Name = _optional_string()
    Status = _optional_string()
    Type = _optional_string()
    Suggestion = _optional_string()
    Labels = fields.List(fields.Nested(AmsLabelSchema), allow_none=True)
    AudioSegments = fields.List(fields.Dict(), allow_none=True)
    MediaInfo = fields.Dict(allow_none=True)
    InputInfo = fields.Dict(allow_none=True)
    CreatedAt = _optional_string()
    UpdatedAt = _optional_string()


CALLBACK_SCHEMAS: dict[str, type[Schema]] = {
    "mps": MpsNotificationSchema,
    "vod": VodEventSchema,
    "ams": AmsCallbackSchema,
}


def callback_schema(source: str, payload: dict[str, Any]) -> type[Schema]:
    """The schema of one body: its product's, or for MPS the live-stream notification's."""
    if source == "mps" and is_live_stream_notification(payload):
        return MpsLiveStreamNotificationSchema
    return CALLBACK_SCHEMAS[source]
