"""A backlog run of the pipeline benchmark: callbacks queued, then the worker started on them, timed to the sink."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from bench.pipeline_callbacks import BACKLOG_STEPS, FINISH_ONLY, Step, post_callbacks, post_one
from bench.pipeline_observe import (
    SinkTail,
    StatsTimeline,
    accept_to_forward,
    call_times,
    forwarded_times,
    unsettled_records,
)
from bench.pipeline_results import Probe, RunResult, action_figures, describe_calls
from bench.pipeline_stack import Setup, Stack, running_stack
from bench.pipeline_tasks import BenchTask, TaskFactory, create_tasks, task_plan, wait_finished
from bench.processes import poll_until, rss_kib


def backlog_timeout(tasks: int, latency: float) -> float:
    """Generous: a serial worker at this latency, twice over, plus a minute."""
    return 60 + 2 * tasks * (latency + 0.02) + tasks / 20


@dataclass
class Drained:
    """What one drain of a queued backlog measured."""

    rss_before_kib: int
    rss_after_kib: int
    drain_s: float
    unsettled: int
    before: dict[str, Any]
    after: dict[str, Any]
    timeline: StatsTimeline
    log_times: dict[str, list[float]] | None


def drain_backlog(stack: Stack, done: Callable[[], bool], timeout: float) -> Drained:
    """Start the worker on the queued callbacks and wait until `done()`, then until the inbox has settled."""
    before = stack.emulator.stats()["actions"]
    timeline = StatsTimeline(stack.emulator).start()
    try:
        worker, rss_before = stack.start_worker()
        started = time.monotonic()  # from the worker's "started" line: its imports are not the backlog's
        poll_until(done, timeout, "every task's event in the sink", stack.children, interval=0.05)
        drain_s = time.monotonic() - started
        unsettled = wait_settled(stack)
    finally:
        timeline.stop()
    log_times = call_times(stack.emulator.call_log())
    return Drained(rss_before, rss_kib(worker.pid), drain_s, unsettled, before, stack.emulator.stats()["actions"],
                   timeline, log_times)


def wait_settled(stack: Stack, timeout: float = 40.0) -> int:
    """Poll until no inbox record is pending or leased, at most `timeout`; how many still are."""
    deadline = time.monotonic() + timeout
    while (unsettled := unsettled_records(stack.inbox)) and time.monotonic() < deadline:
        for child in stack.children:
            child.check_alive()
        time.sleep(0.1)
    return unsettled


def run_backlog(setup: Setup, kind: str, latency: float, task_count: int, products: tuple[str, ...],
                probe_count: int = 0, **env: str) -> RunResult:
    """One backlog run on fresh processes, with an idle probe after it when `probe_count` > 0."""
    name = f"{kind}-{latency * 1000:g}ms"
    with running_stack(setup, name, **env) as stack:
        factory = TaskFactory(stack)
        tasks = create_tasks(factory, task_plan(task_count, products))
        probe_tasks = create_tasks(factory, task_plan(probe_count)) if probe_count else []
        wait_finished(stack, tasks + probe_tasks)
        own_call_ms = stack.emulator.own_call_ms()
        stack.emulator.set_latency(latency)
        answers = post_callbacks(stack.url, tasks)
        expected = {t.event_id for t in tasks}
        sink = SinkTail(stack.sink)
        drained = drain_backlog(stack, lambda: expected <= set(sink.poll()), backlog_timeout(task_count, latency))
        seen = Counter(sink.poll())  # a copy: the probe's events come after
        forwarded = forwarded_times(stack.inbox)
        result = run_result(kind, latency, tasks, answers, BACKLOG_STEPS, expected, seen, forwarded, drained, stack)
        result.emulator_call_ms = own_call_ms
        if probe_tasks:
            result.probe = idle_probe(stack, probe_tasks, sink)
        return result


def run_result(kind: str, latency: float, tasks: list[BenchTask], answers: Counter[str], steps: tuple[Step, ...],
            expected: set[str], seen: Counter[str], forwarded: dict[str, float], drained: Drained,
            stack: Stack) -> RunResult:
    actions = action_figures(drained.before, drained.after, drained.timeline, drained.log_times)
    return RunResult(
        kind=kind, latency=latency, tasks=len(tasks), callbacks=sum(answers.values()), answers=answers, steps=steps,
        expected=expected, seen=seen, forwarded=forwarded, actions=actions, describe_calls=describe_calls(actions),
        accept_to_forward=accept_to_forward(stack.inbox, tasks, forwarded),
        rss_before_kib=drained.rss_before_kib, rss_after_kib=drained.rss_after_kib, drain_s=drained.drain_s,
        unsettled=drained.unsettled,
    )


def idle_probe(stack: Stack, tasks: list[BenchTask], sink: SinkTail, interval: float = 0.2) -> Probe:
    """With the worker idle: one FINISH callback at a time, `interval` apart; accept -> forward of each."""
    answers: Counter[str] = Counter()
    next_at = time.monotonic()
    with requests.Session() as session:
        for task in tasks:
            answers[f"finish: {post_one(session, stack.url, task, FINISH_ONLY[0])}"] += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))  # pacing, not waiting for anything
    wanted = {t.event_id for t in tasks}

    def all_forwarded() -> dict[str, float] | None:
        """The forwarded times once every probe event is in the sink and marked forwarded in the inbox.

        The worker writes the sink first and marks the inbox after: the sink alone can be a moment early.
        """
        if not wanted <= set(sink.poll()):
            return None
        forwarded = forwarded_times(stack.inbox)
        return forwarded if wanted <= set(forwarded) else None

    forwarded = poll_until(all_forwarded, 60 + len(tasks), "the probe's events", stack.children, interval=0.02)
    return Probe(accept_to_forward(stack.inbox, tasks, forwarded), answers, len(tasks))
