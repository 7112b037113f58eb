"""Reconciliation rules on the seed pages' real Describe answers: routing, checks, the event."""

from __future__ import annotations

import json

import jsonschema
import pytest

from receiver.callbacks import extract_record
from receiver.reconcile import (
    NOTIFY_CONFIG_MISMATCH,
    SESSION_MISMATCH,
    DescribeCall,
    Forward,
    LookAgain,
    Reject,
    describe_call,
    is_mps_image_task,
    judge,
    redact,
    unreconciled_event,
)
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
    assert isinstance(judge(wf, call, answer, RECEIVER, T0, patience_left=True), LookAgain)
    late = judge(wf, call, answer, RECEIVER, T0, patience_left=False)
    assert isinstance(late, Forward) and late.event["status"] == "PROCESSING"
    assert isinstance(judge(rec, describe_call(rec), answer, RECEIVER, T0, True), Forward)


def test_redact_leaves_empty_keys_and_other_queries():
    value = {"TaskNotifyConfig": {"NotifyKey": "", "NotifyUrl": "https://h/p?a=1&token=s3cret"}}
    assert redact(value) == {"TaskNotifyConfig": {"NotifyKey": "", "NotifyUrl": "https://h/p?a=1&token=***"}}


def test_published_json_schema_matches_the_marshmallow_schema():
    assert JSON_SCHEMA_PATH.read_text() == render_json_schema(), "run: python -m schemas.event"
