"""Marshmallow schemas of the Describe answers the worker reads (SPEC 2 and 6).

Each schema reads one ``Response`` object of a Describe call into a
`TaskState`, in its ``post_load``. Like the callback schemas they keep the
fields they do not declare and type only what the product reads, leniently
where Tencent is inconsistent (a string may be null or ``""``; an error code
is an integer in one answer and a string in another) and strictly where a
wrong type would mislead (a ``Status`` that is not a string, a
``TaskNotifyConfig`` or task object that is not an object).

`task_state_of()` picks the schema of a (service, action) and raises
`UnreadableAnswer`, naming the action and the offending fields, for an
answer that does not fit. The schemas only *read*: the event's ``detail`` is
always the raw answer, never what they load.

Field names follow the official SDK models: MPS ``DescribeTaskDetail``,
``DescribeBatchTaskDetail`` and ``DescribeImageTaskDetail`` (2019-06-12), VOD
``DescribeTaskDetail`` (2018-07-17), AMS ``DescribeTaskDetail`` (2020-12-29).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load

from schemas.callbacks import OpenSchema

# AMS statuses after which a moderation task does not change any more, and
# those of them that failed (the same as receiver.reconcile's FINAL_STATUSES
# and FAILED_STATUSES: schemas/ does not import receiver/, a test keeps them equal).
AMS_FINAL_STATUSES = frozenset({"FINISH", "ERROR", "CANCELLED"})
AMS_FAILED_STATUSES = frozenset({"ERROR", "CANCELLED"})

# MPS TaskType -> the field of DescribeTaskDetail holding that task.
MPS_TASK_FIELDS: dict[str, str] = {
    "WorkflowTask": "WorkflowTask",
    "EditMediaTask": "EditMediaTask",
    "ScheduleTask": "ScheduleTask",
    "ExtractBlindWatermark": "ExtractBlindWatermarkTask",
    "ExtractBlindWatermarkTask": "ExtractBlindWatermarkTask",
    "LiveStreamProcessTask": "LiveStreamProcessTask",
    "LiveScheduleTask": "LiveScheduleTask",
}


@dataclass(frozen=True)
class TaskState:
    """What the product needs from a Describe answer, whatever the product."""

    task_type: str | None
    status: str | None
    error_code: str | None
    error_message: str | None
    session_id: str | None
    session_context: str | None
    notify_config: dict[str, Any] | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    knows_session: bool = True  # False where the answer has no SessionId to compare with


class UnreadableAnswer(ValueError):
    """A Describe answer that does not fit the schema of its action.

    ``messages`` are marshmallow's, keyed by the offending fields (``_schema``:
    the answer as a whole).
    """

    def __init__(self, service: str, action: str, messages: dict[str, Any] | list[Any]) -> None:
        self.service, self.action, self.messages = service, action, messages
        problems = "; ".join(f"{path}: {message}" for path, message in _flatten(messages))
        super().__init__(f"the {service}:{action} answer does not fit its schema: {problems}")


def _flatten(messages: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(messages, dict):  # "_schema": the object at `path` as a whole
        return [item for key, value in messages.items()
                for item in _flatten(value, path if key == "_schema" else f"{path}.{key}" if path else str(key))]
    if isinstance(messages, list) and all(isinstance(message, str) for message in messages):
        return [(path or "answer", " ".join(messages))]
    if isinstance(messages, list):
        return [item for message in messages for item in _flatten(message, path)]
    return [(path or "answer", str(messages))]


# --- fields ----------------------------------------------------------------------------


def _string() -> fields.String:
    """A string the product reads; null, "" or absent all say "not set"."""
    return fields.String(allow_none=True)


class ErrorCode(fields.Field):
    """An error code: an integer in some answers, a string in others (0, "0", "" and null: no error)."""

    default_error_messages = {"invalid": "Not a valid error code: an integer or a string."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int | str:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.make_error("invalid")
        return value


def _error_code(value: Any) -> str | None:
    if value in (None, "", 0, "0"):
        return None
    return str(value)


def _time(value: str | None) -> str | None:
    """A time not set yet reads as None, not ""."""
    return value or None


def _task_object(schema: Schema, field: str, value: Any) -> dict[str, Any]:
    """The task object the answer's TaskType names, read with `schema` ({} when there is none)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError({field: ["Not a valid mapping type."]})
    try:
        return schema.load(value)
    except ValidationError as error:
        raise ValidationError({field: error.messages}) from error


class NotifyConfigSchema(OpenSchema):
    """``TaskNotifyConfig``: the check compares its type and URL with ours."""

    NotifyType = _string()
    NotifyUrl = _string()


# --- MPS ---------------------------------------------------------------------------------


class MpsTaskObjectSchema(OpenSchema):
    """The task object of an MPS DescribeTaskDetail (WorkflowTask, EditMediaTask, ...)."""

    Status = _string()
    ErrCode = ErrorCode(allow_none=True)
    Message = _string()


_MPS_TASK_OBJECT = MpsTaskObjectSchema()


class MpsTaskDetailSchema(OpenSchema):
    """MPS ``DescribeTaskDetail``: the task object is the field its TaskType names."""

    TaskType = _string()
    Status = _string()
    CreateTime = _string()
    BeginProcessTime = _string()
    FinishTime = _string()
    SessionId = _string()
    SessionContext = _string()
    TaskNotifyConfig = fields.Nested(NotifyConfigSchema, allow_none=True)

    def _task(self, data: dict[str, Any]) -> dict[str, Any]:
        field = MPS_TASK_FIELDS.get(data.get("TaskType") or "")
        return _task_object(_MPS_TASK_OBJECT, field, data.get(field)) if field else {}

    @post_load
    def _task_state(self, data: dict[str, Any], **kwargs: Any) -> TaskState:
        task = self._task(data)
        return TaskState(
            task_type=data.get("TaskType"), status=data.get("Status"),
            error_code=_error_code(task.get("ErrCode")), error_message=task.get("Message") or None,
            session_id=data.get("SessionId"), session_context=data.get("SessionContext"),
            notify_config=data.get("TaskNotifyConfig"),
            created_at=_time(data.get("CreateTime")), started_at=_time(data.get("BeginProcessTime")),
            finished_at=_time(data.get("FinishTime")),
        )


class MpsBatchTaskDetailSchema(MpsTaskDetailSchema):
    """MPS ``DescribeBatchTaskDetail``: a BatchTask, read like a DescribeTaskDetail (its result is not read)."""


class MpsImageTaskDetailSchema(OpenSchema):
    """MPS ``DescribeImageTaskDetail``: flat, no session, no notify configuration."""

    TaskType = _string()
    Status = _string()
    ErrCode = ErrorCode(allow_none=True)
    ErrMsg = _string()
    Message = _string()
    CreateTime = _string()
    FinishTime = _string()

    @post_load
    def _task_state(self, data: dict[str, Any], **kwargs: Any) -> TaskState:
        return TaskState(
            task_type=data.get("TaskType"), status=data.get("Status"),
            error_code=_error_code(data.get("ErrCode")) or (data.get("ErrMsg") or None),
            error_message=data.get("Message") or None,
            session_id=None, session_context=None, notify_config=None,
            created_at=_time(data.get("CreateTime")), started_at=None, finished_at=_time(data.get("FinishTime")),
            knows_session=False,
        )


# --- VOD ---------------------------------------------------------------------------------


class VodTaskObjectSchema(OpenSchema):
    """The task object of a VOD DescribeTaskDetail (ProcedureTask, EditMediaTask, ...)."""

    Status = _string()
    ErrCode = ErrorCode(allow_none=True)
    ErrCodeExt = ErrorCode(allow_none=True)
    Message = _string()
    SessionId = _string()
    SessionContext = _string()


_VOD_TASK_OBJECT = VodTaskObjectSchema()


class VodTaskDetailSchema(OpenSchema):
    """VOD ``DescribeTaskDetail``: the task object is ``<TaskType>Task``.

    Failing that (a task type whose object is named otherwise), it is the
    first ``...Task`` object that has a TaskId.
    """

    TaskType = _string()
    Status = _string()
    CreateTime = _string()
    BeginProcessTime = _string()
    FinishTime = _string()

    def _task(self, data: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        named = f"{data.get('TaskType') or ''}Task"
        if answer.get(named) is not None:
            return _task_object(_VOD_TASK_OBJECT, named, answer[named])
        for key, value in answer.items():  # in the answer's own order
            if isinstance(key, str) and key.endswith("Task") and isinstance(value, dict) and value.get("TaskId"):
                return _task_object(_VOD_TASK_OBJECT, key, value)
        return {}

    @post_load(pass_original=True)
    def _task_state(self, data: dict[str, Any], answer: dict[str, Any], **kwargs: Any) -> TaskState:
        task = self._task(data, answer)
        return TaskState(
            task_type=data.get("TaskType"), status=data.get("Status"),
            error_code=_error_code(task.get("ErrCode")) or _error_code(task.get("ErrCodeExt")),
            error_message=task.get("Message") or None,
            session_id=task.get("SessionId"), session_context=task.get("SessionContext"),
            notify_config=None,
            created_at=_time(data.get("CreateTime")), started_at=_time(data.get("BeginProcessTime")),
            finished_at=_time(data.get("FinishTime")),
            knows_session="SessionId" in task,
        )


# --- AMS ---------------------------------------------------------------------------------


class AmsTaskDetailSchema(OpenSchema):
    """AMS ``DescribeTaskDetail``: no session; its error fields count only for a failed task."""

    Type = _string()
    Status = _string()
    ErrorType = ErrorCode(allow_none=True)
    ErrorDescription = _string()
    CreatedAt = _string()
    UpdatedAt = _string()

    @post_load
    def _task_state(self, data: dict[str, Any], **kwargs: Any) -> TaskState:
        status = data.get("Status")
        failed = status in AMS_FAILED_STATUSES
        return TaskState(
            task_type=data.get("Type"), status=status,
            error_code=_error_code(data.get("ErrorType")) if failed else None,
            error_message=(data.get("ErrorDescription") or None) if failed else None,
            session_id=None, session_context=None, notify_config=None,
            created_at=_time(data.get("CreatedAt")), started_at=None,
            finished_at=_time(data.get("UpdatedAt")) if status in AMS_FINAL_STATUSES else None,
            knows_session=False,
        )


# --- choosing the schema -------------------------------------------------------------------

DESCRIBE_SCHEMAS: dict[tuple[str, str], type[Schema]] = {
    ("mps", "DescribeTaskDetail"): MpsTaskDetailSchema,
    ("mps", "DescribeBatchTaskDetail"): MpsBatchTaskDetailSchema,
    ("mps", "DescribeImageTaskDetail"): MpsImageTaskDetailSchema,
    ("vod", "DescribeTaskDetail"): VodTaskDetailSchema,
    ("ams", "DescribeTaskDetail"): AmsTaskDetailSchema,
}
# Loading keeps no state in a schema: one instance of each serves every thread.
_SCHEMAS: dict[tuple[str, str], Schema] = {key: schema() for key, schema in DESCRIBE_SCHEMAS.items()}


def task_state_of(service: str, action: str, answer: Any) -> TaskState:
    """The TaskState of one Describe answer (its ``Response`` object).

    Raises `UnreadableAnswer` when the answer does not fit the action's
    schema, and KeyError for a (service, action) that has no schema.
    """
    schema = _SCHEMAS[(service, action)]
    try:
        return schema.load(answer)
    except ValidationError as error:
        raise UnreadableAnswer(service, action, error.messages) from None
