"""ProcessLiveStream tasks: signed live-stream notifications while they run, LiveStreamProcessTask details."""

from __future__ import annotations

import re
import time

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.mps.v20190612 import models as mps_models

from receiver.auth import verify_mps_notification
from tests.emulator_fixtures import callback_sink, req, running_emulator
from tests.servers import wait_until

STREAM = "rtmp://live.example.com/app/stream-1"
LIVE_ID = re.compile(r"\d+-LiveStreamProcessTask-[0-9a-f]{32}")
RESULT_KEYS = ("ProcessEofInfo", "AiReviewResultInfo", "AiRecognitionResultInfo", "AiAnalysisResultInfo",
               "AiQualityControlResultInfo")


@pytest.fixture(scope="module")
def sink():
    yield from callback_sink()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    # A wide PROCESSING window, so the review result is seen while the task still runs.
    yield from running_emulator(tmp_path_factory.mktemp("emu") / "emulator.log", "--processing-after", "0.05",
                                "--finish-after", "2", "--callback-backoff", "0.05")


@pytest.fixture(autouse=True)
def _reset(emulator):
    emulator.admin("reset", {})


def start(emulator, sink, **extra) -> str:
    notify = {"NotifyType": "URL", "NotifyUrl": f"{sink.url}/live?token=t1", "NotifyKey": "live-key"}
    return emulator.mps().ProcessLiveStream(req(mps_models.ProcessLiveStreamRequest, {
        "Url": STREAM, "TaskNotifyConfig": notify, **extra})).TaskId


def describe(emulator, task_id: str) -> mps_models.DescribeTaskDetailResponse:
    return emulator.mps().DescribeTaskDetail(req(mps_models.DescribeTaskDetailRequest, {"TaskId": task_id}))


def test_a_review_task_notifies_its_result_then_the_end_of_the_stream(emulator, sink):
    task_id = start(emulator, sink, AiContentReviewTask={"Definition": 10}, SessionId="live-1",
                    SessionContext="live-ctx")
    assert LIVE_ID.fullmatch(task_id), task_id
    running = describe(emulator, task_id)
    assert running.TaskType == "LiveStreamProcessTask" and running.Status in ("WAITING", "PROCESSING")

    [review] = sink.wait_for(task_id)
    sent = time.time()
    assert describe(emulator, task_id).Status == "PROCESSING"  # the result comes while the stream runs
    [review, eof] = sink.wait_for(task_id, count=2)
    assert describe(emulator, task_id).Status == "FINISH"  # the end of the stream is told once it is over

    assert [n.body["NotificationType"] for n in (review, eof)] == ["AiReviewResult", "ProcessEof"]
    for callback in (review, eof):
        body = callback.body
        verify_mps_notification(body, ["live-key"], time.time(), 60)
        assert abs(body["Timestamp"] - (sent + 600)) < 30  # expiry: send time + 10 minutes
        with pytest.raises(Exception, match="signature"):
            verify_mps_notification(body, ["other-key"], time.time(), 60)
        assert callback.path == "/live?token=t1"
        assert (body["TaskId"], body["SessionId"], body["SessionContext"]) == (task_id, "live-1", "live-ctx")
        assert set(body) == {"NotificationType", "TaskId", *RESULT_KEYS, "SessionId", "SessionContext",
                             "Timestamp", "Sign"}
        parsed = mps_models.ParseLiveStreamProcessNotificationResponse()
        parsed._deserialize(body)
        assert parsed.TaskId == task_id and parsed.Sign == body["Sign"]
    assert review.body["AiReviewResultInfo"]["ResultSet"][0]["Type"] == "VoicePorn"
    assert all(review.body[k] is None for k in RESULT_KEYS if k != "AiReviewResultInfo")
    assert eof.body["ProcessEofInfo"] == {"ErrCode": 0, "Message": ""}
    assert all(eof.body[k] is None for k in RESULT_KEYS if k != "ProcessEofInfo")

    done = describe(emulator, task_id)
    assert (done.TaskType, done.Status, done.SessionId, done.SessionContext) == \
        ("LiveStreamProcessTask", "FINISH", "live-1", "live-ctx")
    assert done.CreateTime and done.BeginProcessTime and done.FinishTime
    live = done.LiveStreamProcessTask
    assert (live.TaskId, live.Status, live.ErrCode, live.Message, live.Url) == (task_id, "FINISH", 0, "", STREAM)
    assert done.WorkflowTask is None and done.EditMediaTask is None
    notify = done.TaskNotifyConfig
    assert (notify.NotifyType, notify.NotifyUrl, notify.NotifyKey) == ("URL", f"{sink.url}/live?token=t1",
                                                                        "live-key")
    deliveries = wait_until(lambda: len(d := [x for x in emulator.admin("stats")["callbacks"]["deliveries"]
                                              if x["task_id"] == task_id]) == 2 and d, 10, "both deliveries")
    assert [(d["status"], d["outcome"]) for d in deliveries] == [("AiReviewResult", "delivered"),
                                                                 ("ProcessEof", "delivered")]


def test_without_a_review_task_only_the_end_of_the_stream_is_notified(tmp_path, sink):
    quick = running_emulator(tmp_path / "emulator.log", "--processing-after", "0.05", "--finish-after", "0.2")
    emulator = next(quick)
    try:
        task_id = start(emulator, sink, SessionContext="emulator:fail")
        [eof] = sink.wait_for(task_id)
        verify_mps_notification(eof.body, ["live-key"], time.time(), 60)
        assert eof.body["NotificationType"] == "ProcessEof" and eof.body["ProcessEofInfo"]["ErrCode"] != 0
        done = describe(emulator, task_id)
        assert done.Status == "FINISH" and done.LiveStreamProcessTask.ErrCode == eof.body["ProcessEofInfo"]["ErrCode"]
        # nothing else arrives: the delivery log holds the one notification
        deliveries = wait_until(lambda: [d for d in emulator.admin("stats")["callbacks"]["deliveries"]
                                         if d["task_id"] == task_id], 10, "the delivery")
        assert [d["status"] for d in deliveries] == ["ProcessEof"] and len(sink.matching(task_id)) == 1
    finally:
        quick.close()


@pytest.mark.parametrize(("params", "code"), [
    ({"TaskNotifyConfig": {"NotifyType": "URL", "NotifyUrl": "http://x/"}}, "MissingParameter"),
    ({"Url": STREAM}, "MissingParameter"),
])
def test_process_live_stream_needs_a_url_and_a_notify_config(emulator, params, code):
    with pytest.raises(TencentCloudSDKException) as error:
        emulator.mps().call_json("ProcessLiveStream", params)
    assert error.value.code == code


def test_a_live_stream_task_is_not_an_image_or_batch_task(emulator, sink):
    task_id = start(emulator, sink)
    for action in ("DescribeImageTaskDetail", "DescribeBatchTaskDetail"):
        with pytest.raises(TencentCloudSDKException) as error:
            emulator.mps().call_json(action, {"TaskId": task_id})
        assert error.value.code == "ResourceNotFound"
