"""The emulator's API through the official SDK clients: authentication, every action, SDK parsing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from tencentcloud.ams.v20201229 import models as ams_models
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.mps.v20190612 import models as mps_models
from tencentcloud.vod.v20180717 import models as vod_models

from emulator import tc3
from emulator.config import DEFAULT_RATE_LIMITS
from tests.emulator_fixtures import (
    SECRET_ID,
    SECRET_KEY,
    EmulatorProcess,
    parse_strictly,
    req,
    running_emulator,
    shape_errors,
)
from tests.servers import ROOT, wait_until

INPUT = {"Type": "URL", "UrlInputInfo": {"Url": "https://example.com/in.mp4"}}
NOTIFY = {"NotifyType": "URL", "NotifyMode": "Finish", "NotifyUrl": "http://127.0.0.1:9/cb?token=t", "NotifyKey": "k"}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    yield from running_emulator(tmp_path_factory.mktemp("emu") / "emulator.log",
                                "--processing-after", "0.1", "--finish-after", "0.3")


@pytest.fixture(autouse=True)
def _reset(emulator):
    emulator.admin("reset", {})



def sdk_error(call) -> str:
    with pytest.raises(TencentCloudSDKException) as info:
        call()
    return info.value.get_code()


# --- authentication ------------------------------------------------------------------


def test_wrong_secret_key_is_signature_failure(emulator):
    client = emulator.mps(SECRET_ID, "not-the-key")
    assert sdk_error(lambda: client.DescribeTasks(mps_models.DescribeTasksRequest())) == "AuthFailure.SignatureFailure"


def test_unknown_secret_id(emulator):
    client = emulator.mps("AKIDsomeoneelse", SECRET_KEY)
    assert sdk_error(lambda: client.DescribeTasks(mps_models.DescribeTasksRequest())) == "AuthFailure.SecretIdNotFound"


def _signed_post(emulator: EmulatorProcess, timestamp: int, secret_key: str = SECRET_KEY,
                 body: bytes = b"{}") -> dict:
    """A request signed by hand, exactly as the SDK would sign it but at a chosen time."""
    host = f"127.0.0.1:{emulator.port}"
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    headers = {"content-type": "application/json", "host": host}
    canonical = tc3.canonical_request("POST", "/", "", headers, ["content-type", "host"], body)
    signature = tc3.sign(secret_key, str(timestamp), date, "ams", canonical)
    response = requests.post(emulator.url + "/", data=body, timeout=5, headers={
        "Content-Type": "application/json", "Host": host, "X-TC-Action": "DescribeTasks",
        "X-TC-Version": "2020-12-29", "X-TC-Timestamp": str(timestamp),
        "Authorization": f"TC3-HMAC-SHA256 Credential={SECRET_ID}/{date}/ams/tc3_request, "
                         f"SignedHeaders=content-type;host, Signature={signature}",
    })
    assert response.status_code == 200
    return response.json()["Response"]


def test_hand_signed_request_is_accepted_and_expired_timestamp_refused(emulator):
    assert "Error" not in _signed_post(emulator, int(time.time()))
    expired = _signed_post(emulator, int(time.time()) - 301)
    assert expired["Error"]["Code"] == "AuthFailure.SignatureExpire"
    assert expired["RequestId"]
    future = _signed_post(emulator, int(time.time()) + 400)
    assert future["Error"]["Code"] == "AuthFailure.SignatureExpire"


def test_tampered_body_fails_signature(emulator):
    now = int(time.time())
    host = f"127.0.0.1:{emulator.port}"
    date = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    canonical = tc3.canonical_request("POST", "/", "", {"content-type": "application/json", "host": host},
                                      ["content-type", "host"], b"{}")
    signature = tc3.sign(SECRET_KEY, str(now), date, "ams", canonical)
    answer = requests.post(emulator.url + "/", data=b'{"Limit": 5}', timeout=5, headers={
        "Content-Type": "application/json", "X-TC-Action": "DescribeTasks", "X-TC-Version": "2020-12-29",
        "X-TC-Timestamp": str(now), "Host": host,
        "Authorization": f"TC3-HMAC-SHA256 Credential={SECRET_ID}/{date}/ams/tc3_request, "
                         f"SignedHeaders=content-type;host, Signature={signature}"}).json()["Response"]
    assert answer["Error"]["Code"] == "AuthFailure.SignatureFailure"


def test_unknown_action_and_missing_authorization(emulator):
    assert sdk_error(lambda: emulator.mps().call_json("NoSuchAction", {})) == "InvalidAction"
    answer = requests.post(emulator.url + "/", json={}, timeout=5, headers={"X-TC-Action": "DescribeTasks"}).json()
    assert answer["Response"]["Error"]["Code"] == "AuthFailure.InvalidAuthorization"
    assert answer["Response"]["RequestId"]


def test_help_is_documented():
    out = subprocess.run([sys.executable, "-m", "emulator", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    for flag in ("--port", "--secret-id", "--processing-after", "--rate-limit", "--callback-drop", "emulator:fail"):
        assert flag in out


# --- MPS -----------------------------------------------------------------------------


def test_mps_process_media_lifecycle_parses_into_sdk_models(emulator):
    client = emulator.mps()
    task_id = client.ProcessMedia(req(mps_models.ProcessMediaRequest, {
        "InputInfo": INPUT, "TaskNotifyConfig": NOTIFY, "SessionId": "s-1", "SessionContext": "ctx-1",
        "MediaProcessTask": {"TranscodeTaskSet": [{"Definition": 100030}]}})).TaskId
    assert task_id.startswith("2500000000-WorkflowTask-") and len(task_id.rsplit("-", 1)[1]) == 32
    describe = req(mps_models.DescribeTaskDetailRequest, {"TaskId": task_id})
    first = client.DescribeTaskDetail(describe)
    assert first.Status in ("WAITING", "PROCESSING") and first.FinishTime == ""
    done = wait_until(lambda: (a := client.DescribeTaskDetail(describe)).Status == "FINISH" and a, 5, "FINISH")
    assert done.TaskType == "WorkflowTask" and done.WorkflowTask.TaskId == task_id
    assert done.WorkflowTask.Status == "FINISH" and done.WorkflowTask.ErrCode == 0
    assert done.WorkflowTask.InputInfo.UrlInputInfo.Url == INPUT["UrlInputInfo"]["Url"]
    assert (done.SessionId, done.SessionContext) == ("s-1", "ctx-1")
    assert done.TaskNotifyConfig.NotifyUrl == NOTIFY["NotifyUrl"] and done.TaskNotifyConfig.NotifyMode == "Finish"
    assert done.BeginProcessTime and done.FinishTime >= done.CreateTime
    assert done.EditMediaTask is None and done.RequestId


def test_mps_failure_marker(emulator):
    client = emulator.mps()
    task_id = client.ProcessMedia(req(mps_models.ProcessMediaRequest, {
        "InputInfo": INPUT, "SessionContext": "please emulator:fail"})).TaskId
    describe = req(mps_models.DescribeTaskDetailRequest, {"TaskId": task_id})
    done = wait_until(lambda: (a := client.DescribeTaskDetail(describe)).Status == "FINISH" and a, 5, "FINISH")
    assert done.WorkflowTask.ErrCode != 0 and done.WorkflowTask.Message


def test_mps_session_id_is_deduplicated(emulator):
    client = emulator.mps()
    params = {"InputInfo": INPUT, "SessionId": "same-session"}
    client.ProcessMedia(req(mps_models.ProcessMediaRequest, params))
    assert sdk_error(lambda: client.ProcessMedia(req(mps_models.ProcessMediaRequest, params))) == \
        "InvalidParameterValue.SessionId"
    too_long = {"InputInfo": INPUT, "SessionId": "x" * 51}
    assert sdk_error(lambda: client.ProcessMedia(req(mps_models.ProcessMediaRequest, too_long))) == \
        "InvalidParameterValue.SessionIdTooLong"


def test_mps_batch_task(emulator):
    client = emulator.mps()
    task_id = client.BatchProcessMedia(req(mps_models.BatchProcessMediaRequest, {
        "InputInfo": [INPUT], "TaskNotifyConfig": NOTIFY, "SessionContext": "batch-ctx",
        "SmartSubtitlesTask": {"Definition": 122}})).TaskId
    assert task_id.startswith("2500000000-BatchTask-")
    describe = req(mps_models.DescribeBatchTaskDetailRequest, {"TaskId": task_id})
    done = wait_until(lambda: (a := client.DescribeBatchTaskDetail(describe)).Status == "FINISH" and a, 5, "FINISH")
    assert done.TaskId == task_id and done.TaskType == "BatchTask" and done.SessionContext == "batch-ctx"
    assert done.BatchTaskResult.InputInfos[0].Type == "URL"
    assert done.TaskNotifyConfig.NotifyType == "URL"
    assert sdk_error(lambda: client.DescribeTaskDetail(req(mps_models.DescribeTaskDetailRequest,
                                                           {"TaskId": task_id}))) == "ResourceNotFound"


def test_mps_image_task(emulator):
    client = emulator.mps()
    task_id = client.ProcessImage(req(mps_models.ProcessImageRequest, {
        "InputInfo": {"Type": "COS", "CosInputInfo": {"Bucket": "b-1", "Region": "ap-shanghai", "Object": "/a.png"}},
        "ImageTask": {"EncodeConfig": {"Format": "jpeg", "Quality": 75}}})).TaskId
    assert len(task_id) == 64 and task_id.isalnum()
    describe = req(mps_models.DescribeImageTaskDetailRequest, {"TaskId": task_id})
    done = wait_until(lambda: (a := client.DescribeImageTaskDetail(describe)).Status == "FINISH" and a, 5, "FINISH")
    assert done.TaskType == "WorkflowTask" and done.CreateTime and done.FinishTime
    assert done.ImageProcessTaskResultSet[0].Status == "SUCCESS"


def test_mps_describe_tasks_filters_and_scrolls(emulator):
    client = emulator.mps()
    ids = [client.ProcessMedia(req(mps_models.ProcessMediaRequest, {"InputInfo": INPUT})).TaskId for _ in range(3)]
    first = client.DescribeTasks(req(mps_models.DescribeTasksRequest, {"Limit": 2}))
    assert len(first.TaskSet) == 2 and first.ScrollToken and first.TotalCount == 3
    second = client.DescribeTasks(req(mps_models.DescribeTasksRequest, {"Limit": 2, "ScrollToken": first.ScrollToken}))
    assert len(second.TaskSet) == 1 and second.ScrollToken == ""
    assert {t.TaskId for t in first.TaskSet + second.TaskSet} == set(ids)
    assert first.TaskSet[0].TaskType == "WorkflowTask"
    wait_until(lambda: client.DescribeTasks(req(mps_models.DescribeTasksRequest, {"Status": "FINISH"})).TotalCount == 3,
               5, "all FINISH")
    assert client.DescribeTasks(req(mps_models.DescribeTasksRequest, {"Status": "WAITING"})).TotalCount == 0
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert client.DescribeTasks(req(mps_models.DescribeTasksRequest, {"StartTime": future})).TotalCount == 0
    assert sdk_error(lambda: client.DescribeTaskDetail(req(mps_models.DescribeTaskDetailRequest,
                                                           {"TaskId": "nope"}))) == "ResourceNotFound"


# --- VOD -----------------------------------------------------------------------------


def test_vod_process_media_and_sub_app_id(emulator):
    client = emulator.vod()
    task_id = client.ProcessMedia(req(vod_models.ProcessMediaRequest, {
        "FileId": "5285890784246869930", "SubAppId": 1500000001, "SessionId": "v-1", "SessionContext": "vctx",
        "MediaProcessTask": {"TranscodeTaskSet": [{"Definition": 10}]}})).TaskId
    assert task_id.startswith("1500000000-procedurev2-") and task_id.endswith("tt0")
    describe = req(vod_models.DescribeTaskDetailRequest, {"TaskId": task_id, "SubAppId": 1500000001})
    done = wait_until(lambda: (a := client.DescribeTaskDetail(describe)).Status == "FINISH" and a, 5, "FINISH")
    assert done.TaskType == "Procedure" and done.ProcedureTask.TaskId == task_id
    assert done.ProcedureTask.FileId == "5285890784246869930" and done.ProcedureTask.SessionContext == "vctx"
    assert done.ProcedureTask.SessionId == "v-1" and done.EditMediaTask is None
    other_app = req(vod_models.DescribeTaskDetailRequest, {"TaskId": task_id})
    assert sdk_error(lambda: client.DescribeTaskDetail(other_app)) == "InvalidParameterValue.TaskId"
    listed = client.DescribeTasks(req(vod_models.DescribeTasksRequest, {"SubAppId": 1500000001, "Status": "FINISH"}))
    assert [t.TaskId for t in listed.TaskSet] == [task_id] and listed.TaskSet[0].SessionId == "v-1"
    assert client.DescribeTasks(req(vod_models.DescribeTasksRequest, {})).TaskSet == []
    again = req(vod_models.ProcessMediaRequest, {"FileId": "1", "SubAppId": 1500000001, "SessionId": "v-1"})
    assert sdk_error(lambda: client.ProcessMedia(again)) == "InvalidParameterValue.SessionId"


# --- VOD media files -----------------------------------------------------------------


def upload(client, sub_app_id: int = 0, **params) -> vod_models.CommitUploadResponse:
    """ApplyUpload then CommitUpload: a new media file, as the server-side upload SDK makes one."""
    applied = client.ApplyUpload(req(vod_models.ApplyUploadRequest, {"MediaType": "mp4", "SubAppId": sub_app_id,
                                                                     **params}))
    return client.CommitUpload(req(vod_models.CommitUploadRequest, {"VodSessionKey": applied.VodSessionKey,
                                                                    "SubAppId": sub_app_id}))


def describe_media(client, file_ids: list[str], **params) -> vod_models.DescribeMediaInfosResponse:
    return client.DescribeMediaInfos(req(vod_models.DescribeMediaInfosRequest, {"FileIds": file_ids, **params}))


def test_vod_upload_and_media_info_answers_are_the_sdk_models(emulator):
    client = emulator.vod()
    applied_raw = client.call_json("ApplyUpload", {
        "MediaType": "mp4", "MediaName": "clip", "CoverType": "jpg", "SourceContext": "src-ctx", "ClassId": 7,
        "ExpireTime": "2030-01-01T08:00:00+08:00", "StorageRegion": "ap-chongqing"})["Response"]
    assert shape_errors(vod_models.ApplyUploadResponse, applied_raw) == []
    applied = parse_strictly(vod_models.ApplyUploadResponse, applied_raw)
    assert applied.StorageRegion == "ap-chongqing" and applied.StorageBucket and applied.VodSessionKey
    assert applied.MediaStoragePath.endswith("/f0.mp4") and applied.CoverStoragePath.endswith(".jpg")
    assert applied.TempCertificate.SecretId and applied.TempCertificate.ExpiredTime > time.time()

    committed_raw = client.call_json("CommitUpload", {"VodSessionKey": applied.VodSessionKey})["Response"]
    assert shape_errors(vod_models.CommitUploadResponse, committed_raw) == []
    committed = parse_strictly(vod_models.CommitUploadResponse, committed_raw)
    assert re.fullmatch(r"[1-9][0-9]{18}", committed.FileId)
    assert committed.FileId in applied.MediaStoragePath  # the path ApplyUpload gave already names the file
    assert committed.MediaUrl.endswith(applied.MediaStoragePath)
    assert committed.CoverUrl.endswith(applied.CoverStoragePath)

    described_raw = client.call_json("DescribeMediaInfos", {"FileIds": [committed.FileId]})["Response"]
    assert shape_errors(vod_models.DescribeMediaInfosResponse, described_raw) == []
    described = parse_strictly(vod_models.DescribeMediaInfosResponse, described_raw)
    assert described.NotExistFileIdSet == [] and len(described.MediaInfoSet) == 1
    info = described.MediaInfoSet[0]
    basic = info.BasicInfo
    assert info.FileId == committed.FileId and info.MetaData is None and info.TranscodeInfo is None
    assert (basic.Name, basic.Type, basic.MediaUrl, basic.CoverUrl) == ("clip", "mp4", committed.MediaUrl,
                                                                        committed.CoverUrl)
    assert (basic.ClassId, basic.ExpireTime, basic.StorageRegion) == (7, "2030-01-01T00:00:00Z", "ap-chongqing")
    assert (basic.SourceInfo.SourceType, basic.SourceInfo.SourceContext) == ("Upload", "src-ctx")
    assert (basic.Category, basic.Status, basic.StorageClass, basic.TagSet) == ("Video", "Normal", "STANDARD", [])
    created = datetime.fromisoformat(basic.CreateTime).timestamp()
    assert abs(created - time.time()) < 60 and basic.UpdateTime == basic.CreateTime

    deleted_raw = client.call_json("DeleteMedia", {"FileId": committed.FileId})["Response"]
    assert parse_strictly(vod_models.DeleteMediaResponse, deleted_raw).RequestId == deleted_raw["RequestId"]


def test_vod_describe_media_infos_takes_1_to_20_ids_and_lists_the_unknown(emulator):
    client = emulator.vod()
    kept, deleted = upload(client).FileId, upload(client).FileId
    unknown = [f"52858907842468{n:05d}" for n in range(18)]
    client.DeleteMedia(req(vod_models.DeleteMediaRequest, {"FileId": deleted}))
    answer = describe_media(client, [kept, deleted, *unknown])  # 20 ids: the most one call takes
    assert [i.FileId for i in answer.MediaInfoSet] == [kept]
    assert answer.NotExistFileIdSet == [deleted, *unknown]
    assert sdk_error(lambda: describe_media(client, [kept, deleted, *unknown, "one-more"])) == \
        "InvalidParameterValue.FileIds"
    assert sdk_error(lambda: describe_media(client, [])) == "InvalidParameterValue.FileIdsEmpty"
    assert sdk_error(lambda: client.call_json("DescribeMediaInfos", {})) == "InvalidParameterValue.FileIdsEmpty"
    assert sdk_error(lambda: client.call_json("DescribeMediaInfos", {"FileIds": [5]})) == \
        "InvalidParameterValue.FileIds"
    # Filters: without basicInfo only the FileId is answered
    assert describe_media(client, [kept], Filters=["metaData"]).MediaInfoSet[0].BasicInfo is None
    assert describe_media(client, [kept], Filters=["basicInfo"]).MediaInfoSet[0].BasicInfo.Type == "mp4"
    # files belong to their application
    other_app = describe_media(client, [kept], SubAppId=1500000009)
    assert other_app.MediaInfoSet == [] and other_app.NotExistFileIdSet == [kept]


def test_vod_delete_media(emulator):
    client = emulator.vod()
    file_id = upload(client, 1500000003).FileId
    delete = req(vod_models.DeleteMediaRequest, {"FileId": file_id})
    assert sdk_error(lambda: client.DeleteMedia(delete)) == "ResourceNotFound"  # not in the default application
    parts = req(vod_models.DeleteMediaRequest, {"FileId": file_id, "SubAppId": 1500000003,
                                                "DeleteParts": [{"Type": "TranscodeFiles", "Definition": 100030}]})
    client.DeleteMedia(parts)  # some outputs deleted: the media stays
    assert [i.FileId for i in describe_media(client, [file_id], SubAppId=1500000003).MediaInfoSet] == [file_id]
    whole = req(vod_models.DeleteMediaRequest, {"FileId": file_id, "SubAppId": 1500000003})
    client.DeleteMedia(whole)
    assert describe_media(client, [file_id], SubAppId=1500000003).NotExistFileIdSet == [file_id]
    assert sdk_error(lambda: client.DeleteMedia(whole)) == "ResourceNotFound"
    assert sdk_error(lambda: client.call_json("DeleteMedia", {})) == "MissingParameter"


def test_vod_session_keys_commit_once_in_their_application(emulator):
    client = emulator.vod()
    applied = client.ApplyUpload(req(vod_models.ApplyUploadRequest, {"MediaType": "mp4", "SubAppId": 1500000004}))
    commit = {"VodSessionKey": applied.VodSessionKey}
    assert sdk_error(lambda: client.CommitUpload(req(vod_models.CommitUploadRequest, commit))) == \
        "InvalidParameterValue.VodSessionKey"
    first = client.CommitUpload(req(vod_models.CommitUploadRequest, {**commit, "SubAppId": 1500000004}))
    assert first.FileId
    assert sdk_error(lambda: client.CommitUpload(req(vod_models.CommitUploadRequest, {
        **commit, "SubAppId": 1500000004}))) == "InvalidParameterValue.VodSessionKey"
    assert sdk_error(lambda: client.CommitUpload(req(vod_models.CommitUploadRequest, {"VodSessionKey": "nope"}))) \
        == "InvalidParameterValue.VodSessionKey"
    assert sdk_error(lambda: client.call_json("CommitUpload", {})) == "MissingParameter"
    assert sdk_error(lambda: client.call_json("ApplyUpload", {})) == "MissingParameter"
    assert sdk_error(lambda: client.call_json("ApplyUpload", {"MediaType": "../mp4"})) == \
        "InvalidParameterValue.MediaType"
    assert sdk_error(lambda: client.call_json("ApplyUpload", {"MediaType": "mp4", "ExpireTime": "soon"})) == \
        "InvalidParameterValue.ExpireTime"


def test_vod_process_media_and_upload_procedures_use_the_file(emulator):
    client = emulator.vod()
    committed = upload(client, MediaName="talk", MediaType="mp3")
    task_id = client.ProcessMedia(req(vod_models.ProcessMediaRequest, {"FileId": committed.FileId})).TaskId
    procedure = client.DescribeTaskDetail(req(vod_models.DescribeTaskDetailRequest, {"TaskId": task_id})).ProcedureTask
    assert (procedure.FileId, procedure.FileName, procedure.FileUrl) == (committed.FileId, "talk", committed.MediaUrl)
    assert describe_media(client, [committed.FileId]).MediaInfoSet[0].BasicInfo.Category == "Audio"
    # an upload naming a Procedure starts that task flow on the new file
    with_procedure = upload(client, Procedure="LongVideoPreset", SessionContext="up-ctx")
    listed = client.DescribeTasks(req(vod_models.DescribeTasksRequest, {"FileId": with_procedure.FileId}))
    assert [t.SessionContext for t in listed.TaskSet] == ["up-ctx"]
    assert client.DescribeTasks(req(vod_models.DescribeTasksRequest, {"FileId": committed.FileId})).TaskSet[0] \
        .TaskId == task_id


def test_reset_forgets_media_files_and_upload_sessions(emulator):
    client = emulator.vod()
    file_id = upload(client).FileId
    pending = client.ApplyUpload(req(vod_models.ApplyUploadRequest, {"MediaType": "mp4"})).VodSessionKey
    assert describe_media(client, [file_id]).NotExistFileIdSet == []
    emulator.admin("reset", {})
    assert describe_media(client, [file_id]).NotExistFileIdSet == [file_id]
    assert sdk_error(lambda: client.CommitUpload(req(vod_models.CommitUploadRequest, {"VodSessionKey": pending}))) \
        == "InvalidParameterValue.VodSessionKey"


def test_readme_lists_the_default_rate_limits(emulator):
    readme = (ROOT / "emulator" / "README.md").read_text()
    listed = {(service, action): int(limit)
              for service, action, limit in re.findall(r"^\| (\w+) \| `(\w+)` \| (\d+) \|$", readme, re.M)}
    assert listed == DEFAULT_RATE_LIMITS
    limits = emulator.admin("stats")["limits"]
    assert all(limits[f"vod.{a}"] == 100 for a in ("ApplyUpload", "CommitUpload", "DeleteMedia",
                                                   "DescribeMediaInfos"))


# --- AMS -----------------------------------------------------------------------------


def test_ams_tasks(emulator):
    client = emulator.ams()
    created = client.CreateAudioModerationTask(req(ams_models.CreateAudioModerationTaskRequest, {
        "BizType": "biz-1", "Type": "AUDIO", "Seed": "seed",
        "Tasks": [{"DataId": "d-1", "Name": "one", "Input": {"Type": "URL", "Url": "https://example.com/1.mp3"}},
                  {"DataId": "d-2", "Name": "emulator:fail", "Input": {"Type": "URL", "Url": "https://e.com/2.mp3"}}],
    }))
    assert [r.Code for r in created.Results] == ["OK", "OK"]
    ok_id, bad_id = (r.TaskId for r in created.Results)
    assert ok_id.startswith("task-audio-") and len(ok_id) == len("task-audio-") + 16
    describe = req(ams_models.DescribeTaskDetailRequest, {"TaskId": ok_id})
    assert client.DescribeTaskDetail(describe).Status in ("PENDING", "RUNNING")
    done = wait_until(lambda: (a := client.DescribeTaskDetail(describe)).Status == "FINISH" and a, 5, "FINISH")
    assert (done.DataId, done.BizType, done.Name, done.Suggestion) == ("d-1", "biz-1", "one", "Pass")
    assert done.InputInfo.Url == "https://example.com/1.mp3" and done.MediaInfo is not None
    failed = wait_until(lambda: (a := client.DescribeTaskDetail(req(ams_models.DescribeTaskDetailRequest,
                                                                    {"TaskId": bad_id}))).Status == "ERROR" and a,
                        5, "ERROR")
    assert failed.ErrorDescription
    listed = client.DescribeTasks(req(ams_models.DescribeTasksRequest, {"Limit": 1}))
    assert listed.Total == "2" and len(listed.Data) == 1 and listed.PageToken
    rest = client.DescribeTasks(req(ams_models.DescribeTasksRequest, {"Limit": 1, "PageToken": listed.PageToken}))
    assert len(rest.Data) == 1 and rest.PageToken == ""
    by_status = client.DescribeTasks(req(ams_models.DescribeTasksRequest, {"Filter": {"TaskStatus": "FINISH"}}))
    assert [d.TaskId for d in by_status.Data] == [ok_id] and by_status.Data[0].Labels == []
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert client.DescribeTasks(req(ams_models.DescribeTasksRequest, {"EndTime": past})).Total == "0"
    assert client.DescribeTasks(req(ams_models.DescribeTasksRequest, {"Filter": {"BizType": "x"}})).Data == []


# --- raw answers have the seeds' fields -------------------------------------------------


def _seed(name: str) -> dict:
    return json.loads((ROOT / "tests" / "fixtures" / name).read_text())["Response"]


def _missing(seed: dict, answer: dict, where: str = "") -> list[str]:
    """Seed keys absent from the answer, recursing into objects both sides have."""
    gaps = []
    for key, value in seed.items():
        if key not in answer:
            gaps.append(where + key)
        elif isinstance(value, dict) and isinstance(answer[key], dict):
            gaps += _missing(value, answer[key], f"{where}{key}.")
    return gaps


def test_raw_answers_carry_the_seed_fields(emulator):
    mps, vod, ams = emulator.mps(), emulator.vod(), emulator.ams()
    batch = mps.call_json("BatchProcessMedia", {"InputInfo": [INPUT], "TaskNotifyConfig": NOTIFY})["Response"]
    image = mps.call_json("ProcessImage", {"InputInfo": INPUT})["Response"]
    procedure = vod.call_json("ProcessMedia", {"FileId": "1"})["Response"]
    ams.call_json("CreateAudioModerationTask", {"Tasks": [{"DataId": "d", "Input": {"Type": "URL", "Url": "u"}}]})
    wait_until(lambda: ams.call_json("DescribeTasks", {"Filter": {"TaskStatus": "FINISH"}})["Response"]["Data"], 5,
               "the AMS task to finish")
    answers = {
        "seed002_mps_describe_batch_task_detail_example1.json":
            mps.call_json("DescribeBatchTaskDetail", {"TaskId": batch["TaskId"]}),
        "seed000_mps_describe_image_task_detail_example1.json":
            mps.call_json("DescribeImageTaskDetail", {"TaskId": image["TaskId"]}),
        "seed001_vod_describe_task_detail_example2.json":
            vod.call_json("DescribeTaskDetail", {"TaskId": procedure["TaskId"]}),
        "seed003_ams_describe_tasks_example1.json": ams.call_json("DescribeTasks", {}),
    }
    for name, raw in answers.items():
        seed, answer = _seed(name), raw["Response"]
        assert _missing(seed, answer) == [], name
        assert isinstance(answer["RequestId"], str)
        if name.startswith("seed003"):
            assert isinstance(answer["Total"], str)
            assert _missing(seed["Data"][0], answer["Data"][0]) == []
