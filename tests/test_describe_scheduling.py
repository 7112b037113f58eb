"""The worker's Describe scheduling against real processes (SPEC 6): many calls in flight under the host's
per-action limit, first calls ahead of look-agains and swept tasks, leases that outlive slow calls, and a
kill -9 with calls in flight.

Each test runs its own emulator, receiver and worker process(es), since each needs its own limits and
settings; the emulator's faults inject the latency. What is asserted is read at the emulator (its counters,
its log of admitted calls in order) and in the sink and the inbox, never a wall-clock duration: deadlines
only bound the waiting.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from receiver import auth
from receiver.inbox import PRIORITY_LOOK_AGAIN, PRIORITY_SWEPT, Outcome, Settlement
from receiver.inbox.sqlite import SqliteInbox
from receiver.records import extract_record, swept_record
from tests import payloads
from tests.client import post_mps
from tests.conftest import MPS_KEYS
from tests.pipeline_fixtures import NO_CALLBACK_INPUT, Pipeline
from tests.servers import wait_until

ACTION = "mps.DescribeTaskDetail"


@pytest.fixture
def make_pipeline(tmp_path) -> Iterator[Callable[..., Pipeline]]:
    """Start a pipeline (no worker yet) with the test's settings; stopped, workers included, afterwards."""
    started: list[Pipeline] = []

    def make(**settings) -> Pipeline:
        pipeline = Pipeline(tmp_path, **settings)
        started.append(pipeline)
        return pipeline.start()

    yield make
    for pipeline in started:
        pipeline.stop()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def create_tasks(pipeline: Pipeline, count: int, prefix: str, threads: int = 8, **extra) -> list[str]:
    """`count` MPS workflow tasks notifying the receiver (each calling back unless `extra` says otherwise)."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: pipeline.create_mps_workflow(SessionId=uid(prefix), SessionContext="ctx",
                                                                    **extra), range(count)))


def wait_in_inbox(pipeline: Pipeline, task_ids: list[str], timeout: float = 60) -> None:
    wanted = set(task_ids)
    wait_until(lambda: len({r["task_id"] for r in pipeline.inbox_rows(source="mps")} & wanted) == len(wanted),
               timeout, f"{len(wanted)} callbacks in the inbox", interval=0.2)


def assert_each_event_once(pipeline: Pipeline, task_ids: list[str]) -> None:
    wanted = set(task_ids)
    events = [e for e in pipeline.events() if e["task_id"] in wanted]
    by_task = Counter(e["task_id"] for e in events)
    by_event_id = Counter(e["event_id"] for e in events)
    assert set(by_task) == wanted, f"{len(wanted - set(by_task))} task(s) without an event"
    assert [t for t, n in by_task.items() if n > 1] == [], "tasks with more than one event"
    assert [i for i, n in by_event_id.items() if n > 1] == [], "events forwarded twice"
    assert len(by_event_id) == len(wanted)


def signed_callback(task_id: str, session_id: str, context: str = "ctx") -> dict:
    """The FINISH callback MPS sends for a task, as the door receives it."""
    body = payloads.mps_workflow(task_id=task_id, status="FINISH", session_id=session_id, session_context=context)
    return auth.sign_mps_notification(body, MPS_KEYS[0])


# --- 1. the limit holds under concurrency ---------------------------------------------------------------------

LIMIT = 100


def test_500_callbacks_two_worker_processes_100ms_latency_never_exceed_the_limit(make_pipeline):
    pipeline = make_pipeline(mps_describe_limit=LIMIT, WORKER_PROCESSES="2")
    pipeline.emulator.admin("faults", {"latency": 0.1})
    pipeline.add_worker()
    pipeline.add_worker()
    # The callbacks come in faster than the limit lets them be described: both processes always have work.
    task_ids = create_tasks(pipeline, 500, "limit", threads=32)
    pipeline.wait_events(task_ids, timeout=60)
    pipeline.wait_settled(timeout=30, source="mps")
    stats = pipeline.stats(ACTION)
    assert stats["limit"] == LIMIT
    assert stats["errors"].get("RequestLimitExceeded", 0) == 0, stats
    assert stats["max_1s_window_attempted"] <= LIMIT, stats  # attempted: the admitted count is capped anyway
    assert_each_event_once(pipeline, task_ids)
    # The limit was approached, so it is what held the calls back: this load, at this latency, needs concurrency.
    assert stats["max_1s_window"] >= LIMIT // 2, (
        f"at most {stats['max_1s_window']} calls in a second, {stats['max_in_flight']} at once: "
        f"the load never came near the limit of {LIMIT}/s")


# --- 2. first calls before look-agains and swept tasks --------------------------------------------------------

BACKLOG_LIMIT = 20
SWEPT, LOOK_AGAINS = 300, 100


def seed_backlog(pipeline: Pipeline, look_again_tasks: list[tuple[str, str]], swept_tasks: list[str]) -> None:
    """Due look-agains (callbacks whose first look was inconclusive) and swept tasks, put in the inbox directly."""
    inbox = SqliteInbox(pipeline.tmp_path / "inbox.db")
    try:
        now = time.time()
        records = []
        for task_id, session_id in look_again_tasks:
            body = signed_callback(task_id, session_id)
            records.append(extract_record("mps", body, json.dumps(body).encode(), now))
        with ThreadPoolExecutor(8) as pool:  # one group commit for many
            assert not any(r.duplicate for r in pool.map(inbox.accept, records))
        owner = "backlog-seeder:1"
        claimed = inbox.claim(owner, len(records), 60, now)
        assert {c.record.id for c in claimed} == {r.id for r in records}
        inbox.settle(owner, [Settlement(c.record.id, Outcome.RETRY, "the status lagged the callback", now)
                             for c in claimed], now)
        swept = [swept_record("mps", "WorkflowTask", task_id, now) for task_id in swept_tasks]
        with ThreadPoolExecutor(8) as pool:
            assert not any(r.duplicate for r in pool.map(inbox.accept, swept))
    finally:
        inbox.close()
    rows = pipeline.inbox_rows(state="pending")
    assert Counter(r["priority"] for r in rows) == {PRIORITY_LOOK_AGAIN: LOOK_AGAINS, PRIORITY_SWEPT: SWEPT}
    assert all(r["next_attempt_at"] <= time.time() for r in rows)  # all due now


def test_a_backlog_of_swept_tasks_and_look_agains_does_not_hold_up_a_new_callbacks_first_call(make_pipeline):
    pipeline = make_pipeline(mps_describe_limit=BACKLOG_LIMIT)
    # Real tasks that never call back themselves: the inbox holds all there is about them.
    sessions = [uid("backlog") for _ in range(SWEPT + LOOK_AGAINS + 1)]
    with ThreadPoolExecutor(8) as pool:
        task_ids = list(pool.map(lambda s: pipeline.create_mps_workflow(
            SessionId=s, SessionContext="ctx", input_info=NO_CALLBACK_INPUT), sessions))
    (new_task, new_session), *look_agains = list(zip(task_ids, sessions, strict=True))[:LOOK_AGAINS + 1]
    swept = task_ids[LOOK_AGAINS + 1:]
    backlog = set(swept) | {t for t, _ in look_agains}
    seed_backlog(pipeline, look_agains, swept)
    # 400 calls at 20/s: about 20 s of work for the worker.
    pipeline.emulator.admin("faults", {"latency": 0.2})
    worker = pipeline.start_worker()
    try:
        def backlog_calls() -> list[dict]:
            return [c for c in pipeline.calls("mps", "DescribeTaskDetail") if c["task_id"] in backlog]

        wait_until(lambda: len(backlog_calls()) >= 30, 30, "the worker to be working through the backlog",
                   interval=0.1)
        answer = post_mps(pipeline.receiver.url, signed_callback(new_task, new_session))
        assert answer.json()["status"] == "accepted"
        accepted_at = time.time()
        assert len(backlog_calls()) < 100, "the backlog was nearly done before the callback came"

        def decided() -> tuple[int | None, list[dict]] | None:
            calls = pipeline.calls("mps", "DescribeTaskDetail")
            first = next((i for i, c in enumerate(calls) if c["task_id"] == new_task), None)
            ahead = [c for c in calls[:first] if c["task_id"] in backlog and c["at"] > accepted_at]
            return (first, ahead) if first is not None or len(ahead) > BACKLOG_LIMIT else None

        first, ahead = wait_until(decided, 60, "the new callback's first call, or the backlog's calls ahead of it",
                                  interval=0.1)
        assert first is not None and len(ahead) <= BACKLOG_LIMIT, (
            f"{len(ahead)} backlog calls were admitted after the new callback was accepted "
            + ("before its first Describe call" if first is not None else "and its first Describe call is not made"))
    finally:
        worker.kill9()  # the rest of the backlog is of no interest


# --- 3. a lease outlives a call longer than it ---------------------------------------------------------------

LEASE_SECONDS = 1.0
SLOW_CALL_SECONDS = 3.0


def test_a_call_longer_than_the_lease_does_not_lead_to_a_second_claim(make_pipeline):
    pipeline = make_pipeline(WORKER_LEASE_SECONDS=str(LEASE_SECONDS), WORKER_PROCESSES="2")
    workers = [pipeline.add_worker(), pipeline.add_worker()]
    session_id = uid("lease")
    task_id = pipeline.create_mps_workflow(SessionId=session_id, SessionContext="ctx", input_info=NO_CALLBACK_INPUT)
    wait_until(lambda: pipeline.describe("mps", "DescribeTaskDetail", task_id)["Status"] == "FINISH", 15,
               "the task to finish")
    pipeline.emulator.admin("faults", {"latency": SLOW_CALL_SECONDS})
    posted_at = time.time()
    before = pipeline.stats(ACTION)["calls"]  # the test's own Describe calls, all answered by now
    answer = post_mps(pipeline.receiver.url, signed_callback(task_id, session_id))
    assert answer.json()["status"] == "accepted"
    record_id = answer.json()["id"]

    def worker_calls() -> list[dict]:
        return [c for c in pipeline.calls("mps", "DescribeTaskDetail") if c["task_id"] == task_id
                and c["at"] > posted_at]

    # While the worker's call is being answered: the record is leased for the short lease, not longer.
    wait_until(lambda: pipeline.stats(ACTION)["in_flight"] >= 1, 15, "the worker's Describe call", interval=0.02)
    [row] = pipeline.inbox_rows(id=record_id)
    assert row["state"] == "leased"
    held_for = row["lease_expires_at"] - time.time()
    assert held_for <= LEASE_SECONDS + 0.5, (
        f"the record is leased for {held_for:.0f} more seconds, not WORKER_LEASE_SECONDS={LEASE_SECONDS}")

    def settled_or_claimed_again():
        [row] = pipeline.inbox_rows(id=record_id)
        return row if row["attempts"] > 1 or row["state"] == "done" else None

    row = wait_until(settled_or_claimed_again, 30, "the callback settled (or claimed again)", interval=0.05)
    # Every call the emulator counted, admitted or not.
    begun = pipeline.stats(ACTION)["calls"] - before
    assert row["attempts"] == 1, (
        f"the record was claimed {row['attempts']} times (now {row['state']}, leased by {row['lease_owner']}; "
        f"workers {[w.process.pid for w in workers if w.process]}): {begun} Describe call(s) for it so far")
    wait_until(lambda: pipeline.stats(ACTION)["in_flight"] == 0, 15, "the Describe calls to be answered")
    assert (len(worker_calls()), pipeline.stats(ACTION)["calls"] - before) == (1, 1)
    pipeline.wait_events([task_id], timeout=10)
    assert len(pipeline.events_for(task_id)) == 1


# --- 4. kill -9 of the worker with 64 calls in flight ---------------------------------------------------------

IN_FLIGHT = 64


def test_kill_9_of_the_worker_with_64_calls_in_flight_loses_no_event_and_forwards_none_twice(make_pipeline):
    pipeline = make_pipeline(mps_describe_limit=100)
    task_ids = create_tasks(pipeline, 300, "inflight")
    wait_in_inbox(pipeline, task_ids)
    pipeline.emulator.admin("faults", {"latency": 1.0})
    doomed = pipeline.start_worker()
    try:
        wait_until(lambda: pipeline.stats(ACTION)["in_flight"] >= IN_FLIGHT, 20,
                   f"{IN_FLIGHT} Describe calls in flight", interval=0.02)
    except AssertionError as error:
        stats = pipeline.stats(ACTION)
        raise AssertionError(f"{error}: at most {stats.get('max_in_flight')} were, "
                             f"after {stats['calls']} call(s)") from None
    finally:
        doomed.kill9()
    assert pipeline.inbox_rows(state="leased"), "the worker was not killed in the middle of its work"
    pipeline.start_worker()
    pipeline.wait_events(task_ids, timeout=60)
    pipeline.wait_settled(timeout=30, source="mps")
    assert_each_event_once(pipeline, task_ids)
