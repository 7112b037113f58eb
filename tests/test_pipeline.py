"""Issue 4 end to end: emulator tasks call the receiver back over HTTP, the worker process describes them
at the emulator with the official SDK, and normalized events come out of the log sink."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import pytest
import requests

from schemas.event import JSON_SCHEMA_PATH
from tests import payloads
from tests.client import post_mps, post_vod
from tests.conftest import MPS_KEYS, TOKENS
from tests.pipeline_fixtures import MPS_DESCRIBE_LIMIT, NO_CALLBACK_INPUT, Pipeline, WorkerProcess
from tests.servers import wait_until

VALIDATOR = jsonschema.Draft202012Validator(json.loads(JSON_SCHEMA_PATH.read_text()))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    pipe = Pipeline(tmp_path_factory.mktemp("pipeline"))
    try:
        yield pipe.start()
    finally:
        pipe.stop()


@pytest.fixture(autouse=True)
def fresh(pipeline):
    """Every test starts with a fresh emulator (tasks, counters, faults) and a running worker."""
    pipeline.emulator.admin("reset", {})
    pipeline.ensure_worker()
    return pipeline


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def mps_notify_secrets(pipeline: Pipeline) -> dict[str, tuple[str, str]]:
    """The secrets of the TaskNotifyConfig `pipeline.mps_notify()` gives a task: each field's value in the
    emulator's answer, and what SPEC 7 says the event's `detail` shows instead."""
    return {
        "NotifyKey": (MPS_KEYS[0], "***"),
        "NotifyUrl": (f"{pipeline.receiver.url}/callbacks/mps?token={TOKENS[0]}",
                      f"{pipeline.receiver.url}/callbacks/mps?token=***"),
    }


def assert_valid(event: dict[str, Any]) -> None:
    errors = [e.message for e in VALIDATOR.iter_errors(event)]
    assert not errors, errors


def assert_matches_answer(event: dict[str, Any], answer: dict[str, Any], source: str, event_type: str,
                          task_id: str, reconciled_with: str,
                          notify_secrets: dict[str, tuple[str, str]] | None = None) -> None:
    """`detail` is the answer without its RequestId, with each field of `notify_secrets` in the answer's
    TaskNotifyConfig (field: (its value in the answer, its value in the event)) replaced; all else equal."""
    assert_valid(event)
    assert (event["source"], event["event_type"], event["task_id"]) == (source, event_type, task_id)
    assert event["reconciled_with"] == reconciled_with
    assert event["status"] == answer["Status"]
    assert answer["RequestId"] and "RequestId" not in event["detail"]
    expected = {k: v for k, v in answer.items() if k != "RequestId"}
    if notify_secrets is not None:
        config = answer["TaskNotifyConfig"]
        assert {k: config[k] for k in notify_secrets} == {k: was for k, (was, _) in notify_secrets.items()}
        expected["TaskNotifyConfig"] = {**config, **{k: shown for k, (_, shown) in notify_secrets.items()}}
    assert event["detail"] == expected
    assert event["received_at"] and event["reconciled_at"]
    assert event["received_at"] <= event["reconciled_at"]


# --- 1. each product and event type ---------------------------------------------------------


def test_mps_workflow_task(pipeline):
    session_id, context = uid("wf"), json.dumps({"order": 4711})
    task_id = pipeline.create_mps_workflow(SessionId=session_id, SessionContext=context)
    event = pipeline.wait_event(task_id)
    answer = pipeline.describe("mps", "DescribeTaskDetail", task_id)
    assert_matches_answer(event, answer, "mps", "WorkflowTask", task_id, "mps:DescribeTaskDetail",
                          mps_notify_secrets(pipeline))
    assert event["status"] == "FINISH" and event["succeeded"] is True
    assert event["error_code"] is None and event["error_message"] is None
    assert (event["session_id"], event["session_context"]) == (session_id, context)
    assert event["task_type"] == "WorkflowTask"
    assert (event["created_at"], event["finished_at"]) == (answer["CreateTime"], answer["FinishTime"])
    # the secrets of the task's notify configuration never reach the event
    config = event["detail"]["TaskNotifyConfig"]
    assert config["NotifyKey"] == "***" and config["NotifyUrl"].endswith("/callbacks/mps?token=***")
    assert [e["event_id"] for e in pipeline.events_for(task_id)] == [event["event_id"]]


def test_mps_batch_task_with_task_id(pipeline):
    session_id = uid("batch")
    task_id = pipeline.create_mps_batch(SessionId=session_id, SessionContext="batch-context")
    event = pipeline.wait_event(task_id)
    answer = pipeline.describe("mps", "DescribeBatchTaskDetail", task_id)
    assert_matches_answer(event, answer, "mps", "BatchTask", task_id, "mps:DescribeBatchTaskDetail",
                          mps_notify_secrets(pipeline))
    assert event["succeeded"] is True and event["task_type"] == "BatchTask"
    assert (event["session_id"], event["session_context"]) == (session_id, "batch-context")
    assert pipeline.stats("mps.DescribeTasks")["calls"] == 0  # the id was there: no search


def test_mps_batch_task_without_task_id_is_found_through_its_session_id(pipeline):
    pipeline.emulator.admin("faults", {"batch_callback_without_task_id": True})
    # other BatchTasks around, so the search has to tell them apart by SessionId
    decoys = [pipeline.create_mps_batch(SessionId=uid("decoy"), InputInfo=[NO_CALLBACK_INPUT]) for _ in range(3)]
    session_id = uid("batch-noid")
    task_id = pipeline.create_mps_batch(SessionId=session_id, SessionContext="ctx-noid")
    event = pipeline.wait_event(task_id)
    [callback] = [d for d in pipeline.emulator.admin("stats")["callbacks"]["deliveries"] if d["task_id"] == task_id]
    assert callback["outcome"] == "delivered"
    [row] = pipeline.wait_settled(session_id=session_id)
    assert row["task_id"] is None  # the callback itself carried no id
    answer = pipeline.describe("mps", "DescribeBatchTaskDetail", task_id)
    assert_matches_answer(event, answer, "mps", "BatchTask", task_id, "mps:DescribeBatchTaskDetail",
                          mps_notify_secrets(pipeline))
    assert (event["session_id"], event["session_context"]) == (session_id, "ctx-noid")
    assert pipeline.stats("mps.DescribeTasks")["calls"] >= 1
    assert not any(pipeline.events_for(d) for d in decoys)


def test_mps_image_task_is_described_with_describe_image_task_detail(pipeline):
    task_id = pipeline.create_mps_image()
    event = pipeline.wait_event(task_id)
    answer = pipeline.describe("mps", "DescribeImageTaskDetail", task_id)
    assert_matches_answer(event, answer, "mps", "WorkflowTask", task_id, "mps:DescribeImageTaskDetail")
    assert event["succeeded"] is True and event["status"] == "FINISH"
    assert pipeline.stats("mps.DescribeImageTaskDetail")["calls"] >= 2  # the worker's and ours
    assert pipeline.stats("mps.DescribeTaskDetail")["calls"] == 0


def test_vod_procedure_state_changed(pipeline):
    session_id = uid("vod")
    task_id = pipeline.create_vod_procedure(SessionId=session_id, SessionContext="vod-context")
    event = pipeline.wait_event(task_id)
    answer = pipeline.describe("vod", "DescribeTaskDetail", task_id)
    assert_matches_answer(event, answer, "vod", "ProcedureStateChanged", task_id, "vod:DescribeTaskDetail")
    assert event["succeeded"] is True and event["task_type"] == "Procedure"
    assert (event["session_id"], event["session_context"]) == (session_id, "vod-context")
    assert (event["created_at"], event["started_at"]) == (answer["CreateTime"], answer["BeginProcessTime"])


def test_ams_audio_moderation(pipeline):
    task_id = pipeline.create_ams(uid("ams"))
    event = pipeline.wait_event(task_id)
    answer = pipeline.describe("ams", "DescribeTaskDetail", task_id)
    assert_matches_answer(event, answer, "ams", "AudioModeration", task_id, "ams:DescribeTaskDetail")
    assert event["status"] == "FINISH" and event["succeeded"] is True
    assert event["session_id"] is None and event["session_context"] is None
    assert event["task_type"] == "AUDIO" and event["created_at"] == answer["CreatedAt"]


def upload_file(pipeline: Pipeline) -> str:
    """A file uploaded to the emulator's VOD, which then sends its NewFileUpload event."""
    vod = pipeline.emulator.vod()
    session = vod.call_json("ApplyUpload", {"MediaType": "mp4", "MediaName": uid("clip")})["Response"]
    return vod.call_json("CommitUpload", {"VodSessionKey": session["VodSessionKey"]})["Response"]["FileId"]


def file_event(pipeline: Pipeline, event_type: str, file_id: str) -> dict[str, Any]:
    def forwarded() -> dict[str, Any] | None:
        for event in pipeline.events():
            detail = event["detail"] or {}
            if event["event_type"] == event_type and file_id in (detail.get("FileId"),
                                                                 *detail.get("NotExistFileIdSet", ())):
                return event
        return None

    return wait_until(forwarded, 30, f"the {event_type} event of file {file_id}")


def test_vod_file_events_are_confirmed_with_describe_media_infos(pipeline):
    file_id = upload_file(pipeline)
    uploaded = file_event(pipeline, "NewFileUpload", file_id)
    assert_valid(uploaded)
    [info] = pipeline.emulator.vod().call_json("DescribeMediaInfos", {"FileIds": [file_id]})["Response"][
        "MediaInfoSet"]
    assert uploaded["detail"] == info and uploaded["reconciled_with"] == "vod:DescribeMediaInfos"
    assert uploaded["task_id"] is None and uploaded["source"] == "vod" and uploaded["reconciled_at"]
    pipeline.emulator.vod().call_json("DeleteMedia", {"FileId": file_id})
    deleted = file_event(pipeline, "FileDeleted", file_id)
    assert_valid(deleted)
    assert deleted["detail"] == {"NotExistFileIdSet": [file_id]} and deleted["event_id"] != uploaded["event_id"]
    assert pipeline.stats("vod.DescribeMediaInfos")["calls"] >= 2


def test_forged_vod_file_events_are_not_forwarded(pipeline):
    """Issue 9, finding 4: file events were forwarded on their signature alone, the attacker's body as detail."""
    existing = upload_file(pipeline)
    file_event(pipeline, "NewFileUpload", existing)
    never_uploaded = str(uuid.uuid4().int)[:19]
    forged_upload = post_vod(pipeline.receiver.url, payloads.vod_new_file_upload(never_uploaded)).json()["id"]
    forged_delete = post_vod(pipeline.receiver.url, payloads.vod_file_deleted((existing,))).json()["id"]
    wait_until(lambda: {r["state"] for r in pipeline.inbox_rows(id=forged_upload)} == {"rejected"}
               and {r["state"] for r in pipeline.inbox_rows(id=forged_delete)} == {"rejected"}, 30,
               "both forged file events to be rejected")
    assert pipeline.inbox_rows(id=forged_upload)[0]["reason"] == "unknown_file"
    assert pipeline.inbox_rows(id=forged_delete)[0]["reason"] == "unconfirmed"
    assert not [e for e in pipeline.events() if e["event_type"] == "FileDeleted"
                and existing in e["detail"]["NotExistFileIdSet"]]
    assert not [e for e in pipeline.events() if (e["detail"] or {}).get("FileId") == never_uploaded]


@pytest.mark.parametrize("product", ["mps", "ams"])
def test_a_failed_task_is_forwarded_as_failed(pipeline, product):
    if product == "mps":
        task_id = pipeline.create_mps_workflow(SessionId=uid("fail"), SessionContext="emulator:fail")
        answer_of = ("mps", "DescribeTaskDetail")
    else:
        task_id = pipeline.create_ams(uid("emulator:fail"))
        answer_of = ("ams", "DescribeTaskDetail")
    event = pipeline.wait_event(task_id)
    answer = pipeline.describe(*answer_of, task_id)
    assert_matches_answer(event, answer, product, "WorkflowTask" if product == "mps" else "AudioModeration",
                          task_id, ":".join(answer_of), mps_notify_secrets(pipeline) if product == "mps" else None)
    assert event["succeeded"] is False
    if product == "mps":
        assert event["status"] == "FINISH"
        assert event["error_code"] == str(answer["WorkflowTask"]["ErrCode"]) == "30010"
        assert event["error_message"] == answer["WorkflowTask"]["Message"]
    else:
        assert event["status"] == "ERROR"
        assert event["error_code"] == answer["ErrorType"] and event["error_message"] == answer["ErrorDescription"]


# --- 2. a tampered body with a valid Sign -----------------------------------------------------


def test_tampered_callback_with_valid_sign_forwards_the_emulators_data(pipeline):
    session_id, context = uid("tamper"), "genuine-context"
    # a real task that never calls back itself: the only callback is ours
    task_id = pipeline.create_mps_workflow(SessionId=session_id, SessionContext=context,
                                           input_info=NO_CALLBACK_INPUT)
    forged = payloads.mps_workflow(task_id=task_id, status="FINISH", session_id=session_id,
                                   session_context=context)
    forged["WorkflowTaskEvent"].update({
        "ErrCode": 70000, "Message": "forged failure",
        "MediaProcessResultSet": [{"Type": "Transcode", "TranscodeTask": {"Output": {"Url": "https://evil.example/x"}}}],
    })
    # MPS signs only Timestamp: the forged body carries a valid signature
    assert post_mps(pipeline.receiver.url, forged).json()["status"] == "accepted"
    event = pipeline.wait_event(task_id)
    answer = pipeline.describe("mps", "DescribeTaskDetail", task_id)
    assert_matches_answer(event, answer, "mps", "WorkflowTask", task_id, "mps:DescribeTaskDetail",
                          mps_notify_secrets(pipeline))
    assert event["succeeded"] is True and event["error_code"] is None and event["error_message"] is None
    assert event["detail"]["WorkflowTask"]["Message"] == "" and event["detail"]["WorkflowTask"]["ErrCode"] == 0
    assert "evil.example" not in json.dumps(event)


# --- 3. rejections ------------------------------------------------------------------------------


def wait_rejected(pipeline, record_id: str, reason: str) -> None:
    def settled():
        [row] = pipeline.inbox_rows(id=record_id)
        return row["state"] not in ("pending", "leased") and row

    row = wait_until(settled, 30, f"callback {record_id} to be settled")
    assert (row["state"], row["reason"]) == ("rejected", reason)


def test_unknown_task_is_rejected(pipeline):
    task_id = f"2500000000-WorkflowTask-{uuid.uuid4().hex}"
    answer = post_mps(pipeline.receiver.url, payloads.mps_workflow(task_id=task_id, session_id=uid("unknown")))
    assert answer.json()["status"] == "accepted"
    wait_rejected(pipeline, answer.json()["id"], "unknown_task")
    assert pipeline.events_for(task_id) == []
    assert pipeline.stats("mps.DescribeTaskDetail")["errors"].get("ResourceNotFound", 0) >= 1


def test_notify_config_mismatch_is_rejected(pipeline):
    session_id = uid("elsewhere")
    # a real task that notifies someone else; a validly signed copy of its callback comes to us
    task_id = pipeline.create_mps_workflow(url="http://127.0.0.1:9/callbacks/mps?token=theirs",
                                           SessionId=session_id, SessionContext="ctx",
                                           input_info=NO_CALLBACK_INPUT)
    wait_until(lambda: pipeline.describe("mps", "DescribeTaskDetail", task_id)["Status"] == "FINISH", 15,
               "the task to finish")
    forged = payloads.mps_workflow(task_id=task_id, session_id=session_id, session_context="ctx")
    answer = post_mps(pipeline.receiver.url, forged)
    wait_rejected(pipeline, answer.json()["id"], "notify_config_mismatch")
    assert pipeline.events_for(task_id) == []


@pytest.mark.parametrize("differs", ["SessionContext", "SessionId"])
def test_session_mismatch_is_rejected(pipeline, differs):
    session_id = uid("session")
    task_id = pipeline.create_mps_workflow(SessionId=session_id, SessionContext="the-task's-context",
                                           input_info=NO_CALLBACK_INPUT)
    forged = payloads.mps_workflow(task_id=task_id, session_id=session_id, session_context="the-task's-context")
    forged[differs] = "someone-else"
    answer = post_mps(pipeline.receiver.url, forged)
    wait_rejected(pipeline, answer.json()["id"], "session_mismatch")
    assert pipeline.events_for(task_id) == []


# --- 4. rate limits -----------------------------------------------------------------------------


def test_200_callbacks_at_20_per_second_all_forwarded_without_exceeding_the_limit(pipeline):
    task_ids = [pipeline.create_mps_workflow(SessionId=uid("rate")) for _ in range(200)]
    found = pipeline.wait_events(task_ids, timeout=90)
    assert all(len(events) == 1 and events[0]["status"] == "FINISH" for events in found.values())
    stats = pipeline.stats("mps.DescribeTaskDetail")
    assert stats["limit"] == MPS_DESCRIBE_LIMIT
    assert stats["calls"] == 200  # one per task, nothing retried
    assert stats["errors"] == {}  # in particular no RequestLimitExceeded
    assert stats["max_1s_window_attempted"] <= MPS_DESCRIBE_LIMIT
    # the limit was actually approached: this load needs it
    assert stats["max_1s_window_attempted"] >= MPS_DESCRIBE_LIMIT // 2


# --- 5. pending callbacks of one task share one Describe call ------------------------------------


def test_change_mode_callbacks_pending_together_share_one_describe_call(pipeline):
    pipeline.stop_worker()
    pipeline.emulator.admin("faults", {"callback_duplicate": 1})
    session_id = uid("change")
    task_id = pipeline.create_mps_workflow(mode="Change", SessionId=session_id, SessionContext="ctx")

    def delivered() -> list[str]:
        deliveries = pipeline.emulator.admin("stats")["callbacks"]["deliveries"]
        statuses = [d["status"] for d in deliveries if d["task_id"] == task_id and d["outcome"] == "delivered"]
        return statuses if len(statuses) == 4 else []

    # two jobs of the emulator send the two changes' copies: their order may interleave
    assert sorted(wait_until(delivered, 15, "four callbacks")) == ["FINISH", "FINISH", "PROCESSING", "PROCESSING"]
    rows = pipeline.inbox_rows(task_id=task_id)
    assert sorted(r["claimed_status"] for r in rows) == ["FINISH", "PROCESSING"]  # copies answered duplicate
    assert pipeline.stats("mps.DescribeTaskDetail")["calls"] == 0
    pipeline.start_worker()
    event = pipeline.wait_event(task_id)
    assert len(pipeline.wait_settled(task_id=task_id)) == 2  # both callbacks
    assert pipeline.stats("mps.DescribeTaskDetail")["calls"] == 1
    # the task is FINISH by now: both callbacks are that one state change
    assert [e["status"] for e in pipeline.events_for(task_id)] == ["FINISH"]
    assert event["session_id"] == session_id and event["succeeded"] is True


# --- 6. an InternalError storm ---------------------------------------------------------------------

STORM_SECONDS = 30
BACKOFF_CAP_SECONDS = 15


def test_events_are_forwarded_after_a_30_second_internal_error_storm(pipeline):
    task_ids = {
        pipeline.create_mps_workflow(SessionId=uid("storm")): "mps.DescribeTaskDetail",
        pipeline.create_mps_batch(SessionId=uid("storm")): "mps.DescribeBatchTaskDetail",
        pipeline.create_vod_procedure(SessionId=uid("storm")): "vod.DescribeTaskDetail",
        pipeline.create_ams(uid("storm")): "ams.DescribeTaskDetail",
    }
    pipeline.emulator.admin("faults", {"error_rate": 1})
    storm_ends = time.monotonic() + STORM_SECONDS
    # the callbacks still arrive; every Describe answers InternalError until the storm ends
    wait_until(lambda: all(pipeline.inbox_rows(task_id=t) for t in task_ids), 15, "the callbacks")

    def storm_over() -> bool:
        assert not any(pipeline.events_for(t) for t in task_ids), "forwarded without a Describe answer"
        return time.monotonic() >= storm_ends

    wait_until(storm_over, STORM_SECONDS + 5, "the storm's end", interval=0.5)
    for action in set(task_ids.values()):
        assert pipeline.stats(action)["errors"].get("InternalError", 0) >= 2, action  # retried, not given up
    assert all(r["state"] in ("pending", "leased") for t in task_ids for r in pipeline.inbox_rows(task_id=t))
    pipeline.emulator.admin("faults", {"error_rate": 0})
    found = pipeline.wait_events(task_ids, timeout=BACKOFF_CAP_SECONDS + 15)
    assert all(len(events) == 1 and events[0]["succeeded"] is True for events in found.values())


# --- 7. kill -9 of the worker in the middle of 300 events -----------------------------------------------


def test_kill_9_of_the_worker_loses_no_event_and_forwards_none_twice(pipeline):
    pipeline.stop_worker()
    with ThreadPoolExecutor(4) as pool:
        task_ids = list(pool.map(lambda _: pipeline.create_vod_procedure(SessionId=uid("kill")), range(300)))
    wanted = set(task_ids)
    wait_until(lambda: len([r for r in pipeline.inbox_rows(source="vod") if r["task_id"] in wanted]) == 300, 60,
               "300 callbacks in the inbox", interval=0.2)
    doomed = pipeline.start_worker()

    def in_the_middle() -> bool:
        # A batch's events reach the sink together, and its rows are settled before the next claim:
        # wait for events already forwarded *and* records still leased, so the kill lands mid-work.
        return (any(e["task_id"] in wanted for e in pipeline.events())
                and any(r["task_id"] in wanted for r in pipeline.inbox_rows(state="leased")))

    wait_until(in_the_middle, 60, "the first events, with records still leased", interval=0.02)
    doomed.kill9()
    forwarded_before = sum(1 for e in pipeline.events() if e["task_id"] in wanted)
    leased = [r for r in pipeline.inbox_rows(state="leased") if r["task_id"] in wanted]
    assert forwarded_before < len(wanted) and leased, "the worker was not killed in the middle of its work"
    # the successor releases the dead worker's leases at start instead of waiting 120 s for them
    successor = pipeline.start_worker()
    assert f"released {len(leased)} record(s) leased by" in successor.log()
    found = pipeline.wait_events(task_ids, timeout=60)
    wait_until(lambda: all(r["state"] == "done" for r in pipeline.inbox_rows(source="vod") if r["task_id"] in wanted),
               30, "every callback settled")
    ids = Counter(e["event_id"] for e in pipeline.events() if e["task_id"] in wanted)
    assert len(ids) == len(wanted) and set(found) == wanted
    assert [i for i, n in ids.items() if n > 1] == []


# --- 8. the worker inside the web process -----------------------------------------------------------------


def test_worker_in_web_turns_a_callback_into_an_event(pipeline, tmp_path):
    web = Pipeline(tmp_path, worker_in_web=True, emulator=pipeline.emulator).start()
    try:
        task_id = web.create_mps_workflow(SessionId=uid("inweb"), SessionContext="ctx")
        event = web.wait_event(task_id)
        answer = web.describe("mps", "DescribeTaskDetail", task_id)
        assert_matches_answer(event, answer, "mps", "WorkflowTask", task_id, "mps:DescribeTaskDetail",
                              mps_notify_secrets(web))
        assert event["succeeded"] is True
        [_row] = web.wait_settled(task_id=task_id)
        # one worker thread per host, however many gunicorn processes: one event
        assert len(web.events_for(task_id)) == 1
        # no separate worker process was involved: web's one worker is a thread of one gunicorn process
        assert web.workers == []
        gunicorn_workers = set(web.receiver.all_pids()) - {web.receiver.process.pid}
        started = [int(pid) for pid in re.findall(r"worker \S+:(\d+) started", web.receiver.log())]
        assert len(started) == 1 and started[0] in gunicorn_workers, (started, gunicorn_workers)
    finally:
        web.stop()


# --- 9. SIGTERM ------------------------------------------------------------------------------------------------


def test_sigterm_stops_the_worker_cleanly_with_no_record_left_leased(pipeline):
    task_ids = [pipeline.create_mps_workflow(SessionId=uid("term")) for _ in range(60)]
    wanted = set(task_ids)

    def leased() -> list:
        return [r for r in pipeline.inbox_rows(state="leased") if r["task_id"] in wanted]

    # at 20 Describe calls a second the worker holds these leases for seconds: stop it then
    wait_until(leased, 30, "the worker to lease the callbacks", interval=0.02)
    worker = pipeline.worker
    assert worker is not None
    assert worker.terminate(timeout=30) == 0, worker.log()
    assert pipeline.inbox_rows(state="leased") == []
    assert "stopped" in worker.log()
    pipeline.start_worker()
    found = pipeline.wait_events(task_ids, timeout=60)
    assert all(len(events) == 1 for events in found.values())


# --- refused credentials -------------------------------------------------------------------------------------


def test_refused_credentials_keep_the_events_and_mark_readiness_degraded(pipeline, tmp_path):
    pipeline.stop_worker()
    task_id = pipeline.create_mps_workflow(SessionId=uid("creds"))
    wait_until(lambda: pipeline.inbox_rows(task_id=task_id), 30, "the callback in the inbox")
    wrong = WorkerProcess({**pipeline.env, "TENCENTCLOUD_SECRET_KEY": "not-the-key"}, tmp_path / "wrong.log").start()
    try:
        ready = wait_until(
            lambda: (r := requests.get(pipeline.receiver.url + "/readyz", timeout=5).json())["status"] == "degraded"
            and r, 30, "readiness to turn degraded")
        assert ready["checks"]["tencentcloud"] == "failing"
        assert pipeline.events_for(task_id) == []
        assert {r["state"] for r in pipeline.inbox_rows(task_id=task_id)} <= {"pending", "leased"}
    finally:
        assert wrong.terminate() == 0
    # the right key again: nothing was lost, and readiness recovers
    pipeline.start_worker()
    assert pipeline.wait_event(task_id)["status"] == "FINISH"
    wait_until(lambda: requests.get(pipeline.receiver.url + "/readyz", timeout=5).json()["status"] == "ok",
               30, "readiness to recover")
