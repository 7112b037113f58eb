"""Every accepted real callback gives exactly one event through the emulator and a real worker (docs/realworld.md).

The emulator answers each callback's Describe call with the matching answer
Tencent Cloud publishes, as published; the event's `detail` is that answer.
Each test gives its task an id of its own (the published ids repeat across
examples), everything else of the bodies as published.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest

from tests import realworld
from tests.pipeline_fixtures import Pipeline
from tests.realworld import DOOR_ANSWERS, RealPayload, load
from tests.servers import wait_until

# Callback file -> the Describe answer the emulator serves for its task (None: the emulator's own state).
MATCHING_ANSWER: dict[str, str | None] = {
    "mps_cb_workflowtask_parsenotification_2020.json": "mps_describe_taskdetail_workflowtask.json",
    "mps_cb_workflowtask_parsenotification_2025.json": "mps_describe_taskdetail_workflowtask.json",
    "vod_cb_editmediacomplete_pullevents_2023.json": "vod_describe_taskdetail_editmedia.json",
    "vod_cb_procedurestatechanged_pullevents_2025.json": "vod_describe_taskdetail_procedure.json",
    "vod_cb_procedurestatechanged_v2procedure_pullevents_2023.json": "vod_describe_taskdetail_procedure.json",
    "ams_cb_signature_example.json": "ams_describe_taskdetail.json",
    "ams_cb_describetaskdetail_shape_2021.json": "ams_describe_taskdetail.json",
    "ams_cb_describetaskdetail_shape_2024.json": "ams_describe_taskdetail.json",
    "mps_cb_livestream_aireviewresult.json": None,  # a ProcessLiveStream task of the emulator
    "vod_cb_newfileupload_pullevents_2023.json": None,  # a file uploaded to the emulator
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    yield from Pipeline(tmp_path_factory.mktemp("realworld")).running_with_worker()


def task_id_of(payload: RealPayload) -> str:
    body = payload.body
    if payload.product == "ams" or "NotificationType" in body:
        return body["TaskId"]
    for value in body.values():
        if isinstance(value, dict) and value.get("TaskId"):
            return value["TaskId"]
    raise AssertionError(f"{payload.name} names no task")


def renamed(payload: RealPayload, old: str, new: str) -> RealPayload:
    """The same payload about another task or file: every occurrence of its id replaced."""
    body = json.loads(json.dumps(payload.body).replace(old, new))
    raw = payload.raw_body.replace(old, new) if payload.raw_body is not None else None
    return RealPayload(payload.name, payload.product, payload.kind, payload.action, body, raw)


def install(pipeline: Pipeline, service: str, action: str, task_id: str, response: dict[str, Any]) -> None:
    pipeline.emulator.admin("answers", {"service": service, "action": action, "task_id": task_id,
                                        "response": response})


def published_response(name: str) -> dict[str, Any]:
    return copy.deepcopy(load(name).body["Response"])


def without_request_id(response: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in response.items() if key != "RequestId"}


def only_event(pipeline: Pipeline, payload: RealPayload, subject: str, by_file: bool = False) -> dict[str, Any]:
    """Post the callback and a retry of it; exactly one event comes out."""
    first = realworld.post_signed(pipeline.receiver.url, payload)
    assert (first.status_code, first.json()["status"]) == DOOR_ANSWERS[payload.name], first.text
    assert realworld.post_signed(pipeline.receiver.url, payload).json()["status"] == "duplicate"

    def mine(event: dict[str, Any]) -> bool:
        return (event["detail"] or {}).get("FileId") == subject if by_file else event["task_id"] == subject

    [event] = wait_until(lambda: [e for e in pipeline.events() if mine(e)], 30, f"the event of {payload.name}")
    pipeline.wait_settled(id=first.json()["id"])
    assert [e for e in pipeline.events() if mine(e)] == [event], "one event, not two"
    return event


@pytest.mark.parametrize("name", [name for name, answer in MATCHING_ANSWER.items() if answer])
def test_a_real_task_callback_gives_one_event_whose_detail_is_the_published_answer(pipeline, name):
    payload = load(name)
    original = task_id_of(payload)
    task_id = f"{original}-{uuid.uuid4().hex[:8]}"
    payload = renamed(payload, original, task_id)
    answer_file = load(MATCHING_ANSWER[name])
    response = published_response(answer_file.name)
    install(pipeline, payload.product, answer_file.action, task_id, response)
    event = only_event(pipeline, payload, task_id)
    assert event["reconciled_with"] == f"{payload.product}:{answer_file.action}"
    assert event["status"] == response["Status"] and event["source"] == payload.product
    assert event["detail"] == without_request_id(response)


def test_a_real_new_file_upload_gives_one_event_with_the_files_media_info(pipeline):
    vod = pipeline.emulator.vod()
    applied = vod.call_json("ApplyUpload", {"MediaType": "mp4", "MediaName": "emulator:no-callback"})["Response"]
    file_id = vod.call_json("CommitUpload", {"VodSessionKey": applied["VodSessionKey"]})["Response"]["FileId"]
    payload = load("vod_cb_newfileupload_pullevents_2023.json")
    payload = renamed(payload, payload.body["FileUploadEvent"]["FileId"], file_id)
    event = only_event(pipeline, payload, file_id, by_file=True)
    [info] = vod.call_json("DescribeMediaInfos", {"FileIds": [file_id]})["Response"]["MediaInfoSet"]
    assert event["reconciled_with"] == "vod:DescribeMediaInfos" and event["task_id"] is None
    assert event["detail"] == info


def live_stream_task(pipeline: Pipeline, review: bool = True, silent: bool = True) -> str:
    url = "rtmp://live.example.com/app/" + ("emulator:no-callback" if silent else "stream")
    params: dict[str, Any] = {"Url": url, "TaskNotifyConfig": {"NotifyType": "URL",
                                                              "NotifyUrl": pipeline.notify_url["mps"],
                                                              "NotifyKey": pipeline.mps_notify()["NotifyKey"]}}
    if review:
        params["AiContentReviewTask"] = {"Definition": 10}
    return pipeline.emulator.mps().call_json("ProcessLiveStream", params)["Response"]["TaskId"]


def test_the_real_live_stream_notification_gives_one_event_with_its_result(pipeline):
    task_id = live_stream_task(pipeline)
    payload = load("mps_cb_livestream_aireviewresult.json")
    payload = renamed(payload, payload.body["TaskId"], task_id)
    event = only_event(pipeline, payload, task_id)
    assert event["event_type"] == "AiReviewResult" and event["task_type"] == "LiveStreamProcessTask"
    assert event["reconciled_with"] == "mps:DescribeTaskDetail"
    assert event["notification"] == payload.body["AiReviewResultInfo"]
    assert event["detail"]["LiveStreamProcessTask"]["TaskId"] == task_id
    assert event["detail"]["TaskNotifyConfig"]["NotifyKey"] == "***"


def test_a_live_stream_tasks_own_notifications_are_two_events(pipeline):
    """The emulator's ProcessLiveStream task posts an AiReviewResult, then a ProcessEof, signed as MPS does."""
    task_id = live_stream_task(pipeline, silent=False)
    review, eof = (wait_for_types(pipeline, task_id, {"AiReviewResult", "ProcessEof"})[i] for i in (0, 1))
    assert {review["event_type"], eof["event_type"]} == {"AiReviewResult", "ProcessEof"}
    assert review["event_id"] != eof["event_id"]


def test_two_notifications_are_two_events_and_the_same_one_twice_is_one(pipeline):
    task_id = live_stream_task(pipeline)
    review = renamed(load("mps_cb_livestream_aireviewresult.json"), "2459149217-procedure-live-xxx51da009t0",
                     task_id)
    eof_body = {**review.body, "NotificationType": "ProcessEof", "AiReviewResultInfo": None,
                "ProcessEofInfo": {"ErrCode": 0, "Message": ""}}
    eof = RealPayload("eof", "mps", "callback", "", eof_body, None)
    post = pipeline.receiver.url
    answers = [realworld.post_signed(post, p).json()["status"] for p in (review, eof, review, eof)]
    assert answers == ["accepted", "accepted", "duplicate", "duplicate"]
    events = wait_for_types(pipeline, task_id, {"AiReviewResult", "ProcessEof"})
    pipeline.wait_settled(task_id=task_id)
    events = pipeline.events_for(task_id)
    assert sorted(e["event_type"] for e in events) == ["AiReviewResult", "ProcessEof"]
    assert len({e["event_id"] for e in events}) == 2
    assert next(e for e in events if e["event_type"] == "ProcessEof")["notification"] == {"ErrCode": 0, "Message": ""}


def wait_for_types(pipeline: Pipeline, task_id: str, types: set[str]) -> list[dict[str, Any]]:
    def arrived() -> list[dict[str, Any]] | None:
        events = pipeline.events_for(task_id)
        return sorted(events, key=lambda e: e["event_type"]) if {e["event_type"] for e in events} >= types else None

    return wait_until(arrived, 30, f"{sorted(types)} events of {task_id}")


def test_an_image_task_with_a_workflow_task_id_known_only_to_describe_image_task_detail(pipeline):
    task_id = f"24000089-WorkflowTask-{uuid.uuid4().hex}"
    response = published_response("mps_describe_imagetaskdetail_2026.json")
    install(pipeline, "mps", "DescribeImageTaskDetail", task_id, response)
    body = copy.deepcopy(load("mps_cb_workflowtask_parsenotification_2025.json").body)
    body["WorkflowTaskEvent"].update(TaskId=task_id, Status=response["Status"])
    posted = realworld.post_signed(pipeline.receiver.url, RealPayload("image", "mps", "callback", "", body, None))
    assert posted.json()["status"] == "accepted"
    event = pipeline.wait_event(task_id)
    assert event["reconciled_with"] == "mps:DescribeImageTaskDetail"
    assert event["detail"] == without_request_id(response)
    pipeline.wait_settled(id=posted.json()["id"])
    assert len(pipeline.events_for(task_id)) == 1
    # DescribeTaskDetail was asked first and did not know it; then DescribeImageTaskDetail, once.
    assert [c["task_id"] for c in pipeline.calls("mps", "DescribeImageTaskDetail")].count(task_id) == 1
