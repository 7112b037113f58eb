"""Every real payload Tencent Cloud publishes gets its documented answer at the door (docs/realworld.md)."""

from __future__ import annotations

import copy
import filecmp
import json

import pytest

from receiver import auth
from tests import realworld
from tests.client import post_mps, post_raw, post_vod
from tests.realworld import DOOR_ANSWERS, REALWORLD, SHARED_REALWORLD, all_payloads, load
from tests.servers import query_inbox

CALLBACKS = [payload.name for payload in all_payloads("callback")]


def test_the_copy_of_the_shared_payloads_is_whole_and_current():
    assert CALLBACKS and set(CALLBACKS) == set(DOOR_ANSWERS), "every real callback has a documented answer"
    if not SHARED_REALWORLD.is_dir():
        pytest.skip("../shared/realworld is not beside this clone")
    shared = sorted(path.name for path in SHARED_REALWORLD.glob("*.json"))
    assert shared == sorted(path.name for path in REALWORLD.glob("*.json"))
    assert all(filecmp.cmp(SHARED_REALWORLD / name, REALWORLD / name, shallow=False) for name in shared)


def test_the_docs_table_lists_every_file_with_its_answer():
    table = (realworld.DOCS_TABLE).read_text()
    for name, (status, outcome) in DOOR_ANSWERS.items():
        row = next((line for line in table.splitlines() if f"`{name}`" in line), None)
        assert row is not None, f"{name} has no row in docs/realworld.md"
        assert f"{status} `{outcome}`" in row, row
    for payload in all_payloads("describe"):
        assert f"`{payload.name}`" in table, f"{payload.name} has no row in docs/realworld.md"


@pytest.mark.parametrize("name", CALLBACKS)
def test_each_real_callback_signed_gets_its_documented_answer(receiver, name):
    payload = load(name)
    response = realworld.post_signed(receiver.url, payload)
    status, outcome = DOOR_ANSWERS[name]
    assert response.status_code == status, response.text
    assert response.json()["status"] == outcome
    # Tencent retries a callback until it is answered 200: the retry is a duplicate, not a second record.
    again = realworld.post_signed(receiver.url, payload)
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "id": response.json()["id"]}


def test_the_ams_example_is_verified_over_its_exact_bytes_with_the_published_signature(receiver):
    """The CreateAudioModerationTask page quotes its body byte for byte with its X-Signature and Seed."""
    payload = load("ams_cb_signature_example.json")
    raw = payload.raw_body.encode()
    published_seed = "dedb6dcc1cb7c63fde8fa5abfd57"
    assert auth.ams_signature(raw, published_seed) == (
        "74f0ae6d1f1e4eb1ffe4162da480a812f8a4dc19fe5a52bacbcd2c862d3edcfd"
    )
    # Re-serialized, the same JSON is other bytes: the signature covers the bytes, not the object.
    reserialized = json.dumps(json.loads(raw)).encode()
    assert reserialized != raw
    refused = post_raw(receiver.url, "ams", reserialized, headers={"X-Signature": auth.ams_signature(raw, "ams-seed")})
    assert refused.status_code == 401


def test_a_live_stream_notification_of_a_type_newer_than_our_table_is_accepted(receiver):
    body = copy.deepcopy(load("mps_cb_livestream_aireviewresult.json").body)
    body.update(NotificationType="AiSmartSubtitleResult", AiSmartSubtitleResultInfo={"Text": "hello"},
                TaskId="2459149217-procedure-live-newer0t0")
    assert post_mps(receiver.url, body).json()["status"] == "accepted"


@pytest.mark.parametrize("notification_type", ["WorkflowTask", "", "aiReview", "Ai Review", "A" * 65])
def test_a_live_stream_notification_type_that_is_no_notification_name_is_refused(receiver, notification_type):
    body = copy.deepcopy(load("mps_cb_livestream_aireviewresult.json").body)
    body["NotificationType"] = notification_type
    response = post_mps(receiver.url, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidPayload"
    assert "NotificationType" in response.json()["error"]["fields"]


def test_a_live_stream_notification_without_task_id_names_the_field(receiver):
    body = copy.deepcopy(load("mps_cb_livestream_aireviewresult.json").body)
    del body["TaskId"]
    response = post_mps(receiver.url, body)
    assert response.status_code == 400 and "TaskId" in response.json()["error"]["fields"]


@pytest.mark.parametrize(("alias", "canonical"), [("EditMediaComplete", "EditMediaCompleteEvent"),
                                                   ("WechatPublishComplete", "WechatPublishCompleteEvent")])
def test_vod_event_objects_named_without_their_event_suffix_are_read(receiver, alias, canonical):
    """Some VOD pages name the event object after its event type; the task id is read from it."""
    task_id = f"1256768367-{alias}-aliased{len(alias)}t0"
    body = {"EventType": alias, alias: {"TaskId": task_id, "Status": "FINISH", "ErrCode": 0, "Message": ""}}
    response = post_vod(receiver.url, body)
    assert response.status_code == 200, response.text
    [row] = query_inbox(receiver.env["INBOX_URL"][len("sqlite:///"):], id=response.json()["id"])
    assert row["task_id"] == task_id and row["event_type"] == alias
    # Without either object, the event still names the field it needs.
    missing = post_vod(receiver.url, {"EventType": alias})
    assert missing.status_code == 400 and canonical in missing.json()["error"]["fields"]


LEGACY_VOD = {"version": "4.0", "eventType": "NewFileUpload",
              "data": {"status": 0, "message": "", "vodUserId": 1256768367, "fileId": "5285890784246869930",
                       "fileUrl": "http://1256768367.vod2.myqcloud.com/xx/yy/f0.mp4"}}


def test_a_vod_legacy_format_callback_is_answered_unsupported_format_with_the_fix(receiver):
    response = post_raw(receiver.url, "vod", json.dumps(LEGACY_VOD).encode())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "UnsupportedFormat"
    assert "v2.0" in error["message"] and "v3.0" in error["message"] and "ModifyEventConfig" in error["message"]
