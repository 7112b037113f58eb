"""Describe scheduling (SPEC 6): look-again backoff, priorities and concurrency, the BatchTask session index."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver.batch_sessions import REFRESH_SECONDS, BatchSessionIndex
from receiver.inbox import PRIORITY_FIRST_CALL, PRIORITY_LOOK_AGAIN, PRIORITY_SWEPT
from receiver.scheduler import Deferred, DescribeScheduler, look_again_at
from receiver.tencentcloud import DescribeCall
from tests.servers import wait_until

KEY = ("mps", "DescribeTaskDetail")


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


class GateQuota:
    """A quota whose slots the test hands out one by one."""

    def __init__(self, limit: int = 100, open_slots: float = math.inf):
        self.limit = limit
        self.open_slots = open_slots
        self.throttles = 0

    def try_take(self) -> tuple[float, int]:
        if self.open_slots <= 0:
            return 0.01, -1
        self.open_slots -= 1
        return 0.0, 0

    def started(self, slot: int) -> None:
        pass

    def throttled(self) -> None:
        self.throttles += 1

    def close(self) -> None:
        pass


def queued(scheduler: DescribeScheduler) -> int:
    return sum(len(action.queue) for action in scheduler._actions.values())


def test_first_calls_go_before_look_agains_and_look_agains_before_swept_tasks():
    quota = GateQuota(open_slots=0)
    order: list[str] = []
    scheduler = DescribeScheduler(lambda call: order.append(call.params["TaskId"]) or {}, {KEY: quota}, 64)
    callers = [(f"swept-{n}", PRIORITY_SWEPT) for n in range(5)] + \
        [(f"again-{n}", PRIORITY_LOOK_AGAIN) for n in range(5)] + [("first", PRIORITY_FIRST_CALL)]
    with ThreadPoolExecutor(len(callers)) as pool:
        for task_id, priority in callers:  # the first call comes last
            pool.submit(scheduler.call, DescribeCall("mps", "DescribeTaskDetail", {"TaskId": task_id}), priority)
        wait_until(lambda: queued(scheduler) == len(callers), 5, "every call queued")
        for made in range(1, len(callers) + 1):  # one slot at a time, so the order is the grants' order
            quota.open_slots = 1
            wait_until(lambda made=made: len(order) == made, 5, f"call {made}")
    scheduler.close()
    assert order[0] == "first"
    assert all(task.startswith("again") for task in order[1:6]) and all(t.startswith("swept") for t in order[6:])


def test_calls_in_flight_follow_the_latency_and_never_pass_the_cap():
    in_flight, most = 0, 0
    lock = threading.Lock()

    def slow(call: DescribeCall) -> dict[str, Any]:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.2)  # the API's latency, not a wait for the test
        with lock:
            in_flight -= 1
        return {}

    scheduler = DescribeScheduler(slow, {KEY: GateQuota(limit=100)}, max_in_flight=12)
    with ThreadPoolExecutor(60) as pool:
        list(pool.map(lambda n: scheduler.call(DescribeCall("mps", "DescribeTaskDetail", {"TaskId": n}), 0),
                      range(60)))
    scheduler.close()
    assert most == 12  # 100/s at 0.2 s needs 20 in flight: the cap holds it at 12


def test_request_limit_exceeded_slows_the_whole_action_and_a_closed_scheduler_makes_no_call():
    quota = GateQuota()

    def throttled(call: DescribeCall) -> dict[str, Any]:
        raise TencentCloudSDKException("RequestLimitExceeded", "too many")

    scheduler = DescribeScheduler(throttled, {KEY: quota}, 4)
    with pytest.raises(TencentCloudSDKException):
        scheduler.call(DescribeCall("mps", "DescribeTaskDetail", {"TaskId": "a"}), 0)
    assert quota.throttles == 1
    scheduler.close()
    with pytest.raises(Deferred):
        scheduler.call(DescribeCall("mps", "DescribeTaskDetail", {"TaskId": "b"}), 0)


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
