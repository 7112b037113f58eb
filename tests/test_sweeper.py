"""The missed-callback sweeper (issue 6): unit tests, then emulator + receiver + worker + sweeper over HTTP."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from typing import Any

import pytest

from receiver.config import ConfigError, load_settings
from receiver.events import (
    event_id,
)
from receiver.inbox.sqlite import SqliteInbox
from receiver.reconcile import (
    NOTIFY_CONFIG_MISMATCH,
    Forward,
    Reject,
    describe_call,
    judge,
)
from receiver.records import ORIGIN_CALLBACK, ORIGIN_SWEEPER, CallbackRecord, extract_record, swept_record
from receiver.sweeper import mps_event_type, vod_event_type
from receiver.tencentcloud import DescribeCall
from tests.client import post_mps
from tests.payloads import mps_workflow
from tests.pipeline_fixtures import MPS_DESCRIBE_LIMIT, NO_CALLBACK_INPUT, Pipeline
from tests.servers import ROOT, wait_until

RECEIVER = "http://127.0.0.1:8000"
NOTIFY = {"NotifyType": "URL", "NotifyUrl": f"{RECEIVER}/callbacks/mps?token=t", "NotifyKey": "k"}


def _mps_answer(task_id: str, **changes: Any) -> dict[str, Any]:
    return {"TaskType": "WorkflowTask", "Status": "FINISH", "CreateTime": "2026-01-01T00:00:00Z",
            "BeginProcessTime": "2026-01-01T00:00:01Z", "FinishTime": "2026-01-01T00:00:02Z",
            "SessionId": "order-1", "SessionContext": "ctx", "TaskNotifyConfig": NOTIFY,
            "WorkflowTask": {"TaskId": task_id, "Status": "FINISH", "ErrCode": 0, "Message": ""}, **changes}


# --- units -------------------------------------------------------------------------------


def test_swept_record_is_built_like_a_callback_and_keyed_the_same_every_sweep():
    task_id = "2500000000-WorkflowTask-0123abcd"
    first = swept_record("mps", "WorkflowTask", task_id, 1000.0)
    again = swept_record("mps", "WorkflowTask", task_id, 2000.0)
    assert first.origin == ORIGIN_SWEEPER and first.resolve_by == "task_id" and first.session_id is None
    assert first.claimed_status == "FINISH" and first.received_at == 1000.0
    assert json.loads(first.body)["origin"] == "sweeper"
    assert first.dedup_key == again.dedup_key and first.id != again.id
    # A late callback is a record of its own (a copy is only a copy of a callback's whole body);
    # its event has the swept record's event_id, so it is not forwarded twice.
    body = mps_workflow(task_id, "FINISH", session_id="", session_context="")
    callback = extract_record("mps", body, json.dumps(body).encode(), 1500.0)
    assert callback.origin == ORIGIN_CALLBACK and callback.dedup_key != first.dedup_key
    assert describe_call(first) == DescribeCall("mps", "DescribeTaskDetail", {"TaskId": task_id})


def test_repeated_sweeps_add_a_task_once(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    try:
        results = [inbox.accept(swept_record("ams", "AudioModeration", "task-1", float(i))) for i in range(3)]
        assert [r.duplicate for r in results] == [False, True, True]
        assert {r.id for r in results} == {results[0].id}
        [claimed] = inbox.claim("w", 10, 60, time.time() + 10)
        assert claimed.record.origin == ORIGIN_SWEEPER
    finally:
        inbox.close()


@pytest.mark.parametrize(("task_type", "event_type"), [
    ("WorkflowTask", "WorkflowTask"), ("EditMediaTask", "EditMediaTask"), ("ScheduleTask", "ScheduleTask"),
    ("BatchTask", "BatchTask"), ("ExtractBlindWatermark", "ExtractBlindWatermark"),
    ("ExtractBlindWatermarkTask", "ExtractBlindWatermark"), ("LiveStreamProcessTask", None),
])
def test_mps_event_types(task_type, event_type):
    assert mps_event_type(task_type) == event_type


@pytest.mark.parametrize(("task_type", "event_type"), [
    ("Procedure", "ProcedureStateChanged"), ("EditMedia", "EditMediaComplete"),
    ("Transcode", "TranscodeComplete"), ("", None),
    # Named unlike "<TaskType>Complete": the event the event type check expects of the task.
    ("RemoveWatermarkTask", "RemoveWatermark"), ("PullUpload", "PullComplete"),
    ("SnapshotByTimeOffset", "CreateSnapshotByTimeOffsetComplete"), ("AigcImageTask", "AigcImageTaskComplete"),
    ("FutureThing", "FutureThingComplete"),
])
def test_vod_event_types(task_type, event_type):
    assert vod_event_type(task_type) == event_type


def test_a_swept_task_skips_the_session_check_and_has_no_received_at():
    task_id = "2500000000-WorkflowTask-0123abcd"
    record = swept_record("mps", "WorkflowTask", task_id, 1000.0)
    call = describe_call(record)
    verdict = judge(record, call, _mps_answer(task_id), RECEIVER, 1001.0, patience_left=True)
    assert isinstance(verdict, Forward)
    event = verdict.event
    assert event["received_at"] is None and event["session_id"] == "order-1"
    assert event["event_id"] == event_id("mps", "WorkflowTask", task_id, "FINISH")


@pytest.mark.parametrize("config", [None, {**NOTIFY, "NotifyUrl": "https://elsewhere.example.com/callbacks/mps"},
                                    {"NotifyType": "TDMQ-CMQ"}])
def test_a_swept_mps_task_notifying_elsewhere_is_not_ours(config):
    task_id = "2500000000-WorkflowTask-0123abcd"
    record = swept_record("mps", "WorkflowTask", task_id, 1000.0)
    verdict = judge(record, describe_call(record), _mps_answer(task_id, TaskNotifyConfig=config), RECEIVER, 1001.0,
                    patience_left=True)
    assert isinstance(verdict, Reject) and verdict.reason == NOTIFY_CONFIG_MISMATCH


def test_live_callbacks_are_claimed_first_and_swept_records_get_what_is_left(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    try:
        for i in range(30):
            inbox.accept(swept_record("ams", "AudioModeration", f"swept-{i}", 100.0 + i))
        body = {"TaskId": "", "Status": "FINISH"}
        for i in range(30):
            record = extract_record("ams", {**body, "TaskId": f"live-{i}"}, b"{}", 200.0 + i)
            inbox.accept(record)
        now = time.time() + 10
        first = inbox.claim("w", 20, 60, now)
        assert [c.record.origin for c in first] == [ORIGIN_CALLBACK] * 20
        second = inbox.claim("w", 20, 60, now)
        assert [c.record.origin for c in second] == [ORIGIN_CALLBACK] * 10 + [ORIGIN_SWEEPER] * 10
        third = inbox.claim("w", 30, 60, now)
        assert Counter(c.record.origin for c in third) == {ORIGIN_SWEEPER: 20}
    finally:
        inbox.close()


# The inbox table as issues 1-5 left it: a plain unique key, no origin, no priorities.
LAYOUT_BEFORE_THE_SWEEPER = """
CREATE TABLE inbox (
    id TEXT PRIMARY KEY, dedup_key TEXT NOT NULL UNIQUE, source TEXT NOT NULL, event_type TEXT NOT NULL,
    task_id TEXT, resolve_by TEXT NOT NULL, session_id TEXT, session_context TEXT, claimed_status TEXT,
    body TEXT NOT NULL, received_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, lease_owner TEXT, lease_expires_at REAL,
    last_error TEXT, reason TEXT, updated_at REAL NOT NULL
);
CREATE INDEX inbox_due ON inbox (state, next_attempt_at);
INSERT INTO inbox (id, dedup_key, source, event_type, task_id, resolve_by, body, received_at, next_attempt_at,
                   updated_at)
VALUES ('r-old', 'k-old', 'ams', 'AudioModeration', 'old', 'task_id', '{}', 1.0, 1.0, 1.0);
"""


def test_an_inbox_file_from_before_the_sweeper_is_upgraded_keeping_its_records(tmp_path):
    path = tmp_path / "inbox.db"
    conn = sqlite3.connect(path)
    conn.executescript(LAYOUT_BEFORE_THE_SWEEPER)
    conn.close()
    inbox = SqliteInbox(path)
    try:
        [claimed] = inbox.claim("w", 10, 60, time.time())
        assert claimed.record.id == "r-old" and claimed.record.origin == ORIGIN_CALLBACK
        assert claimed.priority == 0 and claimed.waiting_since == 1.0
        inbox.reject("w", "r-old", "unknown_task", time.time())
        # The upgraded key lets go like a new one: a copy is a record of its own.
        again = extract_record("ams", {"TaskId": "old"}, b"{}", 2.0)
        assert not inbox.accept(replace(again, dedup_key="k-old")).duplicate
    finally:
        inbox.close()


def test_an_sqs_message_without_origin_still_loads():
    record = swept_record("vod", "ProcedureStateChanged", "t", 1.0)
    data = asdict(record)
    assert CallbackRecord(**json.loads(json.dumps(data))) == record
    data.pop("origin")
    assert CallbackRecord(**data).origin == ORIGIN_CALLBACK


def test_sweeper_settings():
    settings = load_settings({})
    assert (settings.sweep_page_size, settings.run_sweeper) == (100, False)
    settings = load_settings({"SWEEP_PAGE_SIZE": "7", "RUN_SWEEPER": "true"})
    assert (settings.sweep_page_size, settings.run_sweeper) == (7, True)
    for value in ("0", "101", "many"):
        with pytest.raises(ConfigError, match="^SWEEP_PAGE_SIZE: "):
            load_settings({"SWEEP_PAGE_SIZE": value})
    with pytest.raises(ConfigError, match="^RUN_SWEEPER: "):
        load_settings({"RUN_SWEEPER": "sometimes"})


# --- over HTTP ---------------------------------------------------------------------------

PAGE_SIZE = 10
MPS_TASKS, VOD_TASKS, AMS_TASKS = 100, 50, 50


def _sweep_once(pipeline: Pipeline, **env: str) -> dict[str, Any]:
    """``python -m receiver.sweeper --once``: its report."""
    done = subprocess.run([sys.executable, "-m", "receiver.sweeper", "--once"], cwd=ROOT,
                          env={**pipeline.env, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "sweep mps: examined" in done.stderr and "sweep done" in done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _create_ams(pipeline: Pipeline, count: int) -> list[str]:
    """AMS tasks, ten per call (the creation limit is not what is under test)."""
    from tests.conftest import AMS_SEED

    ids = []
    for start in range(0, count, 10):
        tasks = [{"DataId": f"d{i}", "Name": f"d{i}", "Input": {"Type": "URL", "Url": "https://example.com/a.mp3"}}
                 for i in range(start, min(count, start + 10))]
        params = {"Tasks": tasks, "BizType": "default", "Type": "AUDIO", "Seed": AMS_SEED,
                  "CallbackUrl": pipeline.notify_url["ams"]}
        results = pipeline.emulator.ams().call_json("CreateAudioModerationTask", params)["Response"]["Results"]
        ids += [r["TaskId"] for r in results]
    return ids


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """200 tasks over three products, 20% of callbacks dropped, then one sweep with 10 tasks a page."""
    tmp_path = tmp_path_factory.mktemp("sweeper")
    pipeline = Pipeline(tmp_path).start()
    try:
        pipeline.emulator.admin("faults", {"callback_drop": 0.2})
        pipeline.start_worker()
        sessions: dict[str, str] = {}
        mps = []
        for i in range(MPS_TASKS):
            extra = {"SessionId": f"order-{i}"} if i % 2 else {}
            task_id = pipeline.create_mps_workflow(**extra)
            mps.append(task_id)
            sessions[task_id] = extra.get("SessionId", "")
        vod = [pipeline.create_vod_procedure() for _ in range(VOD_TASKS)]
        ams = _create_ams(pipeline, AMS_TASKS)
        # Two finished MPS tasks that are not ours: they notify a queue, or nobody.
        foreign = [
            pipeline.create_mps_workflow(TaskNotifyConfig={"NotifyType": "TDMQ-CMQ", "NotifyMode": "Finish"}),
            pipeline.emulator.mps().call_json("ProcessMedia", {"InputInfo": NO_CALLBACK_INPUT})["Response"]["TaskId"],
        ]
        ours = mps + vod + ams

        def settled() -> dict[str, Any] | None:
            counts = pipeline.emulator.admin("stats")["callbacks"]["counts"]
            return counts if counts.get("delivered", 0) + counts.get("dropped", 0) == len(ours) else None

        counts = wait_until(settled, 60, "every callback delivered or dropped", interval=0.2)
        deliveries = pipeline.emulator.admin("stats")["callbacks"]["deliveries"]
        dropped = {d["task_id"]: d["service"] for d in deliveries if d["outcome"] == "dropped"}
        wait_until(lambda: len(pipeline.events()) >= counts["delivered"], 60, "the delivered callbacks' events")
        before = {p: pipeline.stats(f"{p}.DescribeTasks")["calls"] for p in ("mps", "vod", "ams")}
        report = _sweep_once(pipeline, SWEEP_PAGE_SIZE=str(PAGE_SIZE))
        pages = {p: pipeline.stats(f"{p}.DescribeTasks")["calls"] - before[p] for p in ("mps", "vod", "ams")}
        pipeline.wait_events(ours, timeout=90)
        wait_until(lambda: len(pipeline.inbox_rows(state="rejected")) >= len(foreign), 30, "the foreign tasks")
        yield {"pipeline": pipeline, "ours": ours, "mps": mps, "foreign": foreign, "dropped": dropped,
               "sessions": sessions, "report": report, "pages": pages}
    finally:
        pipeline.stop()


def test_every_finished_task_gives_one_event_although_callbacks_were_dropped(swept):
    pipeline, ours, dropped, report = swept["pipeline"], swept["ours"], swept["dropped"], swept["report"]
    assert len(ours) == 200 and dropped, "the emulator dropped no callback"
    events = pipeline.events()
    assert sorted(e["task_id"] for e in events) == sorted(ours)  # each task once, nothing else
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(e["status"] in ("FINISH", "ERROR") for e in events)
    recovered = [e for e in events if e["task_id"] in dropped]
    assert len(recovered) == len(dropped) and all(e["received_at"] is None for e in recovered)
    vod_types = {e["event_type"] for e in events if e["source"] == "vod"}
    assert vod_types == {"ProcedureStateChanged"}
    # Found missing: exactly the dropped ones, plus the two foreign MPS tasks (rejected by the worker).
    expected = Counter(dropped.values())
    expected["mps"] += 2
    for product in ("mps", "vod", "ams"):
        assert report["products"][product]["missing"] == expected[product], report
    assert report["examined"] == len(ours) + 2
    # Foreign tasks are never forwarded.
    rejected = {row["task_id"]: row["reason"] for row in pipeline.inbox_rows(state="rejected")}
    assert rejected == dict.fromkeys(swept["foreign"], NOTIFY_CONFIG_MISMATCH)


def test_every_page_is_followed(swept):
    pages = swept["pages"]
    assert pages["mps"] == math.ceil((MPS_TASKS + 2) / PAGE_SIZE)
    assert pages["vod"] == math.ceil(VOD_TASKS / PAGE_SIZE)
    # FINISH (every task passes here), then ERROR (none failed: one empty page).
    assert pages["ams"] == math.ceil(AMS_TASKS / PAGE_SIZE) + 1
    assert all(n > 3 for n in pages.values())
    assert swept["report"]["products"]["mps"]["pages"] == pages["mps"]


def test_a_second_sweep_adds_nothing(swept):
    report = _sweep_once(swept["pipeline"], SWEEP_PAGE_SIZE="100")
    assert report["examined"] == len(swept["ours"]) + 2
    assert report["missing"] == 0
    assert len(swept["pipeline"].events()) == len(swept["ours"])


def test_a_callback_arriving_after_recovery_is_answered_200_and_gives_no_second_event(swept):
    pipeline, dropped, sessions = swept["pipeline"], swept["dropped"], swept["sessions"]
    dropped_mps = [t for t in swept["mps"] if t in dropped]
    assert dropped_mps
    # Prefer one with a session: its record differs from the swept one, so it is accepted and reconciled.
    task_id = next((t for t in dropped_mps if sessions[t]), dropped_mps[0])
    body = mps_workflow(task_id, "FINISH", session_id=sessions[task_id], session_context="")
    response = post_mps(pipeline.receiver.url, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] in ("accepted", "duplicate")
    wait_until(lambda: pipeline.inbox_rows(id=answer["id"])[0]["state"] == "done", 30, "the late callback settled")
    [event] = pipeline.events_for(task_id)
    assert event["received_at"] is None  # the swept one, sent before the late callback arrived


def test_live_callbacks_keep_their_pace_while_a_sweep_is_reconciled(tmp_path):
    """DescribeTaskDetail at 20/s on both sides, 200 swept tasks queued: live callbacks still go first."""
    pipeline = Pipeline(tmp_path).start()
    sweeper = None
    try:
        pipeline.start_worker()
        live = 30

        def run_live() -> float:
            started = time.monotonic()
            ids = [pipeline.create_mps_workflow() for _ in range(live)]
            pipeline.wait_events(ids, timeout=60)
            return time.monotonic() - started

        baseline = run_live()
        silent = [pipeline.create_mps_workflow(input_info=NO_CALLBACK_INPUT) for _ in range(200)]

        def all_finished() -> bool:
            answer = pipeline.emulator.mps().call_json("DescribeTasks", {"Status": "FINISH", "Limit": 1})
            return answer["Response"]["TotalCount"] >= live + len(silent)

        wait_until(all_finished, 30, "the silent tasks to finish", interval=0.2)
        log_path = tmp_path / "sweeper.log"
        with open(log_path, "ab") as log:
            sweeper = subprocess.Popen([sys.executable, "-m", "receiver.sweeper"], cwd=ROOT, stdout=log,
                                       stderr=subprocess.STDOUT, env={**pipeline.env, "SWEEP_INTERVAL_SECONDS": "3600"})
        wait_until(lambda: "sweep done" in log_path.read_text(), 30, "the first sweep")
        assert "found 200 missing" in log_path.read_text()
        loaded = run_live()
        backlog = len([r for r in pipeline.inbox_rows(origin="sweeper") if r["state"] != "done"])
        assert backlog > 0, "the swept tasks were all reconciled before the live ones: no load to measure"
        assert loaded <= 2 * baseline + 3, (baseline, loaded)
        pipeline.wait_events(silent, timeout=60)
        stats = pipeline.emulator.admin("stats")["actions"]
        # Attempted calls, not admitted ones: the emulator's own limiter caps those at its limit whatever we send.
        detail = stats["mps.DescribeTaskDetail"]
        assert MPS_DESCRIBE_LIMIT // 2 <= detail["max_1s_window_attempted"] <= MPS_DESCRIBE_LIMIT, detail
        assert not detail["errors"]
        assert stats["mps.DescribeTasks"]["max_1s_window_attempted"] <= 100
        # SIGTERM stops the sweeper cleanly.
        sweeper.terminate()
        assert sweeper.wait(timeout=20) == 0
        assert "stopped" in log_path.read_text()
    finally:
        if sweeper is not None and sweeper.poll() is None:
            sweeper.kill()
            sweeper.wait(timeout=10)
        pipeline.stop()

