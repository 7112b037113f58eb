"""Task state changes become signed callbacks in each product's format, checked with the receiver's verifiers."""

from __future__ import annotations

import json
import time

import pytest
from tencentcloud.ams.v20201229 import models as ams_models
from tencentcloud.mps.v20190612 import models as mps_models
from tencentcloud.vod.v20180717 import models as vod_models

from receiver.auth import AMS_SIGNATURE_HEADER, verify_ams_callback, verify_mps_notification, verify_vod_event
from schemas.callbacks import VodEventSchema
from tests.emulator_fixtures import VOD_SIGN_KEY, callback_sink, parse_strictly, req, running_emulator, shape_errors
from tests.servers import wait_until

INPUT = {"Type": "URL", "UrlInputInfo": {"Url": "https://example.com/in.mp4"}}


@pytest.fixture(scope="module")
def sink():
    yield from callback_sink()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory, sink):
    yield from running_emulator(tmp_path_factory.mktemp("emu") / "emulator.log", "--processing-after", "0.1",
                                "--finish-after", "0.3", "--callback-backoff", "0.05",
                                "--vod-notify-url", sink.url + "/vod-default")


@pytest.fixture(autouse=True)
def _reset(emulator):
    emulator.admin("reset", {})



def mps_task(emulator, sink, mode: str, path: str = "/mps", **extra) -> str:
    notify = {"NotifyType": "URL", "NotifyMode": mode, "NotifyUrl": f"{sink.url}{path}?token=t1", "NotifyKey": "nk"}
    return emulator.mps().ProcessMedia(req(mps_models.ProcessMediaRequest, {
        "InputInfo": INPUT, "TaskNotifyConfig": notify, **extra})).TaskId


def test_mps_change_mode_calls_back_on_each_change_with_valid_signature(emulator, sink):
    task_id = mps_task(emulator, sink, "Change", SessionId="cb-1", SessionContext="ctx")
    callbacks = sink.wait_for(task_id, count=2)
    bodies = [c.body for c in callbacks]
    assert [b["WorkflowTaskEvent"]["Status"] for b in bodies] == ["PROCESSING", "FINISH"]
    for callback, body in zip(callbacks, bodies, strict=True):
        verify_mps_notification(body, ["nk"], time.time(), 60)
        assert callback.path == "/mps?token=t1"
        assert body["EventType"] == "WorkflowTask" and body["WorkflowTaskEvent"]["TaskId"] == task_id
        assert (body["SessionId"], body["SessionContext"]) == ("cb-1", "ctx")
    assert bodies[-1]["WorkflowTaskEvent"]["ErrCode"] == 0
    # the notification parses into the SDK's ParseNotification answer
    parsed = mps_models.ParseNotificationResponse()
    parsed._deserialize(bodies[-1])
    assert parsed.WorkflowTaskEvent.TaskId == task_id and parsed.Sign == bodies[-1]["Sign"]


def test_mps_finish_mode_calls_back_once_and_failure_is_reported(emulator, sink):
    task_id = mps_task(emulator, sink, "Finish", SessionContext="emulator:fail")
    [callback] = sink.wait_for(task_id)
    event = callback.body["WorkflowTaskEvent"]
    assert event["Status"] == "FINISH" and event["ErrCode"] != 0 and event["Message"]
    verify_mps_notification(callback.body, ["nk"], time.time(), 60)
    # The delivery is recorded once the POST has been answered, a moment after the sink saw it.
    deliveries = wait_until(lambda: [d for d in emulator.admin("stats")["callbacks"]["deliveries"]
                                     if d["task_id"] == task_id], 10, "the delivery to be recorded")
    assert [d["outcome"] for d in deliveries] == ["delivered"]
    assert "token" not in json.dumps(emulator.admin("stats")["callbacks"]["deliveries"])


def test_mps_batch_task_callback(emulator, sink):
    notify = {"NotifyType": "URL", "NotifyMode": "Finish", "NotifyUrl": f"{sink.url}/batch", "NotifyKey": "bk"}
    task_id = emulator.mps().BatchProcessMedia(req(mps_models.BatchProcessMediaRequest, {
        "InputInfo": [INPUT], "TaskNotifyConfig": notify, "SessionContext": "b-ctx"})).TaskId
    [callback] = sink.wait_for(task_id)
    body = callback.body
    verify_mps_notification(body, ["bk"], time.time(), 60)
    assert body["EventType"] == "BatchTask" and body["BatchTaskEvent"]["TaskId"] == task_id
    assert body["BatchTaskEvent"]["Status"] == "FINISH" and body["SessionContext"] == "b-ctx"


def test_batch_callbacks_without_task_id_keep_the_session(emulator, sink):
    emulator.admin("faults", {"batch_callback_without_task_id": True})
    notify = {"NotifyType": "URL", "NotifyMode": "Finish", "NotifyUrl": f"{sink.url}/batch-no-id", "NotifyKey": "bk"}
    emulator.mps().call_json("BatchProcessMedia", {
        "InputInfo": [INPUT], "TaskNotifyConfig": notify, "SessionId": "batch-sess-1", "SessionContext": "b"})
    [callback] = sink.wait_for("batch-sess-1")
    body = callback.body
    verify_mps_notification(body, ["bk"], time.time(), 60)
    assert "TaskId" not in body["BatchTaskEvent"] and "TaskId" not in body
    assert body["SessionId"] == "batch-sess-1"


def test_image_tasks_notify_through_the_orchestration_stand_in(tmp_path, sink):
    with_image_notify = running_emulator(tmp_path / "emulator.log", "--processing-after", "0.05", "--finish-after",
                                         "0.1", "--image-notify-url", sink.url + "/image", "--image-notify-key", "ik")
    emulator = next(with_image_notify)
    try:
        task_id = emulator.mps().ProcessImage(req(mps_models.ProcessImageRequest, {"InputInfo": INPUT})).TaskId
        [callback] = sink.wait_for(task_id)
        verify_mps_notification(callback.body, ["ik"], time.time(), 60)
        assert callback.body["EventType"] == "WorkflowTask"
        assert callback.body["WorkflowTaskEvent"]["TaskId"] == task_id and "-" not in task_id
    finally:
        with_image_notify.close()


def test_failed_deliveries_are_retried(emulator, sink):
    task_id = mps_task(emulator, sink, "Finish", path="/flaky-2/mps")
    [callback] = sink.wait_for(task_id)
    verify_mps_notification(callback.body, ["nk"], time.time(), 60)
    deliveries = [d for d in emulator.admin("stats")["callbacks"]["deliveries"] if d["task_id"] == task_id]
    assert deliveries[0]["attempts"] == 3 and deliveries[0]["outcome"] == "delivered"


def test_unreachable_callback_gives_up_after_retries(emulator):
    notify = {"NotifyType": "URL", "NotifyMode": "Finish", "NotifyUrl": "http://127.0.0.1:9/none", "NotifyKey": "k"}
    task_id = emulator.mps().ProcessMedia(req(mps_models.ProcessMediaRequest, {
        "InputInfo": INPUT, "TaskNotifyConfig": notify})).TaskId
    failed = wait_until(lambda: [d for d in emulator.admin("stats")["callbacks"]["deliveries"]
                                 if d["task_id"] == task_id and d["outcome"] == "failed"], 10, "give up")
    assert failed[0]["attempts"] == 4  # 1 + --callback-retries (3)


def test_vod_procedure_state_changed_signed_with_sign_key(emulator, sink):
    client = emulator.vod()
    task_id = client.ProcessMedia(req(vod_models.ProcessMediaRequest, {
        "FileId": "528589", "SessionContext": "vc", "SessionId": "vs", "TasksNotifyMode": "Change"})).TaskId
    callbacks = sink.wait_for(task_id, count=2)
    assert all(c.path == "/vod-default" for c in callbacks)
    for callback in callbacks:
        verify_vod_event(callback.body, [VOD_SIGN_KEY], time.time(), 60)
    event = callbacks[-1].body
    assert event["EventType"] == "ProcedureStateChanged"
    procedure = event["ProcedureStateChangeEvent"]
    assert (procedure["TaskId"], procedure["Status"], procedure["FileId"]) == (task_id, "FINISH", "528589")
    assert (procedure["SessionId"], procedure["SessionContext"]) == ("vs", "vc")
    content = vod_models.EventContent()
    content._deserialize({k: v for k, v in event.items() if k not in ("Sign", "T")})  # not in the SDK model
    assert content.ProcedureStateChangeEvent.TaskId == task_id


def test_vod_modify_event_config_routes_per_application(emulator, sink):
    client = emulator.vod()
    client.ModifyEventConfig(req(vod_models.ModifyEventConfigRequest, {
        "SubAppId": 1500000002, "Mode": "PUSH", "NotificationUrl": sink.url + "/vod-app", "SignKey": "app-key"}))
    task_id = client.ProcessMedia(req(vod_models.ProcessMediaRequest, {"FileId": "1", "SubAppId": 1500000002})).TaskId
    [callback] = sink.wait_for(task_id)
    assert callback.path == "/vod-app"
    verify_vod_event(callback.body, ["app-key"], time.time(), 60)
    silent = client.ProcessMedia(req(vod_models.ProcessMediaRequest, {"FileId": "2", "TasksNotifyMode": "None"}))
    marker = client.ProcessMedia(req(vod_models.ProcessMediaRequest, {"FileId": "3"})).TaskId
    sink.wait_for(marker)
    assert sink.matching(silent.TaskId) == []


def upload(client, sub_app_id: int = 0, **params) -> vod_models.CommitUploadResponse:
    applied = client.ApplyUpload(req(vod_models.ApplyUploadRequest, {"MediaType": "mp4", "SubAppId": sub_app_id,
                                                                     **params}))
    return client.CommitUpload(req(vod_models.CommitUploadRequest, {"VodSessionKey": applied.VodSessionKey,
                                                                    "SubAppId": sub_app_id}))


def event_content(body: dict) -> vod_models.EventContent:
    """The event parsed into the SDK's EventContent, strictly; T and Sign are not in the model."""
    return parse_strictly(vod_models.EventContent, {k: v for k, v in body.items() if k not in ("Sign", "T")})


def push_to(client, sink, sub_app_id: int, path: str, sign_key: str, **switches) -> None:
    client.ModifyEventConfig(req(vod_models.ModifyEventConfigRequest, {
        "SubAppId": sub_app_id, "Mode": "PUSH", "NotificationUrl": sink.url + path, "SignKey": sign_key, **switches}))


def deliveries_of(emulator, subject: str) -> list[dict]:
    return [d for d in emulator.admin("stats")["callbacks"]["deliveries"] if d["task_id"] == subject]


def logged_ids(emulator) -> set[str]:
    return {d["task_id"] for d in emulator.admin("stats")["callbacks"]["deliveries"]}


def test_vod_commit_upload_sends_a_signed_new_file_upload(emulator, sink):
    client = emulator.vod()
    push_to(client, sink, 1500000005, "/vod-files?token=f1", "files-key", UploadMediaCompleteEventSwitch="ON")
    committed = upload(client, 1500000005, MediaName="clip", SourceContext="src", Procedure="LongVideoPreset")
    [callback] = sink.wait_for(committed.FileId)
    assert callback.path == "/vod-files?token=f1"
    body = callback.body
    verify_vod_event(body, ["files-key"], time.time(), 60)
    assert body["EventType"] == "NewFileUpload" and body["EventHandle"]
    assert shape_errors(vod_models.FileUploadTask, body["FileUploadEvent"]) == []
    uploaded = event_content(body).FileUploadEvent
    assert (uploaded.FileId, uploaded.MediaBasicInfo.MediaUrl) == (committed.FileId, committed.MediaUrl)
    assert uploaded.MediaBasicInfo.SourceInfo.SourceContext == "src" and uploaded.MetaData is None
    # the event's basic info is what DescribeMediaInfos answers, so the receiver can reconcile one with the other
    described = client.call_json("DescribeMediaInfos", {"FileIds": [committed.FileId], "SubAppId": 1500000005})
    assert described["Response"]["MediaInfoSet"][0]["BasicInfo"] == body["FileUploadEvent"]["MediaBasicInfo"]
    # the upload's Procedure is the task the event names
    procedure = client.DescribeTaskDetail(req(vod_models.DescribeTaskDetailRequest, {
        "TaskId": uploaded.ProcedureTaskId, "SubAppId": 1500000005})).ProcedureTask
    assert procedure.FileId == committed.FileId
    assert VodEventSchema().validate(body) == {}  # the receiver's own schema takes it


def test_vod_delete_media_sends_a_file_deleted(emulator, sink):
    client = emulator.vod()
    file_id = upload(client).FileId
    sink.wait_for(file_id)
    client.DeleteMedia(req(vod_models.DeleteMediaRequest, {
        "FileId": file_id, "DeleteParts": [{"Type": "TranscodeFiles", "Definition": 100030}]}))
    client.DeleteMedia(req(vod_models.DeleteMediaRequest, {"FileId": file_id}))
    callbacks = sink.wait_for(file_id, count=3)
    assert all(c.path == "/vod-default" for c in callbacks)
    for callback in callbacks:
        verify_vod_event(callback.body, [VOD_SIGN_KEY], time.time(), 60)
    deletions = [c.body for c in callbacks if c.body["EventType"] == "FileDeleted"]
    assert len(deletions) == 2 and len({d["EventHandle"] for d in deletions}) == 2
    for body in deletions:
        assert shape_errors(vod_models.FileDeleteTask, body["FileDeleteEvent"]) == []
        assert event_content(body).FileDeleteEvent.FileIdSet == [file_id]
        assert VodEventSchema().validate(body) == {}
    parts = sorted(d["FileDeleteEvent"]["FileDeleteResultInfo"][0]["DeleteParts"] for d in deletions)
    assert parts == [[], [{"Type": "TranscodeFiles", "Definition": 100030}]]  # [] is the whole file


def test_vod_file_events_switched_off_or_silenced_are_not_sent(emulator, sink):
    client = emulator.vod()
    push_to(client, sink, 1500000006, "/vod-switch", "k", UploadMediaCompleteEventSwitch="OFF")
    switched_off = upload(client, 1500000006).FileId
    silenced = upload(client, SourceContext="emulator:no-callback").FileId
    emulator.admin("faults", {"never_callback": True})
    during_fault = upload(client).FileId
    emulator.admin("faults", {"never_callback": False})
    client.DeleteMedia(req(vod_models.DeleteMediaRequest, {"FileId": switched_off, "SubAppId": 1500000006}))
    [deleted] = sink.wait_for(switched_off)  # the delete switch was left alone: on
    assert deleted.body["EventType"] == "FileDeleted"
    push_to(client, sink, 1500000006, "/vod-switch", "k", UploadMediaCompleteEventSwitch="ON")
    marker = upload(client, 1500000006).FileId
    sink.wait_for(marker)
    assert sink.matching(silenced) == [] and sink.matching(during_fault) == []
    # a delivery is logged once its POST is answered, a moment after the sink has it
    logged = wait_until(lambda: {switched_off, marker} <= (ids := logged_ids(emulator)) and ids, 5, "the log")
    assert not {silenced, during_fault} & logged


def test_vod_file_events_are_retried_duplicated_and_dropped_like_task_callbacks(emulator, sink):
    client = emulator.vod()
    push_to(client, sink, 1500000007, "/flaky-2/files", "k")
    retried = upload(client, 1500000007).FileId
    [callback] = sink.wait_for(retried)
    verify_vod_event(callback.body, ["k"], time.time(), 60)
    logged = wait_until(lambda: deliveries_of(emulator, retried), 5, "the delivery log")
    assert [(d["status"], d["attempts"], d["outcome"]) for d in logged] == [("NewFileUpload", 3, "delivered")]
    emulator.admin("faults", {"callback_duplicate": 1.0})
    duplicated = upload(client).FileId
    twice = sink.wait_for(duplicated, count=2)
    assert twice[0].body["EventHandle"] == twice[1].body["EventHandle"]
    emulator.admin("faults", {"callback_duplicate": 0.0, "callback_drop": 1.0})
    dropped = upload(client).FileId
    assert [d["outcome"] for d in deliveries_of(emulator, dropped)] == ["dropped"]  # logged before CommitUpload answers
    assert emulator.admin("stats")["callbacks"]["counts"]["dropped"] == 1


def test_ams_callback_signed_with_seed(emulator, sink):
    created = emulator.ams().CreateAudioModerationTask(req(ams_models.CreateAudioModerationTaskRequest, {
        "BizType": "biz", "Seed": "the-seed", "CallbackUrl": sink.url + "/ams",
        "Tasks": [{"DataId": "data-1", "Input": {"Type": "URL", "Url": "https://example.com/a.mp3"}}]}))
    task_id = created.Results[0].TaskId
    [callback] = sink.wait_for(task_id)
    verify_ams_callback(callback.raw, callback.headers.get(AMS_SIGNATURE_HEADER), ["the-seed"])
    body = callback.body
    assert (body["TaskId"], body["DataId"], body["BizType"], body["Status"]) == (task_id, "data-1", "biz", "FINISH")
    assert body["Suggestion"] == "Pass" and body["Labels"] == []
    assert "SessionId" not in body
