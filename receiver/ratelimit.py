"""Per-action rate limits that hold in every one-second window, as Tencent counts them.

A token bucket lets a full bucket's burst through right after a busy second,
which can put twice the limit into one window. Here each action remembers
when its last `limit` calls *ended*; a new call may start only when fewer than
`limit` calls ended within the last second and none of those is still under
way. Counting from the end of a call rather than its start keeps the bound
true at the server, whatever the network delay: a call reaches Tencent before
it ends, and the next one in its slot starts a full second after that.

One `RateLimits` is shared by every thread of a process; worker processes on
one host each take an equal share (SPEC 6: the limit divided by
WORKER_PROCESSES).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

WINDOW_SECONDS = 1.0
_IN_FLIGHT = math.inf


class RateLimitTimeout(Exception):
    """No slot was free before the caller's deadline."""


class SlidingWindowLimiter:
    """At most `limit` calls in any window of `WINDOW_SECONDS`."""

    def __init__(
        self,
        limit: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._ends: list[float] = []
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Reserve a slot and return 0, or return how long to wait before asking again."""
        with self._lock:
            now = self._clock()
            self._ends = [end for end in self._ends if now - end < WINDOW_SECONDS]
            if len(self._ends) < self.limit:
                self._ends.append(_IN_FLIGHT)
                return 0.0
            finished = [end for end in self._ends if end != _IN_FLIGHT]
            if not finished:
                return 0.005  # every slot is in flight: the first to end frees one
            return WINDOW_SECONDS - (now - min(finished))

    def _release(self) -> None:
        with self._lock:
            self._ends[self._ends.index(_IN_FLIGHT)] = self._clock()

    @contextmanager
    def slot(self, deadline: float | None = None) -> Iterator[None]:
        """Hold a slot for the duration of one call; wait for one first if needed."""
        while True:
            wait = self._reserve()
            if wait == 0.0:
                break
            if deadline is not None and self._clock() + wait > deadline:
                raise RateLimitTimeout()
            self._sleep(wait)
        try:
            yield
        finally:
            self._release()


class RateLimits:
    """One limiter per (service, action), each at its process's share of the host's limit."""

    def __init__(self, limits: Mapping[tuple[str, str], int], processes: int = 1):
        self._limiters = {
            key: SlidingWindowLimiter(max(1, limit // max(1, processes)))
            for key, limit in limits.items()
        }

    def slot(self, service: str, action: str, deadline: float | None = None) -> AbstractContextManager[None]:
        """A slot of the action's limit; RateLimitTimeout rather than waiting past `deadline` (monotonic)."""
        return self._limiters[(service, action)].slot(deadline)


# Listing tasks is shared by two kinds of process on a host: the sweeper walks
# every page of DescribeTasks, the workers list only to find a BatchTask
# without task id. Each kind gets half of that action's limit, so together
# they never exceed it; every other action is the workers' alone.
LISTING_ACTION = "DescribeTasks"


def worker_limits(limits: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {key: max(1, limit // 2) if key[1] == LISTING_ACTION else limit for key, limit in limits.items()}


def sweeper_limits(limits: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {key: max(1, limit - limit // 2) if key[1] == LISTING_ACTION else max(1, limit // 2)
            for key, limit in limits.items()}
