"""Schemas and extraction: what the inbox record says about each kind of callback."""

from __future__ import annotations

import json

import pytest
from marshmallow import ValidationError

from receiver.records import (
    RESOLVE_BY_FILE_ID,
    RESOLVE_BY_SESSION_ID,
    RESOLVE_BY_TASK_ID,
    RESOLVE_NOTHING,
    extract_record,
    file_ids,
)
from schemas.callbacks import AmsCallbackSchema, MpsNotificationSchema, VodEventSchema
from tests import payloads


def record(source: str, body: dict):
    schema = {"mps": MpsNotificationSchema, "vod": VodEventSchema, "ams": AmsCallbackSchema}[source]()
    valid = schema.load(body)
    return extract_record(source, valid, json.dumps(body).encode(), 1_800_000_000.0)


@pytest.mark.parametrize("event_type, field", [
    ("WorkflowTask", "WorkflowTaskEvent"),
    ("EditMediaTask", "EditMediaTaskEvent"),
    ("ScheduleTask", "ScheduleTaskEvent"),
    ("ExtractBlindWatermark", "ExtractBlindWatermarkTask"),
])
def test_mps_task_id_from_the_event_object(event_type, field):
    body = {"EventType": event_type, field: {"TaskId": "t-42", "Status": "PROCESSING", "ErrCode": 0},
            "SessionId": "s", "SessionContext": "c"}
    r = record("mps", body)
    assert (r.source, r.event_type, r.task_id, r.resolve_by) == ("mps", event_type, "t-42", RESOLVE_BY_TASK_ID)
    assert (r.claimed_status, r.session_id, r.session_context) == ("PROCESSING", "s", "c")


def test_mps_batch_task_from_seed_002():
    r = record("mps", payloads.mps_batch_from_seed())
    assert r.task_id == "24xxxxx-BatchTask-e6fefa34fc497xxxxxxx7det20"
    assert r.session_id == "qwer123" and r.session_context == "asdzxcs"


def test_mps_batch_task_without_task_id_is_resolved_by_session():
    r = record("mps", payloads.mps_batch_from_seed(with_task_id=False))
    assert r.task_id is None and r.resolve_by == RESOLVE_BY_SESSION_ID
    assert r.session_id == "qwer123"


def test_mps_event_object_must_match_event_type():
    with pytest.raises(ValidationError) as error:
        MpsNotificationSchema().load({"EventType": "EditMediaTask", "WorkflowTaskEvent": {"TaskId": "t"}})
    assert "EditMediaTaskEvent" in error.value.messages


@pytest.mark.parametrize("mutate, field_path", [
    (lambda b: b["WorkflowTaskEvent"].pop("TaskId"), ("WorkflowTaskEvent", "TaskId")),
    (lambda b: b["WorkflowTaskEvent"].update(ErrCode="zero"), ("WorkflowTaskEvent", "ErrCode")),
    (lambda b: b.update(SessionId="x" * 51), ("SessionId",)),
    (lambda b: b.update(SessionContext="x" * 1001), ("SessionContext",)),
    (lambda b: b.pop("EventType"), ("EventType",)),
])
def test_mps_errors_name_the_field(mutate, field_path):
    body = payloads.mps_workflow()
    mutate(body)
    with pytest.raises(ValidationError) as error:
        MpsNotificationSchema().load(body)
    messages = error.value.messages
    for key in field_path:
        messages = messages[key]
    assert messages


def test_limits_are_inclusive():
    record("mps", payloads.mps_workflow(session_id="x" * 50, session_context="y" * 1000))


def test_unknown_fields_are_kept():
    body = payloads.mps_workflow()
    body["BrandNewField"] = {"x": 1}
    body["WorkflowTaskEvent"]["AiDubbingTaskResult"] = {"Status": "SUCCESS"}
    valid = MpsNotificationSchema().load(body)
    assert valid["BrandNewField"] == {"x": 1}
    assert valid["WorkflowTaskEvent"]["AiDubbingTaskResult"] == {"Status": "SUCCESS"}
    assert json.loads(record("mps", body).body)["BrandNewField"] == {"x": 1}


@pytest.mark.parametrize("index", range(len(payloads.VOD_SEED_EVENTS)))
def test_vod_task_events_from_seed_001(index):
    body = payloads.vod_from_seed(index)
    _, event_type, field, _ = payloads.VOD_SEED_EVENTS[index]
    r = record("vod", body)
    assert r.event_type == event_type
    assert r.task_id == body[field]["TaskId"] and r.resolve_by == RESOLVE_BY_TASK_ID


def test_vod_procedure_carries_its_session():
    body = payloads.vod_from_seed(1)
    body["ProcedureStateChangeEvent"].update(SessionId="vs-1", SessionContext="vc-1")
    r = record("vod", body)
    assert (r.session_id, r.session_context, r.claimed_status) == ("vs-1", "vc-1", "FINISH")


@pytest.mark.parametrize("body", [payloads.vod_new_file_upload(), payloads.vod_file_deleted()])
def test_vod_file_events_have_no_task_but_files(body):
    r = record("vod", body)
    assert r.task_id is None and r.resolve_by == RESOLVE_BY_FILE_ID
    assert file_ids(r) == ["5285890784246869930"]


def test_other_vod_events_without_task_have_nothing_to_describe():
    r = record("vod", {"EventType": "PersistenceComplete", "PersistenceCompleteEvent": {"FileId": "1"}})
    assert r.task_id is None and r.resolve_by == RESOLVE_NOTHING


def test_vod_file_events_are_told_apart_by_file():
    a = record("vod", payloads.vod_new_file_upload("111"))
    b = record("vod", payloads.vod_new_file_upload("222"))
    assert a.dedup_key != b.dedup_key


def test_vod_task_event_requires_its_object_and_task_id():
    with pytest.raises(ValidationError) as error:
        VodEventSchema().load({"EventType": "ProcedureStateChanged"})
    assert "ProcedureStateChangeEvent" in error.value.messages
    with pytest.raises(ValidationError) as error:
        VodEventSchema().load({"EventType": "EditMediaComplete", "EditMediaCompleteEvent": {"Status": "FINISH"}})
    assert "TaskId" in error.value.messages["EditMediaCompleteEvent"]


def test_vod_event_type_newer_than_our_table_still_finds_its_task():
    r = record("vod", {"EventType": "FutureThingComplete", "FutureThingCompleteEvent": {"TaskId": "ft-1"}})
    assert r.task_id == "ft-1"


def test_ams_from_seed_003():
    body = payloads.ams_from_seed()
    r = record("ams", body)
    assert (r.event_type, r.task_id, r.claimed_status) == ("AudioModeration", "task-video-XwxJtbkKXWgCt8AZ", "FINISH")
    assert r.session_id is None and r.session_context is None


def test_ams_label_score_is_typed():
    body = payloads.ams_from_seed()
    body["Labels"][0]["Score"] = "high"
    with pytest.raises(ValidationError) as error:
        AmsCallbackSchema().load(body)
    assert error.value.messages["Labels"][0]["Score"]


def test_dedup_key_ignores_the_signature_but_not_the_status():
    base = payloads.mps_workflow()
    first = record("mps", {**base, "Timestamp": 1, "Sign": "a"})
    retry = record("mps", {**base, "Timestamp": 2, "Sign": "b"})
    assert first.dedup_key == retry.dedup_key and first.id != retry.id
    processing = record("mps", payloads.mps_workflow(status="PROCESSING"))
    assert processing.dedup_key != first.dedup_key


def test_batch_without_ids_deduplicates_by_body():
    body = payloads.mps_batch_from_seed(with_task_id=False)
    body.pop("SessionId")
    first = record("mps", {**body, "Timestamp": 1, "Sign": "a"})
    retry = record("mps", {**body, "Timestamp": 2, "Sign": "b"})
    other = record("mps", {**body, "SessionContext": "different"})
    assert first.dedup_key == retry.dedup_key != other.dedup_key
