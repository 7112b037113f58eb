"""The limiters never let more than `limit` calls into any one-second window, and the workers' fill it."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from receiver.config import DEFAULT_RATE_LIMITS
from receiver.ratelimit import (
    ARRIVAL_MARGIN_SECONDS,
    HostQuota,
    RateLimits,
    RateLimitTimeout,
    SlidingWindowLimiter,
    sweeper_limits,
    worker_limits,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_limit_holds_in_every_window_of_a_long_run():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(20, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(200):
        with limiter.slot():
            starts.append(clock.now)
            clock.now += 0.001  # each call takes 1 ms
    assert max_in_any_window(starts) == 20
    # and it is not slower than it must be: 200 calls at 20/s take about 10 s
    assert starts[-1] - starts[0] < 10.5


def test_a_call_in_flight_keeps_its_slot():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(1, clock=clock, sleep=clock.sleep)
    with limiter.slot():
        clock.now += 5  # a slow call
        with pytest.raises(RateLimitTimeout):
            with limiter.slot(deadline=clock.now + 0.5):
                pass
    with pytest.raises(RateLimitTimeout):  # the window counts from the end of the call
        with limiter.slot(deadline=clock.now + 0.5):
            pass
    clock.now += 1.0
    with limiter.slot(deadline=clock.now):
        pass


def test_threads_share_the_limit_in_real_time():
    limits = RateLimits({("ams", "DescribeTaskDetail"): 20})
    starts: list[float] = []
    lock = threading.Lock()

    def call(_):
        with limits.slot("ams", "DescribeTaskDetail"):
            with lock:
                starts.append(time.monotonic())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(call, range(50)))
    assert len(starts) == 50
    assert max_in_any_window(starts) <= 20


def take_for(quota: HostQuota, seconds: float) -> list[float]:
    """Start times of the calls one process may start in `seconds`, as fast as the quota allows."""
    starts: list[float] = []
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        wait, slot = quota.try_take()
        if wait == 0:
            quota.started(slot)
            starts.append(now)
        else:
            time.sleep(min(wait, end - now))  # what a caller does: wait for the next slot
    return starts


def _take_in_child(path: str, seconds: float, results: multiprocessing.Queue) -> None:
    results.put(take_for(HostQuota(path, 20), seconds))


def test_processes_of_one_host_share_one_quota_and_together_fill_it(tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [context.Process(target=_take_in_child, args=(str(tmp_path / "quota"), 2.0, results))
                for _ in range(3)]
    for child in children:
        child.start()
    starts = [start for _ in children for start in results.get(timeout=30)]
    for child in children:
        child.join(10)
    assert max_in_any_window(starts) <= 20
    assert len(starts) >= 0.95 * 20 * 2  # each may use all of it: together they use it all


def test_a_quota_counts_starts_so_slow_calls_keep_its_full_rate(tmp_path):
    clock = FakeClock()
    quota = HostQuota(tmp_path / "quota", 10, clock=clock)
    starts = []
    while clock.now < 1010.0:  # ten seconds; how long each call takes does not enter into it
        wait, slot = quota.try_take()
        if wait == 0:
            quota.started(slot)
            starts.append(clock.now)
        else:
            clock.sleep(wait)
    assert max_in_any_window(starts) <= 10
    assert len(starts) >= 0.97 * 10 * 10


def test_request_limit_exceeded_pauses_the_action_for_every_process_and_its_rate_recovers(tmp_path):
    clock = FakeClock()
    mine, theirs = (HostQuota(tmp_path / "quota", 100, clock=clock) for _ in range(2))
    mine.throttled()
    mine.throttled()  # calls in flight when it happened: one slow-down, not two
    assert theirs.try_take()[0] == pytest.approx(1.0)
    clock.sleep(1.0)
    assert theirs.rate() == 75
    clock.sleep(5.0)
    assert theirs.rate() == 100 and theirs.try_take()[0] == 0


def test_a_host_takes_its_share_of_every_limit():
    workers = worker_limits(DEFAULT_RATE_LIMITS, share=0.5)
    assert workers[("mps", "DescribeTaskDetail")] == 50 and workers[("ams", "DescribeTaskDetail")] == 10
    assert workers[("ams", "DescribeTasks")] + sweeper_limits(DEFAULT_RATE_LIMITS, 0.5)[("ams", "DescribeTasks")] == 10
    assert worker_limits({("ams", "DescribeTaskDetail"): 1}, share=0.1)[("ams", "DescribeTaskDetail")] == 1


def test_sweeper_and_workers_split_the_listing_limit_and_nothing_else():
    workers, sweeper = worker_limits(DEFAULT_RATE_LIMITS), sweeper_limits(DEFAULT_RATE_LIMITS)
    for key, limit in DEFAULT_RATE_LIMITS.items():
        if key[1] == "DescribeTasks":
            assert workers[key] + sweeper[key] == limit
        else:
            assert workers[key] == limit
    assert workers[("ams", "DescribeTasks")] == sweeper[("ams", "DescribeTasks")] == 10


def test_a_granted_slot_counts_from_when_its_call_leaves(tmp_path):
    clock = FakeClock()
    quota = HostQuota(tmp_path / "quota", 1, clock=clock)
    wait, slot = quota.try_take()
    assert wait == 0
    clock.sleep(5.0)  # the caller took its time to get going
    assert quota.try_take()[0] > 0  # still reserved
    quota.started(slot)
    clock.sleep(1.0)
    assert quota.try_take()[0] == pytest.approx(ARRIVAL_MARGIN_SECONDS)  # a window and the margin after it left
