"""Live-stream notifications and image tasks with media-task ids, reconciled (SPEC 5-7), as pure functions."""

from __future__ import annotations

import copy
import dataclasses
import json

import jsonschema
import pytest

from receiver.reconcile import (
    EVENT_TYPE_MISMATCH,
    NOTIFY_CONFIG_MISMATCH,
    SESSION_MISMATCH,
    Forward,
    Reject,
    describe_call,
    event_type_fits,
    image_task_call,
    judge,
)
from receiver.records import ORIGIN_SWEEPER, extract_record, is_live_stream_event_type, is_live_stream_record
from receiver.tencentcloud import DescribeCall
from schemas.callbacks import MPS_EVENT_FIELDS, callback_schema
from schemas.event import JSON_SCHEMA_PATH, NormalizedEventSchema
from tests.realworld import load

RECEIVER = "https://receiver.example.com"
T0 = 1_800_000_000.0
TASK_ID = "2459149217-procedure-live-xxx51da009t0"


def notification(**changes) -> dict:
    body = copy.deepcopy(load("mps_cb_livestream_aireviewresult.json").body)
    body.update(changes)
    return body


def record_of(body: dict):
    valid = callback_schema("mps", body)().load(body)
    return extract_record("mps", valid, json.dumps(body).encode(), T0)


def live_task_answer(task_type: str = "LiveStreamProcessTask", notify_url: str = f"{RECEIVER}/callbacks/mps",
                     session_id: str = "", status: str = "PROCESSING") -> dict:
    return {
        "TaskType": task_type, "Status": status, "CreateTime": "2026-12-01T10:00:00Z",
        "BeginProcessTime": "2026-12-01T10:00:01Z", "FinishTime": "",
        "LiveStreamProcessTask": {"TaskId": TASK_ID, "Status": status, "ErrCode": 0, "Message": "",
                                  "Url": "rtmp://live.example.com/app/stream"},
        "TaskNotifyConfig": {"NotifyType": "URL", "NotifyUrl": f"{notify_url}?token=secret-token",
                             "NotifyKey": "the-notify-key"},
        "WorkflowTask": None, "EditMediaTask": None, "ScheduleTask": None, "LiveScheduleTask": None,
        "SessionId": session_id, "SessionContext": "", "RequestId": "r-1",
    }


def judged(body: dict, answer: dict | None = None):
    record = record_of(body)
    call = describe_call(record)
    return record, call, judge(record, call, answer or live_task_answer(), RECEIVER, T0 + 1, patience_left=True)


def test_a_live_stream_notification_is_a_record_of_its_task_and_its_notification_type():
    record = record_of(notification())
    assert (record.source, record.event_type, record.task_id) == ("mps", "AiReviewResult", TASK_ID)
    assert record.claimed_status is None  # a notification claims no status: nothing to wait for
    assert describe_call(record) == DescribeCall("mps", "DescribeTaskDetail", {"TaskId": TASK_ID})


def test_one_rule_says_which_event_types_are_live_stream_notifications():
    """The record's rule and the event type check agree: a notification type fits a live-stream task only."""
    record = record_of(notification())
    assert is_live_stream_event_type("mps", record.event_type) and is_live_stream_record(record)
    assert not is_live_stream_record(dataclasses.replace(record, origin=ORIGIN_SWEEPER))
    assert event_type_fits("mps", record.event_type, "LiveStreamProcessTask")
    assert not event_type_fits("mps", record.event_type, "WorkflowTask")
    for event_type in MPS_EVENT_FIELDS:  # task events: never a notification, never about a live stream
        assert not is_live_stream_event_type("mps", event_type)
        assert not event_type_fits("mps", event_type, "LiveStreamProcessTask")
    assert not is_live_stream_event_type("vod", record.event_type)  # only MPS sends live-stream notifications


def test_a_confirmed_notification_is_forwarded_with_its_result_and_a_valid_event():
    _, call, verdict = judged(notification())
    assert isinstance(verdict, Forward)
    event = verdict.event
    assert event["event_type"] == "AiReviewResult" and event["task_type"] == "LiveStreamProcessTask"
    assert event["status"] == "PROCESSING" and event["succeeded"] is None
    assert event["reconciled_with"] == "mps:DescribeTaskDetail"
    assert event["notification"] == load("mps_cb_livestream_aireviewresult.json").body["AiReviewResultInfo"]
    assert "RequestId" not in event["detail"]
    assert event["detail"]["TaskNotifyConfig"]["NotifyKey"] == "***"
    assert "secret-token" not in json.dumps(event)
    NormalizedEventSchema().load(event)
    jsonschema.validate(event, json.loads(JSON_SCHEMA_PATH.read_text()))


def test_each_notification_is_its_own_event_and_a_copy_is_the_same_one():
    review = judged(notification())[2].event
    other_review = judged(notification(AiReviewResultInfo={"ResultSet": []}))[2].event
    eof = judged(notification(NotificationType="ProcessEof", AiReviewResultInfo=None,
                              ProcessEofInfo={"ErrCode": 0, "Message": ""}))[2].event
    copy_of_review = judged({**notification(), "Timestamp": 1, "Sign": "x"})[2].event
    assert len({review["event_id"], other_review["event_id"], eof["event_id"]}) == 3
    assert copy_of_review["event_id"] == review["event_id"]
    assert eof["notification"] == {"ErrCode": 0, "Message": ""}


def test_task_events_keep_no_notification_field():
    body = copy.deepcopy(load("mps_cb_workflowtask_parsenotification_2025.json").body)
    record = extract_record("mps", callback_schema("mps", body)().load(body), json.dumps(body).encode(), T0)
    answer = copy.deepcopy(load("mps_describe_taskdetail_workflowtask.json").body["Response"])
    answer.update(SessionId=body.get("SessionId", ""), SessionContext=body.get("SessionContext", ""))
    verdict = judge(record, describe_call(record), answer, RECEIVER, T0, patience_left=False)
    assert isinstance(verdict, Forward) and "notification" not in verdict.event


@pytest.mark.parametrize(("answer", "reason"), [
    (live_task_answer(task_type="WorkflowTask"), EVENT_TYPE_MISMATCH),
    (live_task_answer(notify_url="https://elsewhere.example.com/callbacks/mps"), NOTIFY_CONFIG_MISMATCH),
    (live_task_answer(session_id="another-session"), SESSION_MISMATCH),
])
def test_a_notification_the_task_does_not_confirm_is_rejected(answer, reason):
    verdict = judged(notification(), answer)[2]
    assert isinstance(verdict, Reject) and verdict.reason == reason


def test_a_workflow_task_event_for_a_live_stream_task_is_rejected():
    body = copy.deepcopy(load("mps_cb_workflowtask_parsenotification_2025.json").body)
    body["WorkflowTaskEvent"]["TaskId"] = TASK_ID
    record = extract_record("mps", callback_schema("mps", body)().load(body), json.dumps(body).encode(), T0)
    answer = live_task_answer(session_id=body.get("SessionId") or "")
    answer["SessionContext"] = body.get("SessionContext") or ""
    verdict = judge(record, describe_call(record), answer, RECEIVER, T0, patience_left=False)
    assert isinstance(verdict, Reject) and verdict.reason == EVENT_TYPE_MISMATCH


def test_an_image_task_with_a_media_task_id_is_asked_for_where_it_is_known():
    body = copy.deepcopy(load("mps_cb_workflowtask_parsenotification_2025.json").body)
    image_id = "24000089-WorkflowTask-0723542d0c164c958ba116874fa9b0c4"
    body["WorkflowTaskEvent"]["TaskId"] = image_id
    record = extract_record("mps", callback_schema("mps", body)().load(body), json.dumps(body).encode(), T0)
    first = describe_call(record)
    assert first.action == "DescribeTaskDetail"
    assert image_task_call(first, {"WorkflowTask"}) == DescribeCall(
        "mps", "DescribeImageTaskDetail", {"TaskId": image_id})
    # Only a WorkflowTask callback can be about an image task; other calls have no second place to look.
    assert image_task_call(first, {"EditMediaTask"}) is None
    assert image_task_call(DescribeCall("mps", "DescribeBatchTaskDetail", {"TaskId": image_id}),
                           {"WorkflowTask"}) is None
    # Once DescribeImageTaskDetail answered for it, its next callbacks go there first.
    assert describe_call(record, image_tasks={image_id}).action == "DescribeImageTaskDetail"
