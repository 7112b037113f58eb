"""The schemas of the Describe answers (schemas/describe.py): Tencent's published answers, and answers that do not fit.

The realworld files are the answers Tencent publishes (tccli examples), the
fixtures those of the seed pages. The schemas only read the answer: the
event's ``detail`` stays the raw answer.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.events import (
    FAILED_STATUSES,
    FINAL_STATUSES,
    build_event,
    redact,
)
from receiver.reconcile import (
    Forward,
    describe_call,
    judge,
    task_state,
)
from receiver.records import extract_record
from receiver.tencentcloud import DescribeCall
from schemas.callbacks import CALLBACK_SCHEMAS
from schemas.describe import (
    AMS_FAILED_STATUSES,
    AMS_FINAL_STATUSES,
    DESCRIBE_SCHEMAS,
    MPS_TASK_FIELDS,
    TaskState,
    UnreadableAnswer,
    task_state_of,
)
from schemas.event import NormalizedEventSchema
from tests import payloads

REALWORLD = Path("/work/shared/realworld")
T0 = 1_800_000_000.0
RECEIVER = "http://xxxx.com/v2/push"


def realworld(name: str) -> dict[str, Any]:
    return json.loads((REALWORLD / name).read_text())


def realworld_answer(name: str) -> dict[str, Any]:
    return realworld(name)["body"]["Response"]


def state(**fields: Any) -> TaskState:
    base = dict.fromkeys(("task_type", "status", "error_code", "error_message", "session_id", "session_context",
                          "notify_config", "created_at", "started_at", "finished_at"))
    return TaskState(**{**base, **fields})


# --- Tencent's own answers ------------------------------------------------------------------

BATCH_NOTIFY = {"AwsSQS": None, "CmqModel": "", "CmqRegion": "", "NotifyKey": "", "NotifyMode": "Finish",
                "NotifyType": "URL", "NotifyUrl": "http://xxxx.com/v2/push/mps_test?token=73YcsZyP",
                "QueueName": "", "TopicName": ""}

REALWORLD_STATES = {
    "mps_describe_taskdetail_workflowtask.json": state(
        task_type="WorkflowTask", status="FINISH", session_id="", session_context="", notify_config=None,
        created_at="2019-07-16T06:21:27Z", started_at="2019-07-16T06:21:28Z", finished_at="2019-07-16T06:21:46Z"),
    "mps_describe_batchtaskdetail.json": state(
        task_type="BatchTask", status="FINISH", session_id="qwer123", session_context="asdzxcs",
        notify_config=BATCH_NOTIFY, created_at="2025-05-17T07:15:11Z", started_at="2025-05-17T07:15:11Z",
        finished_at="2025-05-17T07:15:36Z"),
    "mps_describe_imagetaskdetail_2026.json": state(
        task_type="WorkflowTask", status="PROCESSING", created_at="2026-04-30T06:26:49Z", knows_session=False),
    "vod_describe_taskdetail_editmedia.json": state(
        task_type="EditMedia", status="FINISH", session_id="", session_context="",
        created_at="2019-02-25T10:56:02Z", started_at="2019-02-25T10:56:02Z", finished_at="2019-02-25T10:56:13Z"),
    "vod_describe_taskdetail_procedure.json": state(
        task_type="Procedure", status="FINISH", session_id="", session_context="",
        created_at="2019-02-21T08:27:42Z", started_at="2019-02-21T08:27:43Z", finished_at="2019-02-21T08:27:44Z"),
    "ams_describe_taskdetail.json": state(
        task_type="AUDIO", status="FINISH", created_at="2024-10-23T07:56:17.008Z",
        finished_at="2024-10-23T07:58:01.441Z", knows_session=False),
}


def test_every_realworld_describe_answer_of_an_action_the_worker_reads_is_covered():
    read = {name for (_service, name) in DESCRIBE_SCHEMAS}
    files = {path.name for path in REALWORLD.glob("*_describe_*.json")
             if realworld(path.name)["kind"] == "describe" and realworld(path.name)["action"] in read}
    assert files == set(REALWORLD_STATES)


@pytest.mark.parametrize("name", sorted(REALWORLD_STATES))
def test_realworld_answers_load_to_their_task_state(name):
    published = realworld(name)
    loaded = task_state_of(published["product"], published["action"], published["body"]["Response"])
    assert loaded == REALWORLD_STATES[name]
    call = DescribeCall(published["product"], published["action"], {"TaskId": "t"})
    assert task_state(call, published["body"]["Response"]) == loaded  # what judge() reads


@pytest.mark.parametrize("name", ["ams_cb_describetaskdetail_shape_2021.json",
                                  "ams_cb_describetaskdetail_shape_2024.json"])
def test_ams_callbacks_shaped_like_describe_task_detail_load_too(name):
    loaded = task_state_of("ams", "DescribeTaskDetail", realworld(name)["body"])
    assert (loaded.task_type, loaded.status, loaded.error_code, loaded.knows_session) == (
        "AUDIO", "FINISH", None, False)
    assert loaded.finished_at and loaded.created_at


@pytest.mark.parametrize("fixture, service, action, expected", [
    ("seed000_mps_describe_image_task_detail_example1", "mps", "DescribeImageTaskDetail",
     state(task_type="WorkflowTask", status="FINISH", created_at="2025-05-16T07:44:26Z",
           finished_at="2025-05-16T07:44:30Z", knows_session=False)),
    # No SessionId in the task object: nothing to compare a callback's with.
    ("seed001_vod_describe_task_detail_example1", "vod", "DescribeTaskDetail",
     state(task_type="EditMedia", status="FINISH", created_at="2019-02-25T10:56:02Z",
           started_at="2019-02-25T10:56:02Z", finished_at="2019-02-25T10:56:13Z", knows_session=False)),
    ("seed001_vod_describe_task_detail_example3", "vod", "DescribeTaskDetail",
     state(task_type="Transcode", status="FINISH", created_at="2019-01-22T06:50:31Z",
           started_at="2019-01-22T06:50:32Z", finished_at="2019-01-22T06:50:45Z", knows_session=False)),
    ("seed002_mps_describe_batch_task_detail_example1", "mps", "DescribeBatchTaskDetail",
     state(task_type="BatchTask", status="FINISH", session_id="qwer123", session_context="asdzxcs",
           notify_config=BATCH_NOTIFY, created_at="2025-05-17T07:15:11Z", started_at="2025-05-17T07:15:11Z",
           finished_at="2025-05-17T07:15:36Z")),
])
def test_seed_answers_load_to_their_task_state(fixture, service, action, expected):
    assert task_state_of(service, action, payloads.seed_response(fixture)) == expected


# --- today's reading rules -----------------------------------------------------------------


def mps(**fields: Any) -> TaskState:
    return task_state_of("mps", "DescribeTaskDetail", fields)


def test_mps_error_comes_from_the_task_object_of_the_task_type():
    assert mps(TaskType="EditMediaTask", EditMediaTask={"ErrCode": 70000, "Message": "bad input"},
               WorkflowTask={"ErrCode": 1}).error_code == "70000"
    assert mps(TaskType="EditMediaTask", EditMediaTask={"ErrCode": 70000, "Message": "bad input"}
               ).error_message == "bad input"
    watermark = mps(TaskType="ExtractBlindWatermark", ExtractBlindWatermarkTask={"ErrCode": "E1", "Message": "m"})
    assert (watermark.error_code, watermark.error_message) == ("E1", "m")
    for task_type in ("LiveStreamProcessTask", "LiveScheduleTask", "ScheduleTask"):
        assert mps(TaskType=task_type, **{task_type: {"ErrCode": 5}}).error_code == "5"
    # no error: 0, "0", "" and null alike; a task type without a task object: no error either
    for no_error in (0, "0", "", None):
        assert mps(TaskType="WorkflowTask", WorkflowTask={"ErrCode": no_error, "Message": ""}).error_code is None
    assert mps(TaskType="BatchTask").error_code is None and mps(TaskType="FutureTask").error_code is None


def test_what_the_product_does_not_read_may_be_anything():
    loaded = mps(TaskType="WorkflowTask", Status="FINISH", WorkflowTask={"ErrCode": 0, "Extra": [math.nan]},
                 EditMediaTask="not read", ScheduleTask=[1, 2], ExtInfo={"x": 1}, TasksPriority="high",
                 BrandNewField={"deep": [{"er": None}]})
    assert (loaded.task_type, loaded.status, loaded.error_code) == ("WorkflowTask", "FINISH", None)
    notify = mps(TaskNotifyConfig={"NotifyType": "URL", "NotifyUrl": "https://h/p", "AwsSQS": {"S3SecretKey": 1},
                                   "NotifyMode": 7})
    assert notify.notify_config == {"NotifyType": "URL", "NotifyUrl": "https://h/p", "AwsSQS": {"S3SecretKey": 1},
                                    "NotifyMode": 7}


def test_strings_may_be_null_or_empty_and_unset_times_read_as_none():
    loaded = mps(TaskType=None, Status=None, SessionId=None, SessionContext=None, TaskNotifyConfig=None,
                 CreateTime="", BeginProcessTime=None, FinishTime="")
    assert loaded == state()
    assert task_state_of("mps", "DescribeTaskDetail", {}) == state()


def test_vod_task_object_is_named_after_the_task_type_with_a_fallback():
    answer = {"TaskType": "Procedure", "Status": "FINISH", "EditMediaTask": {"TaskId": "e", "ErrCode": 9},
              "ProcedureTask": {"TaskId": "p", "ErrCode": 0, "ErrCodeExt": "InvalidInput", "Message": "m",
                                "SessionId": "s", "SessionContext": "c"}}
    loaded = task_state_of("vod", "DescribeTaskDetail", answer)
    assert (loaded.error_code, loaded.error_message, loaded.session_id, loaded.session_context) == (
        "InvalidInput", "m", "s", "c")
    # a task type whose object is named otherwise: the first ...Task object with a TaskId
    answer = {"TaskType": "RemoveWatermarkTask", "ProcedureTask": None, "NoIdTask": {"ErrCode": 3},
              "RemoveWatermarkTask": {"TaskId": "r", "ErrCode": 10008, "SessionId": ""}, "LaterTask": {"TaskId": "l"}}
    loaded = task_state_of("vod", "DescribeTaskDetail", answer)
    assert (loaded.error_code, loaded.session_id, loaded.knows_session) == ("10008", "", True)
    assert task_state_of("vod", "DescribeTaskDetail", {"TaskType": "Procedure"}).knows_session is False


def test_image_task_error_is_its_code_or_its_message():
    image = {"TaskType": "WorkflowTask", "Status": "FINISH", "ErrMsg": "ImageDecodeFailed", "Message": "decode"}
    loaded = task_state_of("mps", "DescribeImageTaskDetail", {**image, "ErrCode": 0})
    assert (loaded.error_code, loaded.error_message) == ("ImageDecodeFailed", "decode")
    assert task_state_of("mps", "DescribeImageTaskDetail", {**image, "ErrCode": 30010}).error_code == "30010"


def test_ams_error_fields_count_only_for_a_failed_task_and_its_end_only_when_final():
    answer = {"Type": "AUDIO", "Status": "FINISH", "ErrorType": "DOWNLOAD_FAILED", "ErrorDescription": "gone",
              "CreatedAt": "2024-10-23T07:56:17.008Z", "UpdatedAt": "2024-10-23T07:58:01.441Z"}
    finished = task_state_of("ams", "DescribeTaskDetail", answer)
    assert (finished.error_code, finished.error_message, finished.finished_at) == (
        None, None, "2024-10-23T07:58:01.441Z")
    failed = task_state_of("ams", "DescribeTaskDetail", {**answer, "Status": "ERROR"})
    assert (failed.error_code, failed.error_message) == ("DOWNLOAD_FAILED", "gone")
    running = task_state_of("ams", "DescribeTaskDetail", {**answer, "Status": "RUNNING"})
    assert (running.error_code, running.finished_at, running.session_id) == (None, None, None)


def test_the_statuses_agree_with_reconcile():
    assert AMS_FINAL_STATUSES == FINAL_STATUSES["ams"] and AMS_FAILED_STATUSES == FAILED_STATUSES
    assert {"WorkflowTask", "EditMediaTask", "ScheduleTask", "ExtractBlindWatermarkTask", "LiveStreamProcessTask",
            "LiveScheduleTask"} == set(MPS_TASK_FIELDS.values())


# --- answers that do not fit ------------------------------------------------------------------------


@pytest.mark.parametrize("service, action, answer, field", [
    ("mps", "DescribeTaskDetail", {"Status": 5}, "Status"),
    ("mps", "DescribeTaskDetail", {"TaskNotifyConfig": "x"}, "TaskNotifyConfig"),
    ("mps", "DescribeTaskDetail", {"TaskNotifyConfig": {"NotifyType": "URL", "NotifyUrl": 5}},
     "TaskNotifyConfig.NotifyUrl"),
    ("mps", "DescribeTaskDetail", {"TaskType": "WorkflowTask", "WorkflowTask": []}, "WorkflowTask"),
    ("mps", "DescribeTaskDetail", {"TaskType": "WorkflowTask", "WorkflowTask": "garbage"}, "WorkflowTask"),
    ("mps", "DescribeTaskDetail", {"TaskType": "ScheduleTask", "ScheduleTask": {"ErrCode": {"code": 1}}},
     "ScheduleTask.ErrCode"),
    ("mps", "DescribeTaskDetail", {"TaskType": "EditMediaTask", "EditMediaTask": {"Message": 3}},
     "EditMediaTask.Message"),
    ("mps", "DescribeTaskDetail", {"TaskType": ["WorkflowTask"]}, "TaskType"),
    ("mps", "DescribeTaskDetail", {"SessionId": 12}, "SessionId"),
    ("mps", "DescribeTaskDetail", {"CreateTime": 1700000000}, "CreateTime"),
    ("mps", "DescribeBatchTaskDetail", {"Status": ["FINISH"]}, "Status"),
    ("mps", "DescribeBatchTaskDetail", {"TaskNotifyConfig": []}, "TaskNotifyConfig"),
    ("mps", "DescribeImageTaskDetail", {"ErrCode": True}, "ErrCode"),
    ("mps", "DescribeImageTaskDetail", {"ErrCode": 1.5}, "ErrCode"),
    ("mps", "DescribeImageTaskDetail", {"Status": {"Code": "FINISH"}}, "Status"),
    ("vod", "DescribeTaskDetail", {"TaskType": "Procedure", "ProcedureTask": [{"TaskId": "p"}]}, "ProcedureTask"),
    ("vod", "DescribeTaskDetail", {"TaskType": "Procedure", "ProcedureTask": {"SessionId": 1}},
     "ProcedureTask.SessionId"),
    ("vod", "DescribeTaskDetail", {"TaskType": "X", "OtherTask": {"TaskId": "o", "ErrCodeExt": []}},
     "OtherTask.ErrCodeExt"),
    ("vod", "DescribeTaskDetail", {"Status": 0}, "Status"),
    ("ams", "DescribeTaskDetail", {"Status": None, "ErrorType": ["x"]}, "ErrorType"),
    ("ams", "DescribeTaskDetail", {"UpdatedAt": 17}, "UpdatedAt"),
    ("ams", "DescribeTaskDetail", [], "answer"),
])
def test_an_answer_that_does_not_fit_is_a_clear_error_naming_the_action_and_the_field(service, action, answer,
                                                                                       field):
    with pytest.raises(UnreadableAnswer) as raised:
        task_state_of(service, action, answer)
    error = raised.value
    assert isinstance(error, ValueError)
    assert (error.service, error.action) == (service, action)
    assert f"{service}:{action}" in str(error) and f"{field}: " in str(error)
    top = field.split(".")[0]
    assert top in error.messages or (top == "answer" and "_schema" in error.messages)


def test_every_offending_field_is_named():
    with pytest.raises(UnreadableAnswer) as raised:
        task_state_of("mps", "DescribeTaskDetail", {"Status": 5, "TaskNotifyConfig": "x", "SessionContext": []})
    assert set(raised.value.messages) == {"Status", "TaskNotifyConfig", "SessionContext"}


def test_judge_raises_the_clear_error_for_an_unreadable_answer():
    rec = record("mps", payloads.mps_workflow(task_id="2500000000-WorkflowTask-ab"))
    with pytest.raises(UnreadableAnswer, match="WorkflowTask: Not a valid mapping"):
        judge(rec, describe_call(rec), {"TaskType": "WorkflowTask", "Status": "FINISH", "WorkflowTask": "x"},
              RECEIVER, T0, True)


def test_an_action_without_a_schema_is_a_key_error():
    with pytest.raises(KeyError):
        task_state_of("vod", "DescribeMediaInfos", {})


# --- the event's detail stays the raw answer ------------------------------------------------------


def record(source: str, body: dict):
    return extract_record(source, CALLBACK_SCHEMAS[source]().load(body), json.dumps(body).encode(), T0)


def test_detail_is_the_raw_answer_not_what_the_schema_loaded():
    answer = realworld_answer("mps_describe_batchtaskdetail.json")
    answer["TaskNotifyConfig"].update(NotifyUrl="http://xxxx.com/v2/push/callbacks/mps?token=73YcsZyP",
                                      NotifyKey="the-notify-key")
    raw = copy.deepcopy(answer)
    rec = record("mps", payloads.mps_batch_from_seed())
    call = describe_call(rec)
    verdict = judge(rec, call, answer, RECEIVER, T0, patience_left=True)
    assert isinstance(verdict, Forward)
    NormalizedEventSchema().load(verdict.event)
    expected = redact({k: v for k, v in raw.items() if k != "RequestId"})
    assert expected["TaskNotifyConfig"]["NotifyKey"] == "***" and "token=***" in expected["TaskNotifyConfig"][
        "NotifyUrl"]
    # the same keys in the same order, the same values of the same types: nothing loaded went into it
    assert json.dumps(verdict.event["detail"]) == json.dumps(expected)
    assert answer == raw  # and the answer itself is left as it was
    event = build_event(rec, "mps", "BatchTask", answer["TaskId"], call, answer, task_state(call, answer), T0)
    assert json.dumps(event["detail"]) == json.dumps(expected)


def test_a_vod_realworld_answer_is_forwarded_with_its_raw_detail():
    answer = realworld_answer("vod_describe_taskdetail_procedure.json")
    task = answer["ProcedureTask"]
    rec = record("vod", {"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
        "TaskId": task["TaskId"], "Status": "FINISH", "SessionId": "", "SessionContext": ""}})
    verdict = judge(rec, describe_call(rec), answer, RECEIVER, T0, patience_left=True)
    assert isinstance(verdict, Forward)
    event = verdict.event
    assert (event["task_type"], event["status"], event["succeeded"], event["started_at"]) == (
        "Procedure", "FINISH", True, "2019-02-21T08:27:43Z")
    assert json.dumps(event["detail"]) == json.dumps({k: v for k, v in answer.items() if k != "RequestId"})


# --- any answer: a TaskState or the clear error, nothing else -------------------------------------------


def legacy_task_state(call: DescribeCall, answer: dict[str, Any]) -> TaskState:
    """The hand-written reader reconcile.py had before the schemas, as the oracle of their semantics."""
    def error_code(value: Any) -> str | None:
        return None if value in (None, "", 0, "0") else str(value)

    if call.service == "ams":
        status = answer.get("Status")
        failed = status in FAILED_STATUSES
        read = state(task_type=answer.get("Type"), status=status,
                     error_code=error_code(answer.get("ErrorType")) if failed else None,
                     error_message=(answer.get("ErrorDescription") or None) if failed else None,
                     created_at=answer.get("CreatedAt"),
                     finished_at=answer.get("UpdatedAt") if status in FINAL_STATUSES["ams"] else None,
                     knows_session=False)
    elif call.service == "vod":
        candidate = answer.get(f"{answer.get('TaskType') or ''}Task")
        task = candidate if isinstance(candidate, dict) else next(
            (v for k, v in answer.items() if k.endswith("Task") and isinstance(v, dict) and v.get("TaskId")), {})
        read = state(task_type=answer.get("TaskType"), status=answer.get("Status"),
                     error_code=error_code(task.get("ErrCode")) or error_code(task.get("ErrCodeExt")),
                     error_message=task.get("Message") or None, session_id=task.get("SessionId"),
                     session_context=task.get("SessionContext"), created_at=answer.get("CreateTime"),
                     started_at=answer.get("BeginProcessTime"), finished_at=answer.get("FinishTime"),
                     knows_session="SessionId" in task)
    elif call.action == "DescribeImageTaskDetail":
        read = state(task_type=answer.get("TaskType"), status=answer.get("Status"),
                     error_code=error_code(answer.get("ErrCode")) or (answer.get("ErrMsg") or None),
                     error_message=answer.get("Message") or None, created_at=answer.get("CreateTime"),
                     finished_at=answer.get("FinishTime"), knows_session=False)
    else:
        # (The old reader took a task type it did not know for the field "", an answer's key no one sends.)
        field = MPS_TASK_FIELDS.get(answer.get("TaskType") or "")
        task = (answer.get(field) if field else None) or {}
        read = state(task_type=answer.get("TaskType"), status=answer.get("Status"),
                     error_code=error_code(task.get("ErrCode")), error_message=task.get("Message") or None,
                     session_id=answer.get("SessionId"), session_context=answer.get("SessionContext"),
                     notify_config=answer.get("TaskNotifyConfig"), created_at=answer.get("CreateTime"),
                     started_at=answer.get("BeginProcessTime"), finished_at=answer.get("FinishTime"))
    return TaskState(**{**read.__dict__, "created_at": read.created_at or None,
                        "started_at": read.started_at or None, "finished_at": read.finished_at or None})


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(
    ["", "0", "FINISH", "ERROR", "URL", "WorkflowTask", "Procedure", "2026-01-01T00:00:00Z"]) | st.text(max_size=5)
JSONISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=5), inner, max_size=3), max_leaves=8)
CODE_KEYS = {"ErrCode", "ErrCodeExt", "ErrorType"}
OBJECT_KEYS = {"TaskNotifyConfig", "ProcedureTask", "OtherTask", *MPS_TASK_FIELDS.values()}
STRING_KEYS = {"TaskType", "Status", "ErrMsg", "Message", "SessionId", "SessionContext", "NotifyType", "NotifyUrl",
               "TaskId", "CreateTime", "BeginProcessTime", "FinishTime", "Type", "ErrorDescription", "CreatedAt",
               "UpdatedAt"}
KNOWN_KEYS = sorted(CODE_KEYS | OBJECT_KEYS | STRING_KEYS | set(MPS_TASK_FIELDS))
KEYS = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6)
# What fits under a known key, so that many answers load.
STRINGS = st.none() | st.sampled_from(
    ["", "0", "FINISH", "ERROR", "CANCELLED", "PROCESSING", "URL", "WorkflowTask", "EditMediaTask", "ScheduleTask",
     "ExtractBlindWatermark", "Procedure", "Other", "s-1", "2026-01-01T00:00:00Z", "http://xxxx.com/v2/push"])
CODES = st.none() | st.integers(-1, 70000) | st.sampled_from(["", "0", "70000", "InvalidInput"])


def fitting(key: str, depth: int = 0) -> st.SearchStrategy:
    if key in CODE_KEYS:
        return CODES
    if key in OBJECT_KEYS and depth == 0:
        return st.none() | st.fixed_dictionaries({}, optional={k: fitting(k, 1) for k in KNOWN_KEYS})
    return STRINGS


# Objects shaped like answers: the known keys holding what fits, what does not (any JSON-ish value), or
# objects of known keys; and keys no schema knows.
VALUES = STRINGS | CODES | JSONISH
INNER = st.fixed_dictionaries({}, optional=dict.fromkeys(KNOWN_KEYS, VALUES))
OBJECTS = st.builds(lambda known, other: {**other, **known},
                    st.fixed_dictionaries({}, optional=dict.fromkeys(KNOWN_KEYS, INNER | VALUES)),
                    st.dictionaries(KEYS, VALUES | INNER, max_size=3))
# Answers that mostly fit: what fits under the known keys, anything under the others.
FITTING_OBJECTS = st.builds(lambda known, other: {**other, **known},
                            st.fixed_dictionaries({}, optional={key: fitting(key) for key in KNOWN_KEYS}),
                            st.dictionaries(st.text(max_size=6), VALUES, max_size=3))
ANSWERS = OBJECTS | FITTING_OBJECTS | JSONISH


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(DESCRIBE_SCHEMAS)), answer=ANSWERS)
def test_any_answer_loads_to_todays_task_state_or_raises_only_the_clear_error(key, answer):
    service, action = key
    raw = copy.deepcopy(answer)
    try:
        loaded = task_state_of(service, action, answer)
    except UnreadableAnswer as error:
        assert str(error).startswith(f"the {service}:{action} answer does not fit its schema: ")
        assert error.messages
        return
    finally:
        assert json.dumps(answer, allow_nan=True) == json.dumps(raw, allow_nan=True)  # reading changes nothing
    assert isinstance(loaded, TaskState)
    assert all(value is None or isinstance(value, str) for value in (
        loaded.task_type, loaded.status, loaded.error_code, loaded.error_message, loaded.session_id,
        loaded.session_context, loaded.created_at, loaded.started_at, loaded.finished_at))
    assert loaded.notify_config is None or isinstance(loaded.notify_config, dict)
    assert loaded == legacy_task_state(DescribeCall(service, action, {}), answer)
