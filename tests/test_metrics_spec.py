"""SPEC 10 metrics over real processes: gunicorn (2 workers), the emulator, worker processes and the sweeper.

One deployment lives through a known story (module fixture `story`), and
/metrics is scraped several times after each chapter: every scrape, whichever
gunicorn worker answers it, must report the figures of every process of the
deployment on the host, including those that have exited since (the first
worker process, the sweeper run with ``--once``).

1. worker 1 running: four tasks call back from the emulator (mps x2, vod, ams);
   the test posts a callback for another task (accepted), its copy
   (duplicate), one with a wrong key (401), one that is not JSON (400), one for
   a task that does not exist (rejected unknown_task, after not_found calls),
   and one whose Describe answer cannot be read (MAX_ATTEMPTS=1: a dead letter);
2. worker 1 stopped: one more callback waits in the inbox (the oldest pending),
   with another of the same state change that is not a copy;
3. worker 2 started while Describe answers InternalError, then
   RequestLimitExceeded, then normally: it forwards their one event;
4. worker 2 stopped, a late callback for a task that had not called back, then
   ``python -m receiver.sweeper --once``: it finds that task missing (its event
   is not out yet) and the dead letter's task; worker 3 forwards the one event
   of the late callback and the swept record, and buries the dead letter's
   task again.

The `receiver.metrics_dir` tests at the end start ``python -c`` processes to
check which directory a process picks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from receiver import metrics_dir
from receiver.metrics_dir import host_directory
from tests import payloads
from tests.client import post_mps, post_raw
from tests.conftest import MPS_KEYS
from tests.pipeline_fixtures import NO_CALLBACK_INPUT, Pipeline
from tests.servers import ROOT, wait_until

SCRAPES = 6  # each may land on either gunicorn worker
SPEC_METRICS = (  # SPEC 10, as sample names (a histogram by its _count)
    "receiver_callbacks_total", "receiver_inbox_records", "receiver_inbox_oldest_pending_seconds",
    "receiver_rejected_callbacks", "receiver_events_forwarded_total", "receiver_accept_to_forward_seconds_count",
    "receiver_describe_calls_total", "receiver_dead_letters", "receiver_sweeps_total", "receiver_swept_missing_total",
)
SETTLED = ("done", "rejected", "dead")
# A Describe answer that does not fit its schema: UnreadableAnswer, buried at the first attempt (MAX_ATTEMPTS=1).
GARBAGE_ANSWER = {"TaskType": "WorkflowTask", "Status": "FINISH", "WorkflowTask": "garbage"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape_all(pipeline: Pipeline) -> list[Samples]:
    """SCRAPES scrapes, each on a new connection (so either gunicorn worker may answer)."""
    scrapes = []
    for _ in range(SCRAPES):
        response = requests.get(pipeline.receiver.url + "/metrics", timeout=10)
        assert response.status_code == 200, response.text
        scrapes.append(parse(response.text))
    return scrapes


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def by_label(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Every sample of `name` that is not 0, keyed by the values of `labels`."""
    found = {}
    for (sample, pairs), number in samples.items():
        if sample == name and number:
            found[tuple(dict(pairs)[label] for label in labels)] = number
    return found


def emulator_describe_calls(pipeline: Pipeline) -> dict[tuple[str, ...], float]:
    """What the emulator answered the receiver's Describe calls, sorted as receiver_describe_calls_total sorts them."""
    expected: dict[tuple[str, ...], float] = {}
    for key, stats in pipeline.emulator.admin("stats")["actions"].items():
        service, action = key.split(".")
        if not action.startswith("Describe"):
            continue  # the tests' own creating calls
        outcomes = {"ok": stats["calls"] - sum(stats["errors"].values())}
        for code, count in stats["errors"].items():
            outcome = {"RequestLimitExceeded": "rate_limited", "ResourceNotFound": "not_found"}.get(code, "error")
            outcomes[outcome] = outcomes.get(outcome, 0) + count
        expected.update({(service, action, outcome): n for outcome, n in outcomes.items() if n})
    return expected


@dataclass
class Story:
    pipeline: Pipeline
    scrapes: dict[str, list[Samples]] = field(default_factory=dict)
    emulator_calls: dict[str, dict[tuple[str, ...], float]] = field(default_factory=dict)
    oldest_bound: float = 0.0  # chapter 2: the most the pending record can have waited at its scrapes
    waited: float = 0.0  # chapter 3: the least the pending record had waited when worker 2 started
    sweep_report: dict[str, Any] = field(default_factory=dict)
    faults_seen: dict[str, int] = field(default_factory=dict)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_settled(pipeline: Pipeline, records: int, timeout: float = 45) -> None:
    def settled() -> bool:
        rows = pipeline.inbox_rows()
        return len(rows) == records and all(r["state"] in SETTLED for r in rows)

    wait_until(settled, timeout, f"{records} inbox records settled", interval=0.1)


def describe_errors(pipeline: Pipeline, code: str) -> int:
    return pipeline.stats("mps.DescribeTaskDetail")["errors"].get(code, 0)


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    pipeline = Pipeline(tmp_path_factory.mktemp("metrics"), MAX_ATTEMPTS="1")
    told = Story(pipeline)
    try:
        pipeline.start()
        pipeline.start_worker()
        # --- 1. worker 1 ---------------------------------------------------------------------------
        # Tasks that do not call back, created first: they have finished by the time the later ones call back.
        sessions = {name: uid(name) for name in ("copied", "dead", "waiting", "late")}
        silent = {name: pipeline.create_mps_workflow(SessionId=s, SessionContext="ctx", input_info=NO_CALLBACK_INPUT)
                  for name, s in sessions.items()}
        calling = [pipeline.create_mps_workflow(SessionId=uid("a")), pipeline.create_mps_workflow(SessionId=uid("b")),
                   pipeline.create_vod_procedure(), pipeline.create_ams(uid("ams"))]
        pipeline.emulator.admin("answers", {"service": "mps", "action": "DescribeTaskDetail",
                                            "task_id": silent["dead"], "response": GARBAGE_ANSWER})
        pipeline.wait_events(calling)
        delivered = pipeline.emulator.admin("stats")["callbacks"]["counts"]
        assert delivered.get("delivered") == len(calling), delivered

        def callback(name: str) -> dict[str, Any]:
            return payloads.mps_workflow(task_id=silent[name], session_id=sessions[name], session_context="ctx")

        url = pipeline.receiver.url
        assert post_mps(url, callback("copied")).json()["status"] == "accepted"
        assert post_mps(url, callback("copied"), key=MPS_KEYS[1], now=time.time() + 5).json()["status"] == "duplicate"
        assert post_mps(url, callback("copied"), key="not-our-key").status_code == 401
        assert post_raw(url, "mps", b"{not json").status_code == 400
        unknown = payloads.mps_workflow(task_id=f"2500000000-WorkflowTask-{uuid.uuid4().hex}", session_id=uid("u"))
        assert post_mps(url, unknown).json()["status"] == "accepted"
        assert post_mps(url, callback("dead")).json()["status"] == "accepted"
        wait_settled(pipeline, records=7)
        told.scrapes["worker 1"] = scrape_all(pipeline)
        told.emulator_calls["worker 1"] = emulator_describe_calls(pipeline)
        # --- 2. no worker ------------------------------------------------------------------------------
        pipeline.stop_worker()
        posted = time.time()
        assert post_mps(url, callback("waiting")).json()["status"] == "accepted"
        answered = time.time()
        # Not a copy (another Message), but the same state change: two records, one event counted once.
        other = callback("waiting")
        other["WorkflowTaskEvent"] = {**other["WorkflowTaskEvent"], "Message": "said otherwise"}
        assert post_mps(url, other).json()["status"] == "accepted"
        told.scrapes["no worker"] = scrape_all(pipeline)
        told.oldest_bound = time.time() - posted
        # --- 3. worker 2, through InternalError and RequestLimitExceeded -------------------------------
        pipeline.emulator.admin("faults", {"error_rate": 1})
        told.waited = time.time() - answered
        pipeline.start_worker()
        wait_until(lambda: describe_errors(pipeline, "InternalError"), 20, "an InternalError answer")
        pipeline.emulator.admin("faults", {"error_rate": 0, "force_rate_limit": True})
        wait_until(lambda: describe_errors(pipeline, "RequestLimitExceeded"), 20, "a RequestLimitExceeded answer")
        pipeline.emulator.admin("faults", {"force_rate_limit": False})
        pipeline.wait_event(silent["waiting"], timeout=45)
        wait_settled(pipeline, records=9)
        told.faults_seen = {code: describe_errors(pipeline, code) for code in ("InternalError", "RequestLimitExceeded")}
        told.scrapes["worker 2"] = scrape_all(pipeline)
        told.emulator_calls["worker 2"] = emulator_describe_calls(pipeline)
        # --- 4. one sweep, then worker 3 -------------------------------------------------------------------
        pipeline.stop_worker()
        # Late: the sweeper finds the task missing all the same (its event is not out), and enqueues it.
        assert post_mps(url, callback("late")).json()["status"] == "accepted"
        done = subprocess.run([sys.executable, "-m", "receiver.sweeper", "--once"], cwd=ROOT, env=pipeline.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        told.sweep_report = json.loads(done.stdout.strip().splitlines()[-1])
        # Worker 3 claims the late callback and the swept record of its task together: one event, in one batch.
        pipeline.start_worker()
        pipeline.wait_event(silent["late"], timeout=45)
        wait_settled(pipeline, records=12)  # and the dead letter's task, swept and buried again
        told.scrapes["sweep"] = scrape_all(pipeline)
        told.emulator_calls["sweep"] = emulator_describe_calls(pipeline)
        yield told
    finally:
        pipeline.stop()
        shutil.rmtree(host_directory(pipeline.env["INBOX_URL"]), ignore_errors=True)


def test_every_spec_10_metric_is_exported(story):
    for samples in story.scrapes["sweep"]:
        exported = {name for name, _ in samples}
        assert [name for name in SPEC_METRICS if name not in exported] == []


DOOR_AFTER_WORKER_1 = {
    ("mps", "accepted"): 5, ("mps", "duplicate"): 1, ("mps", "unauthorized"): 1, ("mps", "invalid"): 1,
    ("vod", "accepted"): 1, ("ams", "accepted"): 1,
}
DOOR_AFTER_WAITING = {**DOOR_AFTER_WORKER_1, ("mps", "accepted"): 7}
DOOR_AFTER_SWEEP = {**DOOR_AFTER_WORKER_1, ("mps", "accepted"): 8}


@pytest.mark.parametrize(("chapter", "door"), [
    ("worker 1", DOOR_AFTER_WORKER_1), ("no worker", DOOR_AFTER_WAITING), ("worker 2", DOOR_AFTER_WAITING),
    ("sweep", DOOR_AFTER_SWEEP),
])
def test_door_answers_summed_over_both_gunicorn_workers(story, chapter, door):
    for samples in story.scrapes[chapter]:
        assert by_label(samples, "receiver_callbacks_total", "source", "outcome") == door


FORWARDED = {  # (source, event_type): events, after each chapter
    "worker 1": {("mps", "WorkflowTask"): 3, ("vod", "ProcedureStateChanged"): 1, ("ams", "AudioModeration"): 1},
    # the worker process that forwarded them has exited: its figures are still there
    "no worker": {("mps", "WorkflowTask"): 3, ("vod", "ProcedureStateChanged"): 1, ("ams", "AudioModeration"): 1},
    # a new worker process adds to them
    "worker 2": {("mps", "WorkflowTask"): 4, ("vod", "ProcedureStateChanged"): 1, ("ams", "AudioModeration"): 1},
    "sweep": {("mps", "WorkflowTask"): 5, ("vod", "ProcedureStateChanged"): 1, ("ams", "AudioModeration"): 1},
}


@pytest.mark.parametrize("chapter", list(FORWARDED))
def test_events_forwarded_by_the_worker_processes(story, chapter):
    for samples in story.scrapes[chapter]:
        assert by_label(samples, "receiver_events_forwarded_total", "source", "event_type") == FORWARDED[chapter]
        # One accepted-to-forwarded observation per event forwarded.
        assert value(samples, "receiver_accept_to_forward_seconds_count") == sum(FORWARDED[chapter].values())
        assert value(samples, "receiver_accept_to_forward_seconds_bucket", le="+Inf") == sum(
            FORWARDED[chapter].values())
    # The sink's own file agrees.
    if chapter == "sweep":
        events = story.pipeline.events()
        sunk: dict[tuple[str, str], int] = {}
        for event in events:
            sunk[(event["source"], event["event_type"])] = sunk.get((event["source"], event["event_type"]), 0) + 1
        assert sunk == FORWARDED["sweep"]


def test_accept_to_forward_measures_from_the_acceptance(story):
    """The callback that waited for worker 2 took at least as long as it waited; none took longer than the story."""
    before, after = story.scrapes["no worker"][0], story.scrapes["worker 2"][0]
    waited_one = value(after, "receiver_accept_to_forward_seconds_sum") - value(
        before, "receiver_accept_to_forward_seconds_sum")
    assert story.waited <= waited_one < story.waited + 60
    # It is counted in no bucket below the time it waited.
    for (name, labels), count in after.items():
        if name == "receiver_accept_to_forward_seconds_bucket" and dict(labels)["le"] != "+Inf" \
                and float(dict(labels)["le"]) < story.waited:
            assert count == value(before, name, le=dict(labels)["le"])


@pytest.mark.parametrize("chapter", ["worker 1", "worker 2", "sweep"])
def test_describe_calls_are_what_the_emulator_answered(story, chapter):
    expected = story.emulator_calls[chapter]
    for samples in story.scrapes[chapter]:
        assert by_label(samples, "receiver_describe_calls_total", "service", "action", "outcome") == expected
    outcomes = {outcome for _, _, outcome in expected}
    if chapter == "worker 1":
        # The unknown task is looked at again until its patience runs out.
        assert outcomes == {"ok", "not_found"}
        assert expected[("mps", "DescribeTaskDetail", "not_found")] >= 1
    else:
        assert outcomes == {"ok", "not_found", "error", "rate_limited"}
        assert expected[("mps", "DescribeTaskDetail", "error")] == story.faults_seen["InternalError"]
        assert expected[("mps", "DescribeTaskDetail", "rate_limited")] == story.faults_seen["RequestLimitExceeded"]
    if chapter == "sweep":  # the sweeper's own calls, from a process that has exited
        assert {key for key in expected if key[1] == "DescribeTasks"} == {
            ("mps", "DescribeTasks", "ok"), ("vod", "DescribeTasks", "ok"), ("ams", "DescribeTasks", "ok")}


INBOX = {  # receiver_inbox_records by state, receiver_dead_letters, rejections
    "worker 1": ({"done": 5, "rejected": 1, "dead": 1}, 1),
    "no worker": ({"done": 5, "rejected": 1, "dead": 1, "pending": 2}, 1),
    "worker 2": ({"done": 7, "rejected": 1, "dead": 1}, 1),
    "sweep": ({"done": 9, "rejected": 1, "dead": 2}, 2),
}


@pytest.mark.parametrize("chapter", list(INBOX))
def test_inbox_records_dead_letters_and_rejections(story, chapter):
    states, dead = INBOX[chapter]
    for samples in story.scrapes[chapter]:
        assert {state: n for (state,), n in by_label(samples, "receiver_inbox_records", "state").items()} == states
        assert value(samples, "receiver_dead_letters") == dead
        assert by_label(samples, "receiver_rejected_callbacks", "reason") == {("unknown_task",): 1}


@pytest.mark.parametrize("chapter", list(INBOX))
def test_oldest_pending_is_the_age_of_the_waiting_callback(story, chapter):
    for samples in story.scrapes[chapter]:
        oldest = value(samples, "receiver_inbox_oldest_pending_seconds")
        if chapter == "no worker":
            assert oldest is not None and 0 < oldest <= story.oldest_bound
        else:
            assert oldest == 0


def test_sweeper_runs_and_the_tasks_it_found_missing(story):
    report = story.sweep_report
    assert {p: report["products"][p]["missing"] for p in ("mps", "vod", "ams")} == {"mps": 2, "vod": 0, "ams": 0}
    for samples in story.scrapes["sweep"]:
        assert {s: n for (s,), n in by_label(samples, "receiver_sweeps_total", "source").items()} == {
            "mps": 1, "vod": 1, "ams": 1}
        assert value(samples, "receiver_swept_missing_total", source="mps") == 2
        # Zero, but there: an alert on its increase has a series from the first sweep.
        assert value(samples, "receiver_swept_missing_total", source="vod") == 0
        assert value(samples, "receiver_swept_missing_total", source="ams") == 0
    for samples in story.scrapes["worker 2"]:  # before the sweep
        assert by_label(samples, "receiver_sweeps_total", "source") == {}


# --- which directory a process picks (receiver.metrics_dir) ----------------------------------------


def picked(env: dict[str, str], cwd: str | os.PathLike[str] = ROOT) -> str:
    """PROMETHEUS_MULTIPROC_DIR of a process once it imported receiver.metrics (in multiprocess mode: checked)."""
    code = ("import os, receiver.metrics, prometheus_client.values as v; "
            "print(os.environ.get('PROMETHEUS_MULTIPROC_DIR'), v.ValueClass.__name__)")
    clean = {k: v for k, v in os.environ.items() if k not in (metrics_dir.ENV, metrics_dir.DERIVED_ENV)}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**clean, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    directory, value_class = done.stdout.split()
    assert value_class == "MmapedValue", "prometheus_client is not in multiprocess mode"
    return directory


def test_one_directory_per_inbox_file_whichever_way_it_is_named(tmp_path):
    inbox = tmp_path / "var" / "inbox.db"
    absolute = picked({"INBOX_URL": f"sqlite:///{inbox}"})
    relative = picked({"INBOX_URL": "sqlite:///var/inbox.db"}, cwd=tmp_path)
    other = picked({"INBOX_URL": f"sqlite:///{tmp_path}/other.db"})
    try:
        assert absolute == relative == host_directory(f"sqlite:///{inbox}")
        assert other != absolute
        assert os.path.dirname(absolute) == tempfile.gettempdir()
    finally:
        for directory in {absolute, other}:
            shutil.rmtree(directory, ignore_errors=True)


def test_the_operators_directory_is_kept_and_an_inherited_one_is_not_taken_for_it(tmp_path):
    mine = tmp_path / "operators-metrics"
    mine.mkdir()
    assert picked({"INBOX_URL": f"sqlite:///{tmp_path}/a.db", "PROMETHEUS_MULTIPROC_DIR": str(mine)}) == str(mine)
    # A process started from another deployment's environment (with its derived directory) serving another inbox.
    parent = host_directory(f"sqlite:///{tmp_path}/a.db")
    child = picked({"INBOX_URL": f"sqlite:///{tmp_path}/b.db", "PROMETHEUS_MULTIPROC_DIR": parent,
                    "RECEIVER_METRICS_DIR_DERIVED": parent})
    try:
        assert child == host_directory(f"sqlite:///{tmp_path}/b.db") != parent
    finally:
        for directory in (parent, child):
            shutil.rmtree(directory, ignore_errors=True)
