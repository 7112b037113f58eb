"""The soak of the pipeline benchmark: the worker's memory over many events, tasks fed while it runs."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import BenchError
from bench.pipeline_observe import SinkTail
from bench.pipeline_runs import wait_settled
from bench.pipeline_stack import DESCRIBE_ACTIONS, Setup, running_stack
from bench.pipeline_tasks import BenchTask, TaskFactory, create_tasks, task_plan
from bench.processes import poll_until, rss_kib


@dataclass
class SoakResult:
    events: int
    emulator_call_ms: float
    start_rss_kib: int
    samples: list[tuple[int, int]]  # (events forwarded, worker RSS KiB) at each tenth
    missing: int
    doubled: int
    unexpected: int
    wall_s: float
    answers: Counter[str]

    @property
    def growth(self) -> float:
        """RSS at the end over RSS at the first tenth, minus one."""
        if len(self.samples) < 2:
            return math.nan
        return self.samples[-1][1] / self.samples[0][1] - 1


class Feeder:
    """Creates tasks that call back by themselves, staying at most `lead` events ahead of the sink."""

    def __init__(self, factory: TaskFactory, total: int, lead: int, forwarded: Callable[[], int]):
        self.factory = factory
        self.total = total
        self.lead = lead
        self.forwarded = forwarded
        self.created: list[BenchTask] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-feeder", daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def check(self) -> bool:
        """True while the feeder is well; raises BenchError once it failed."""
        if self.error is not None:
            raise BenchError(f"the soak's feeder failed: {self.error!r}")
        return True

    def _run(self) -> None:
        try:
            while len(self.created) < self.total and not self._stop.is_set():
                if len(self.created) - self.forwarded() >= self.lead:
                    self._stop.wait(0.05)  # backpressure: let the worker catch up
                    continue
                chunk = task_plan(min(300, self.total - len(self.created)))
                self.created += create_tasks(self.factory, chunk, threads=4)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self.error = error


def run_soak(setup: Setup, events: int, timeout: float) -> SoakResult:
    """Limits raised on both sides, latency 0, tasks fed while the worker runs; RSS at each tenth of `events`."""
    high = 100_000
    flags = list(itertools.chain.from_iterable(("--rate-limit", f"{a}={high}") for a in DESCRIBE_ACTIONS))
    env = {variable: str(high) for variable in DESCRIBE_ACTIONS.values()}
    started = time.monotonic()
    deadline = started + timeout
    with running_stack(setup, "soak", flags, **env) as stack:
        own_call_ms = stack.emulator.own_call_ms()
        sink = SinkTail(stack.sink)
        worker, rss = stack.start_worker()
        samples: list[tuple[int, int]] = []
        feeder = Feeder(TaskFactory(stack, silent=False, notify_mode="Finish"), events, 3000,
                        lambda: sink.lines).start()

        def reached(mark: int) -> bool:
            feeder.check()
            sink.poll()
            return sink.lines >= mark

        try:
            for mark in (events * k // 10 for k in range(1, 11)):
                poll_until(lambda m=mark: reached(m), deadline - time.monotonic(), f"{mark} events in the sink",
                           stack.children, interval=0.2)
                samples.append((sink.lines, rss_kib(worker.pid)))
                print(f"  soak: {samples[-1][0]} events forwarded, worker RSS {samples[-1][1] / 1024:.1f} MiB "
                      f"({time.monotonic() - started:.0f}s)", flush=True)
        finally:
            feeder.stop()
        feeder.check()
        wait_settled(stack, 60)
        expected = {t.event_id for t in feeder.created}
        seen = sink.poll()
        answers = Counter(stack.emulator.stats()["callbacks"]["counts"])
        return SoakResult(len(expected), own_call_ms, rss, samples, len(expected - set(seen)),
                          sum(n - 1 for n in seen.values() if n > 1), len(set(seen) - expected),
                          time.monotonic() - started, answers)
