"""Issue 9, findings 3 and 4, end to end: a forged callback sent under a captured signature, ahead of the
genuine one, can neither suppress the genuine event nor take its place.

The tasks are created silent (`emulator:no-callback`), and the test sends the genuine callback itself, built
from the task's Describe answer exactly as the emulator (and MPS, VOD) would: so the order of the two
callbacks is the test's, not a race.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests import payloads
from tests.client import post_mps, post_vod
from tests.pipeline_fixtures import NO_CALLBACK_INPUT, Pipeline
from tests.servers import wait_until

# Long enough to send a forged FINISH while the task still runs, and to see the forged copy settle first.
FINISH_AFTER_SECONDS = 4.0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    yield from Pipeline(tmp_path_factory.mktemp("forged"), finish_after=FINISH_AFTER_SECONDS,
                        CONSISTENCY_PATIENCE_SECONDS="1").running_with_worker()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def settled(pipeline: Pipeline, record_id: str) -> dict[str, Any]:
    def row() -> Any:
        rows = pipeline.inbox_rows(id=record_id)
        return rows and rows[0]["state"] in ("done", "rejected", "dead") and rows[0]

    return wait_until(row, 30, f"record {record_id} to settle")


def wait_status(pipeline: Pipeline, service: str, task_id: str, status: str) -> dict[str, Any]:
    return wait_until(lambda: (a := pipeline.describe(service, "DescribeTaskDetail", task_id))["Status"] == status
                      and a, 30, f"task {task_id} to reach {status}")


def genuine_mps_callback(answer: dict[str, Any]) -> dict[str, Any]:
    """The ParseNotification body MPS sends for a workflow task, from its Describe answer."""
    return {"EventType": "WorkflowTask", "WorkflowTaskEvent": answer["WorkflowTask"],
            "SessionId": answer["SessionId"], "SessionContext": answer["SessionContext"]}


def test_a_forged_session_context_does_not_suppress_the_genuine_callback(pipeline):
    session = uid("order")
    task_id = pipeline.create_mps_workflow(input_info=NO_CALLBACK_INPUT, SessionId=session,
                                           SessionContext="the-genuine-context")
    answer = wait_status(pipeline, "mps", task_id, "FINISH")
    forged = payloads.mps_workflow(task_id=task_id, status="FINISH", session_id=session,
                                   session_context="forged-context")
    forged_id = post_mps(pipeline.receiver.url, forged).json()["id"]
    assert settled(pipeline, forged_id)["reason"] == "session_mismatch"

    genuine = post_mps(pipeline.receiver.url, genuine_mps_callback(answer)).json()
    assert genuine["status"] == "accepted", genuine  # was: "duplicate", and never reconciled
    event = pipeline.wait_event(task_id)
    assert event["status"] == "FINISH" and event["session_context"] == "the-genuine-context"


@pytest.mark.parametrize("forgery", ["another body", "an exact copy"])
def test_a_forged_finish_sent_while_the_task_runs_does_not_suppress_the_real_finish(pipeline, forgery):
    """A task without SessionId: even the sweeper could not rescue it once its key was taken."""
    task_id = pipeline.create_mps_workflow(input_info=NO_CALLBACK_INPUT)
    running = pipeline.describe("mps", "DescribeTaskDetail", task_id)
    assert running["Status"] != "FINISH"
    if forgery == "an exact copy":  # what the genuine FINISH will say, guessed from the running task
        forged = genuine_mps_callback({**running, "WorkflowTask": {**running["WorkflowTask"], "Status": "FINISH"}})
    else:
        forged = payloads.mps_workflow(task_id=task_id, status="FINISH", session_id="", session_context="")
    forged_id = post_mps(pipeline.receiver.url, forged).json()["id"]
    assert settled(pipeline, forged_id)["state"] == "done"  # after the patience: the authoritative status
    [early] = pipeline.events_for(task_id)
    assert early["status"] in ("WAITING", "PROCESSING")

    answer = wait_status(pipeline, "mps", task_id, "FINISH")
    genuine = post_mps(pipeline.receiver.url, genuine_mps_callback(answer)).json()
    assert genuine["status"] == "accepted", genuine
    finished = wait_until(lambda: [e for e in pipeline.events_for(task_id) if e["status"] == "FINISH"], 30,
                          "the FINISH event")
    assert len(finished) == 1 and finished[0]["succeeded"] is True


def test_a_forged_event_type_is_rejected_and_the_genuine_event_still_goes_out(pipeline):
    """A TranscodeComplete for a Procedure task went out first, and the ProcedureStateChanged was then dropped."""
    session = uid("vod")
    task_id = pipeline.create_vod_procedure(SessionId=session, SessionContext="emulator:no-callback")
    answer = wait_status(pipeline, "vod", task_id, "FINISH")
    procedure = answer["ProcedureTask"]
    forged = {"EventType": "TranscodeComplete", "TranscodeCompleteEvent": {
        "TaskId": task_id, "Status": "FINISH", "ErrCode": 0, "Message": "",
        "SessionId": procedure["SessionId"], "SessionContext": procedure["SessionContext"]}}
    forged_id = post_vod(pipeline.receiver.url, forged).json()["id"]
    assert settled(pipeline, forged_id)["reason"] == "event_type_mismatch"

    genuine = {"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": procedure}
    assert post_vod(pipeline.receiver.url, genuine).json()["status"] == "accepted"
    [event] = pipeline.wait_events([task_id])[task_id]
    assert event["event_type"] == "ProcedureStateChanged" and event["status"] == "FINISH"
