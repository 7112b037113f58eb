"""Describe scheduling (SPEC 6): look-again backoff, a pass's budget, the BatchTask session index."""

from __future__ import annotations

from typing import Any

import pytest

from receiver.batch_sessions import REFRESH_SECONDS, BatchSessionIndex
from receiver.ratelimit import RateLimitTimeout
from receiver.reconcile import DescribeCall
from receiver.scheduler import Deferred, PassBudget, look_again_at


def test_look_agains_back_off_and_the_last_falls_at_the_end_of_the_patience():
    received, patience = 1000.0, 20.0
    now, looks = received, [received]
    for attempts in range(1, 10):
        now = look_again_at(now, attempts, received + patience)
        looks.append(now)
        if now >= received + patience:
            break
    assert looks == [1000.0, 1002.0, 1006.0, 1014.0, 1020.0]  # five calls for a task that never appears


def test_a_record_past_its_patience_is_looked_at_now():
    assert look_again_at(50.0, 3, 40.0) == 50.0


def test_a_pass_stops_asking_an_action_whose_slots_ran_out_and_goes_on_with_others():
    asked: list[str] = []

    def call(describe: DescribeCall, deadline: float) -> dict[str, Any]:
        asked.append(describe.action)
        if describe.action == "DescribeTaskDetail":
            raise RateLimitTimeout()
        return {"ok": True}

    budget = PassBudget(call, seconds=1.0)
    busy = DescribeCall("mps", "DescribeTaskDetail", {"TaskId": "a"})
    with pytest.raises(Deferred):
        budget.call(busy)
    with pytest.raises(Deferred):
        budget.call(busy)  # not asked again: it would only wait for the deadline again
    assert budget.call(DescribeCall("mps", "DescribeBatchTaskDetail", {"TaskId": "b"})) == {"ok": True}
    assert asked == ["DescribeTaskDetail", "DescribeBatchTaskDetail"]


class FakeMps:
    """DescribeTasks / DescribeBatchTaskDetail of a few BatchTasks, counting calls."""

    def __init__(self, sessions: dict[str, str]):
        self.sessions = sessions
        self.calls: list[str] = []

    def __call__(self, call: DescribeCall) -> dict[str, Any]:
        self.calls.append(call.action)
        if call.action == "DescribeTasks":
            tasks = [{"TaskId": t, "TaskType": "BatchTask"} for t in self.sessions] if call.params["Status"] == \
                "FINISH" else []
            return {"TaskSet": tasks + [{"TaskId": "wf", "TaskType": "WorkflowTask"}], "ScrollToken": ""}
        return {"TaskId": call.params["TaskId"], "SessionId": self.sessions[call.params["TaskId"]]}


def test_the_session_index_finds_a_batch_task_and_describes_each_task_once():
    clock = [0.0]
    index = BatchSessionIndex(86400, clock=lambda: 1_800_000_000.0, monotonic=lambda: clock[0])
    mps = FakeMps({"b1": "order-1", "b2": "order-2"})
    assert index.find("order-2", mps) == "b2"
    assert sorted(mps.calls) == ["DescribeBatchTaskDetail"] * 2 + ["DescribeTasks"] * 3
    assert index.find("order-1", mps) == "b1" and len(mps.calls) == 5  # known: no call


def test_made_up_sessions_share_one_refresh_and_cost_no_calls_of_their_own():
    clock = [0.0]
    index = BatchSessionIndex(86400, clock=lambda: 1_800_000_000.0, monotonic=lambda: clock[0])
    mps = FakeMps({"b1": "order-1"})
    assert index.find("forged-0", mps) is None
    spent = len(mps.calls)
    for i in range(1, 100):
        assert index.find(f"forged-{i}", mps) is None
    assert len(mps.calls) == spent
    clock[0] += REFRESH_SECONDS
    mps.sessions["b2"] = "order-2"  # a new task: the next refresh learns it, describing only it
    assert index.find("order-2", mps) == "b2"
    assert mps.calls[spent:].count("DescribeBatchTaskDetail") == 1
