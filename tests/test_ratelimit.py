"""The limiter never lets more than `limit` calls into any one-second window."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from receiver.config import DEFAULT_RATE_LIMITS
from receiver.ratelimit import RateLimits, RateLimitTimeout, SlidingWindowLimiter, sweeper_limits, worker_limits


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


def test_processes_on_one_host_split_the_limit():
    limits = RateLimits({("mps", "DescribeBatchTaskDetail"): 20}, processes=3)
    assert limits._limiters[("mps", "DescribeBatchTaskDetail")].limit == 6


def test_sweeper_and_workers_split_the_listing_limit_and_nothing_else():
    workers, sweeper = worker_limits(DEFAULT_RATE_LIMITS), sweeper_limits(DEFAULT_RATE_LIMITS)
    for key, limit in DEFAULT_RATE_LIMITS.items():
        if key[1] == "DescribeTasks":
            assert workers[key] + sweeper[key] == limit
        else:
            assert workers[key] == limit
    assert workers[("ams", "DescribeTasks")] == sweeper[("ams", "DescribeTasks")] == 10
