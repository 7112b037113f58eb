"""Reconciliation rules on the seed pages' real Describe answers: routing, checks, the event."""

from __future__ import annotations

import json

import jsonschema
import pytest

from receiver.events import (
    event_id,
    redact,
    unreconciled_event,
)
from receiver.reconcile import (
    EVENT_TYPE_MISMATCH,
    NOTIFY_CONFIG_MISMATCH,
    SESSION_MISMATCH,
    UNCONFIRMED,
    UNKNOWN_FILE,
    Forward,
    LookAgain,
    Reject,
    describe_call,
    event_type_fits,
    is_mps_image_task,
    judge,
    judge_file_event,
)
from receiver.records import extract_record
from receiver.tencentcloud import DescribeCall
from schemas.callbacks import CALLBACK_SCHEMAS
from schemas.event import JSON_SCHEMA_PATH, NormalizedEventSchema, render_json_schema
from tests import payloads

RECEIVER = "http://xxxx.com/v2/push"  # seed 002 notifies http://xxxx.com/v2/push/mps_test?token=...
T0 = 1_800_000_000.0


def record(source: str, body: dict):
    valid = CALLBACK_SCHEMAS[source]().load(body)
    return extract_record(source, valid, json.dumps(body).encode(), T0)


def valid_event(event: dict) -> dict:
    NormalizedEventSchema().load(event)
    jsonschema.validate(event, json.loads(JSON_SCHEMA_PATH.read_text()))
    return event


def batch_answer() -> dict:
    answer = payloads.seed_response("seed002_mps_describe_batch_task_detail_example1")
    answer["TaskNotifyConfig"]["NotifyUrl"] = "http://xxxx.com/v2/push/callbacks/mps?token=73YcsZyP"
    answer["TaskNotifyConfig"]["NotifyKey"] = "the-notify-key"
    return answer


# --- routing (SPEC 6's table) ---------------------------------------------------------


@pytest.mark.parametrize("event_type, field, task_id, action", [
    ("WorkflowTask", "WorkflowTaskEvent", "2500000000-WorkflowTask-0123abcd", "DescribeTaskDetail"),
    ("EditMediaTask", "EditMediaTaskEvent", "2500000000-EditMediaTask-0123abcd", "DescribeTaskDetail"),
    ("ScheduleTask", "ScheduleTaskEvent", "2500000000-ScheduleTask-0123abcd", "DescribeTaskDetail"),
    ("ExtractBlindWatermark", "ExtractBlindWatermarkTask", "2500000000-ExtractBlindWatermark-01ab",
     "DescribeTaskDetail"),
    # ProcessImage task ids are a bare 64-character token (seed 004)
    ("WorkflowTask", "WorkflowTaskEvent", "3pg2p4jEfbFHYo2rgB0Kzl0esg4NeBItcZyllxO4HNJXdNeRUhk9GjDMjCj1auPv",
     "DescribeImageTaskDetail"),
])
def test_mps_routing(event_type, field, task_id, action):
    call = describe_call(record("mps", {"EventType": event_type, field: {"TaskId": task_id}}))
    assert call == DescribeCall("mps", action, {"TaskId": task_id})


def test_image_task_recognition():
    assert is_mps_image_task("3pg2p4jEfbFHYo2rgB0Kzl0esg4NeBItcZyllxO4HNJXdNeRUhk9GjDMjCj1auPv")
    assert not is_mps_image_task("24000089-WorkflowTask-0723542d0c164c958ba116874fa9b0c4")


def test_batch_routing_with_and_without_task_id():
    assert describe_call(record("mps", payloads.mps_batch_from_seed())).action == "DescribeBatchTaskDetail"
    assert describe_call(record("mps", payloads.mps_batch_from_seed(with_task_id=False))) is None


def test_vod_and_ams_routing():
    vod = describe_call(record("vod", payloads.vod_from_seed(1)), vod_subapp_id=1500000001)
    assert (vod.service, vod.action, vod.params["SubAppId"]) == ("vod", "DescribeTaskDetail", 1500000001)
    assert describe_call(record("vod", payloads.vod_new_file_upload())) is None
    ams = describe_call(record("ams", payloads.ams_from_seed()))
    assert (ams.service, ams.action) == ("ams", "DescribeTaskDetail")


# --- the event ------------------------------------------------------------------------


def test_batch_event_from_seed_002():
    answer = batch_answer()
    rec = record("mps", payloads.mps_batch_from_seed())
    verdict = judge(rec, describe_call(rec), answer, RECEIVER, T0 + 5, patience_left=True)
    assert isinstance(verdict, Forward)
    event = valid_event(verdict.event)
    assert event["task_id"] == answer["TaskId"] and event["status"] == "FINISH" and event["succeeded"] is True
    assert (event["session_id"], event["session_context"]) == ("qwer123", "asdzxcs")
    assert event["reconciled_with"] == "mps:DescribeBatchTaskDetail"
    assert event["finished_at"] == "2025-05-17T07:15:36Z" and event["received_at"].startswith("2027-01-15T")
    detail = event["detail"]
    assert "RequestId" not in detail
    assert detail["TaskNotifyConfig"]["NotifyKey"] == "***"
    assert detail["TaskNotifyConfig"]["NotifyUrl"] == "http://xxxx.com/v2/push/callbacks/mps?token=***"
    # nothing else added, dropped or re-typed
    answer.pop("RequestId")
    answer["TaskNotifyConfig"].update(NotifyKey="***", NotifyUrl=detail["TaskNotifyConfig"]["NotifyUrl"])
    assert detail == answer


def test_body_is_never_trusted():
    body = payloads.mps_batch_from_seed()
    body["BatchTaskEvent"]["Metadatas"] = [{"forged": True}]
    rec = record("mps", body)
    event = judge(rec, describe_call(rec), batch_answer(), RECEIVER, T0, True).event
    assert event["detail"]["BatchTaskResult"] == batch_answer()["BatchTaskResult"]


def test_event_id_is_one_per_state_of_a_task():
    answer = batch_answer()
    first = record("mps", payloads.mps_batch_from_seed())
    again = record("mps", {**payloads.mps_batch_from_seed(), "Timestamp": 5})
    a = judge(first, describe_call(first), answer, RECEIVER, T0, True).event
    b = judge(again, describe_call(again), answer, RECEIVER, T0 + 60, True).event
    assert a["event_id"] == b["event_id"]
    answer["Status"] = "PROCESSING"
    c = judge(first, describe_call(first), answer, RECEIVER, T0, False).event
    assert c["event_id"] != a["event_id"] and c["succeeded"] is None and c["finished_at"] is None


def test_vod_procedure_event_from_seed_001():
    answer = payloads.seed_response("seed001_vod_describe_task_detail_example2")
    rec = record("vod", payloads.vod_from_seed(1))
    event = valid_event(judge(rec, describe_call(rec), answer, RECEIVER, T0, True).event)
    assert (event["task_type"], event["status"], event["succeeded"]) == ("Procedure", "FINISH", True)
    assert event["event_type"] == "ProcedureStateChanged"
    assert event["started_at"] == "2019-02-21T08:27:43Z"


def test_ams_event_and_a_failed_moderation():
    answer = {**payloads.ams_from_seed(), "RequestId": "r"}
    rec = record("ams", payloads.ams_from_seed())
    event = valid_event(judge(rec, describe_call(rec), answer, RECEIVER, T0, True).event)
    assert (event["status"], event["succeeded"], event["session_id"]) == ("FINISH", True, None)
    answer.update(Status="ERROR", ErrorType="DOWNLOAD_FAILED", ErrorDescription="file not found")
    failed = valid_event(judge(rec, describe_call(rec), answer, RECEIVER, T0, False).event)
    assert (failed["succeeded"], failed["error_code"], failed["error_message"]) == (
        False, "DOWNLOAD_FAILED", "file not found")


def test_mps_image_event_from_seed_000():
    answer = payloads.seed_response("seed000_mps_describe_image_task_detail_example1")
    rec = record("mps", {"EventType": "WorkflowTask", "WorkflowTaskEvent": {
        "TaskId": "3pg2p4jEfbFHYo2rgB0Kzl0esg4NeBItcZyllxO4HNJXdNeRUhk9GjDMjCj1auPv", "Status": "FINISH"},
        "SessionId": "s-any"})
    event = valid_event(judge(rec, describe_call(rec), answer, RECEIVER, T0, True).event)
    assert event["reconciled_with"] == "mps:DescribeImageTaskDetail" and event["succeeded"] is True


def test_unreconciled_vod_file_event():
    rec = record("vod", {**payloads.vod_new_file_upload(), "Sign": "x", "T": 1})
    event = valid_event(unreconciled_event(rec, json.loads(rec.body)))
    assert event["reconciled_with"] is None and event["task_id"] is None
    assert "Sign" not in event["detail"] and event["detail"]["FileUploadEvent"]["FileId"]


# --- checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    {"NotifyType": "CMQ", "NotifyUrl": "http://xxxx.com/v2/push/callbacks/mps"},
    {"NotifyType": "URL", "NotifyUrl": "http://elsewhere.example/v2/push/callbacks/mps"},
    {"NotifyType": "URL", "NotifyUrl": "https://xxxx.com/v2/push/callbacks/mps"},
    {"NotifyType": "URL", "NotifyUrl": "http://xxxx.com/v2/push/callbacks/vod"},
])
def test_notify_config_mismatch(config):
    answer = batch_answer()
    answer["TaskNotifyConfig"].update(config)
    rec = record("mps", payloads.mps_batch_from_seed())
    verdict = judge(rec, describe_call(rec), answer, RECEIVER, T0, True)
    assert isinstance(verdict, Reject) and verdict.reason == NOTIFY_CONFIG_MISMATCH


@pytest.mark.parametrize("change", [{"SessionId": "other"}, {"SessionContext": "other"}])
def test_session_mismatch(change):
    rec = record("mps", {**payloads.mps_batch_from_seed(), **change})
    verdict = judge(rec, describe_call(rec), batch_answer(), RECEIVER, T0, True)
    assert isinstance(verdict, Reject) and verdict.reason == SESSION_MISMATCH


def test_lagging_answer_is_asked_again_then_forwarded_as_is():
    answer = batch_answer()
    answer["Status"] = "PROCESSING"
    rec = record("mps", payloads.mps_batch_from_seed())  # claims nothing; use a workflow claiming FINISH
    wf = record("mps", payloads.mps_workflow(task_id="2500000000-WorkflowTask-ab", session_id="qwer123",
                                             session_context="asdzxcs"))
    call = describe_call(wf)
    workflow_answer = {**answer, "TaskType": "WorkflowTask"}
    assert isinstance(judge(wf, call, workflow_answer, RECEIVER, T0, patience_left=True), LookAgain)
    late = judge(wf, call, workflow_answer, RECEIVER, T0, patience_left=False)
    assert isinstance(late, Forward) and late.event["status"] == "PROCESSING"
    assert not late.confirmed  # it claimed FINISH: a later copy is reconciled afresh
    assert isinstance(judge(rec, describe_call(rec), answer, RECEIVER, T0, True), Forward)


def test_redact_leaves_empty_keys_and_other_queries():
    value = {"TaskNotifyConfig": {"NotifyKey": "", "NotifyUrl": "https://h/p?a=1&token=s3cret"}}
    assert redact(value) == {"TaskNotifyConfig": {"NotifyKey": "", "NotifyUrl": "https://h/p?a=1&token=***"}}


def test_published_json_schema_matches_the_marshmallow_schema():
    assert JSON_SCHEMA_PATH.read_text() == render_json_schema(), "run: python -m schemas.event"


# --- issue 9: secrets at any depth, event types, file events ------------------------------------


def test_secrets_are_redacted_at_any_depth_and_nothing_else_changes():
    secrets = {"S3SecretId": "AKIAEXAMPLE", "S3SecretKey": "s3-secret", "NotifyKey": "nk", "SecretKey": "sk",
               "S3Bucket": "bucket", "EmptySecretKey": ""}
    answer = {"InputInfo": {"Type": "AWS-S3", "S3InputInfo": dict(secrets)},
              "TaskNotifyConfig": {"AwsSQS": dict(secrets), "NotifyUrl": "https://h/cb?token=t0k&x=1"}}
    deep: dict = {"leaf": dict(secrets)}
    for _ in range(5000):  # deeper than the interpreter's stack
        deep = {"Nested": [deep]}
    answer["Deep"] = deep
    redacted = redact(answer)
    for holder in (redacted["InputInfo"]["S3InputInfo"], redacted["TaskNotifyConfig"]["AwsSQS"]):
        assert holder == {"S3SecretId": "***", "S3SecretKey": "***", "NotifyKey": "***", "SecretKey": "***",
                          "S3Bucket": "bucket", "EmptySecretKey": ""}
    assert redacted["TaskNotifyConfig"]["NotifyUrl"] == "https://h/cb?token=***&x=1"
    node = redacted["Deep"]
    for _ in range(5000):
        node = node["Nested"][0]
    assert node["leaf"]["S3SecretKey"] == "***" and answer["InputInfo"]["S3InputInfo"]["S3SecretKey"] == "s3-secret"


@pytest.mark.parametrize("source, event_type, task_type, fits", [
    ("vod", "ProcedureStateChanged", "Procedure", True),
    ("vod", "TranscodeComplete", "Procedure", False),
    ("vod", "EditMediaComplete", "EditMedia", True),
    ("vod", "PullComplete", "PullUpload", True),
    ("vod", "CreateSnapshotByTimeOffsetComplete", "SnapshotByTimeOffset", True),
    ("vod", "RemoveWatermark", "RemoveWatermarkTask", True),
    ("vod", "AigcImageTaskComplete", "AigcImageTask", True),
    ("vod", "ProcedureStateChanged", "EditMedia", False),
    ("vod", "ProcedureComplete", "Procedure", False),  # a look-alike of the known event
    ("vod", "FutureThingComplete", "FutureThing", True),  # a task type newer than our table
    ("vod", "OtherThingComplete", "FutureThing", False),
    ("vod", "ProcedureStateChanged", None, True),  # the answer says nothing against it
    ("mps", "WorkflowTask", "WorkflowTask", True),
    ("mps", "BatchTask", "WorkflowTask", False),
    ("mps", "ExtractBlindWatermark", "ExtractBlindWatermarkTask", True),
    ("mps", "EditMediaTask", "ScheduleTask", False),
])
def test_event_type_must_fit_the_authoritative_task_type(source, event_type, task_type, fits):
    assert event_type_fits(source, event_type, task_type) is fits


def test_a_forged_transcode_complete_for_a_procedure_task_is_rejected_and_ids_differ_by_event_type():
    seed = payloads.seed_response("seed001_vod_describe_task_detail_example2")  # a Procedure task
    task = seed["ProcedureTask"]
    forged = record("vod", {"EventType": "TranscodeComplete", "TranscodeCompleteEvent": {
        "TaskId": task["TaskId"], "Status": "FINISH", "SessionId": task.get("SessionId"),
        "SessionContext": task.get("SessionContext")}})
    verdict = judge(forged, describe_call(forged), seed, RECEIVER, T0, True)
    assert isinstance(verdict, Reject) and verdict.reason == EVENT_TYPE_MISMATCH
    ids = {event_id("vod", event_type, "t", "FINISH") for event_type in ("TranscodeComplete", "ProcedureStateChanged")}
    assert len(ids) == 2


def test_file_events_are_confirmed_by_describe_media_infos():
    upload = record("vod", payloads.vod_new_file_upload("111"))
    info = {"FileId": "111", "BasicInfo": {"Name": "a", "CreateTime": "2026-01-01T00:00:00Z"}}
    verdict = judge_file_event(upload, ["111"], {"111": info}, set(), T0, patience_left=True)
    assert isinstance(verdict, Forward)
    event = valid_event(verdict.event)
    assert event["detail"] == info and event["reconciled_with"] == "vod:DescribeMediaInfos"
    assert event["task_id"] is None and event["created_at"] == "2026-01-01T00:00:00Z"
    assert isinstance(judge_file_event(upload, ["111"], {}, {"111"}, T0, patience_left=True), LookAgain)
    unknown = judge_file_event(upload, ["111"], {}, {"111"}, T0, patience_left=False)
    assert isinstance(unknown, Reject) and unknown.reason == UNKNOWN_FILE

    deleted = record("vod", payloads.vod_file_deleted(("111", "222")))
    gone = judge_file_event(deleted, ["111", "222"], {}, {"111", "222"}, T0, patience_left=True)
    assert isinstance(gone, Forward) and gone.event["detail"] == {"NotExistFileIdSet": ["111", "222"]}
    half = judge_file_event(deleted, ["111", "222"], {"222": {"FileId": "222"}}, {"111"}, T0, patience_left=False)
    assert isinstance(half, Reject) and half.reason == UNCONFIRMED
