"""`tc-receiver`: inspect a task, replay by filter (SPEC 10), against a running pipeline over real sockets.

The commands run as an operator runs them: the installed console script, in
a process of its own, reading the deployment's environment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.client import post_mps
from tests.pipeline_fixtures import NO_CALLBACK_INPUT, Pipeline
from tests.servers import ROOT, wait_until


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    yield from Pipeline(tmp_path_factory.mktemp("cli")).running_with_worker()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def tc_receiver(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess:
    """The console script `make` installs; `python -m receiver` where it is not on PATH beside the interpreter."""
    script = Path(sys.executable).with_name("tc-receiver")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "receiver"]
    return subprocess.run([*command, *args], cwd=ROOT, env=pipeline.env, capture_output=True, text=True, timeout=60)


def settled(pipeline: Pipeline, record_id: str, state: str) -> dict[str, Any]:
    def row() -> Any:
        rows = pipeline.inbox_rows(id=record_id)
        return rows and rows[0]["state"] == state and rows[0]

    return wait_until(row, 30, f"record {record_id} to be {state}")


def genuine_callback(answer: dict[str, Any]) -> dict[str, Any]:
    return {"EventType": "WorkflowTask", "WorkflowTaskEvent": answer["WorkflowTask"],
            "SessionId": answer["SessionId"], "SessionContext": answer["SessionContext"]}


def finished_task(pipeline: Pipeline) -> tuple[str, dict[str, Any]]:
    task_id = pipeline.create_mps_workflow(input_info=NO_CALLBACK_INPUT, SessionId=uid("session"),
                                           SessionContext="the-genuine-context")
    answer = wait_until(lambda: (a := pipeline.describe("mps", "DescribeTaskDetail", task_id))["Status"] == "FINISH"
                        and a, 30, "the task to finish")
    return task_id, answer


def test_the_console_script_is_installed_and_every_command_has_help():
    assert shutil.which("tc-receiver", path=str(Path(sys.executable).parent)), "make installs tc-receiver"
    for command in ([], ["run"], ["worker"], ["sweeper"], ["inspect"], ["dead-letters"], ["dead-letters", "list"],
                    ["replay"]):
        shown = subprocess.run([sys.executable, "-m", "receiver", *command, "--help"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0 and "Usage:" in shown.stdout, (command, shown.stderr)


def test_inspect_shows_a_rejected_copy_the_genuine_callback_its_duplicate_and_the_event_in_order(pipeline):
    task_id, answer = finished_task(pipeline)
    forged = {**genuine_callback(answer), "SessionContext": "someone-else's"}
    forged_id = post_mps(pipeline.receiver.url, forged).json()["id"]
    settled(pipeline, forged_id, "rejected")
    genuine = post_mps(pipeline.receiver.url, genuine_callback(answer)).json()
    again = post_mps(pipeline.receiver.url, genuine_callback(answer)).json()  # Tencent's retry, a fresh signature
    assert genuine["status"] == "accepted" and again == {**genuine, "status": "duplicate"}
    event = pipeline.wait_event(task_id)
    settled(pipeline, genuine["id"], "done")

    shown = tc_receiver(pipeline, "inspect", task_id, "--json")
    assert shown.returncode == 0, shown.stderr
    timeline = json.loads(shown.stdout)["timeline"]
    assert [(item["what"], item["record_id"]) for item in timeline] == [
        ("callback", forged_id), ("rejected", forged_id), ("callback", genuine["id"]), ("forwarded", genuine["id"]),
    ]
    first, rejected, callback, forwarded = timeline
    assert (first["claimed_status"], first["answer"], first["duplicates"]) == ("FINISH", "accepted", 0)
    assert rejected["reason"] == "session_mismatch"
    assert (callback["answer"], callback["duplicates"], callback["state"]) == ("accepted", 1, "done")
    assert forwarded["event_id"] == event["event_id"] and forwarded["status"] == "FINISH"
    assert forwarded["reconciled_with"] == "mps:DescribeTaskDetail" and forwarded["sink"] == "LogSink"
    assert [item["at"] for item in timeline] == sorted(item["at"] for item in timeline)

    table = tc_receiver(pipeline, "inspect", task_id)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"task {task_id}: 4 entries"
    body = lines[2:]  # after the header row
    assert [line.split()[3] for line in body] == ["callback", "rejected", "callback", "forwarded"]
    assert "session_mismatch" in body[1] and "(+1 duplicate)" in body[2] and event["event_id"] in body[3]


def test_inspect_of_a_task_nobody_called_back_says_so(pipeline):
    shown = tc_receiver(pipeline, "inspect", "2500000000-WorkflowTask-" + "0" * 32)
    assert shown.returncode == 0 and "(nothing known about this task)" in shown.stdout


def test_replay_by_reason_lists_then_reconciles_and_never_forwards_an_event_twice(pipeline):
    model_id, model = finished_task(pipeline)
    task_id = f"2500000000-WorkflowTask-{uuid.uuid4().hex}"  # a task the emulator does not know yet
    answer = json.loads(json.dumps(model).replace(model_id, task_id))
    # Two records of the one task: the second body carries a field of its own, so it is no copy of the first.
    first = post_mps(pipeline.receiver.url, genuine_callback(answer)).json()["id"]
    second = post_mps(pipeline.receiver.url, {**genuine_callback(answer), "Extra": "x"}).json()["id"]
    for record_id in (first, second):
        assert settled(pipeline, record_id, "rejected")["reason"] == "unknown_task"
    other = post_mps(pipeline.receiver.url, {**genuine_callback(model), "SessionContext": "forged"}).json()["id"]
    settled(pipeline, other, "rejected")  # session_mismatch: not chosen by --reason unknown_task

    dry = tc_receiver(pipeline, "replay", "--reason", "unknown_task", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    listed = {line.split()[0] for line in dry.stdout.splitlines()}
    assert listed == {first, second}
    assert {row["state"] for row in pipeline.inbox_rows(task_id=task_id)} == {"rejected"}  # nothing changed

    # The task becomes visible at Tencent Cloud; the first record is replayed and forwarded once.
    installed = requests.post(f"{pipeline.emulator.url}/_emulator/answers", timeout=5, json={
        "service": "mps", "action": "DescribeTaskDetail", "task_id": task_id, "response": answer})
    assert installed.status_code == 200, installed.text
    done = tc_receiver(pipeline, "replay", "--reason", "unknown_task", "--source", "mps", first)
    assert done.returncode == 0 and "replayed 1 record(s)" in done.stdout, done.stderr
    settled(pipeline, first, "done")
    [event] = pipeline.wait_events([task_id])[task_id]

    # The second record's event is the same state change: replayed, it is done and sends nothing.
    again = tc_receiver(pipeline, "replay", second)
    assert again.returncode == 0 and "replayed 1 record(s)" in again.stdout, again.stderr
    settled(pipeline, second, "done")
    assert pipeline.events_for(task_id) == [event]
    timeline = json.loads(tc_receiver(pipeline, "inspect", task_id, "--json").stdout)["timeline"]
    assert [item["what"] for item in timeline if item["record_id"] == second][-1] == "already_forwarded"
    assert settled(pipeline, other, "rejected")  # never chosen


def test_replay_refuses_a_bad_time_and_names_it(pipeline):
    shown = tc_receiver(pipeline, "replay", "--since", "yesterday-ish", "--dry-run")
    assert shown.returncode != 0 and "yesterday-ish" in shown.stderr
