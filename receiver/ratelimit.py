"""Per-action rate limits that hold in every one-second window, as Tencent counts them.

Two limiters, for two kinds of caller:

- `HostQuota`, the workers': one file per action, shared by every worker
  process of the host under a file lock, so the host's processes together
  never exceed the limit and each may use all of it. It keeps the start time
  of the last `limit` calls; a call may start once the oldest of them started
  more than a second (plus `ARRIVAL_MARGIN_SECONDS`) ago. Starts, not ends,
  are counted, so calls in flight do not hold slots and a slow API is used
  at its full rate; the margin absorbs the variation in the time a call takes
  to reach Tencent. A `RequestLimitExceeded` answer pauses the action for
  every process of the host and lowers its rate, which then recovers second
  by second, so a misjudged `TENCENTCLOUD_QUOTA_SHARE` degrades gently.
- `SlidingWindowLimiter`, the sweeper's: one call at a time per action,
  counted from when each call ends (the sweeper pages sequentially).

Several hosts on one Tencent Cloud account each take
`TENCENTCLOUD_QUOTA_SHARE` of every limit.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
WINDOW_SECONDS = 1.0
_IN_FLIGHT = math.inf
# How much later than its neighbours a call may reach Tencent after its start (signing, scheduling, network).
ARRIVAL_MARGIN_SECONDS = 0.03
THROTTLE_PAUSE_SECONDS = 1.0  # after a RequestLimitExceeded, the action waits a full window
THROTTLE_FACTOR = 0.75  # ... and goes on at this share of its rate,
MIN_RATE_FACTOR = 0.25
RECOVERY_PER_SECOND = 0.05  # recovering this much of its rate per second without a throttle
CATCH_UP_SECONDS = 0.05  # how far behind its pace an action may catch up (a few calls at once)
RESERVATION_SECONDS = 10.0  # a slot granted but never started is free again after this (and a window)


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


class HostQuota:
    """One action's limit, shared by every process of the host that opens the same file.

    The file holds a header (paused until, rate factor, when the factor last
    changed, the last grant, an unused field, limit) and the start times of the last `limit` calls, all on
    `time.monotonic()`, which every process of a Linux host shares.
    """

    _HEADER = struct.Struct("=ddddqq")
    _SLOT = struct.Struct("=d")

    def __init__(self, path: str | os.PathLike[str], limit: int, clock: Callable[[], float] = time.monotonic):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._clock = clock
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._lock = threading.Lock()  # flock does not exclude the threads of one process

    def close(self) -> None:
        os.close(self._fd)

    # A call reads every slot (the oldest is taken) and writes one.

    def _slots(self, count: int) -> tuple[float, ...]:
        return struct.unpack(f"={count}d", os.pread(self._fd, count * self._SLOT.size, self._HEADER.size))

    def _set_slot(self, index: int, value: float) -> None:
        os.pwrite(self._fd, self._SLOT.pack(value), self._HEADER.size + index * self._SLOT.size)

    def _read_header(self) -> list[Any]:
        raw = os.pread(self._fd, self._HEADER.size, 0)
        header = list(self._HEADER.unpack(raw)) if len(raw) == self._HEADER.size else []
        if not header or header[5] != self.limit:  # a new file, or another limit: start afresh
            header = [0.0, 1.0, self._clock(), -math.inf, 0, self.limit]
            os.pwrite(self._fd, self._HEADER.pack(*header) + self._SLOT.pack(-math.inf) * self.limit, 0)
        return header

    def _locked(self, change: Callable[[list[Any], float], T]) -> T:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                header = self._read_header()
                now = self._clock()
                _recover(header, now)
                result = change(header, now)
                os.pwrite(self._fd, self._HEADER.pack(*header), 0)
                return result
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def try_take(self) -> tuple[float, int]:
        """Reserve a slot: (0, its index), or (seconds until one may be free, -1).

        The slot is held as if in use until the caller says the call
        `started()`: the bound is on when calls leave, not on when they were
        granted, however long the caller took to get going.
        """

        def take(header: list[Any], now: float) -> tuple[float, int]:
            if now < header[0]:
                return header[0] - now, -1
            usable = max(1, math.floor(self.limit * header[1]))
            slots = self._slots(usable)
            oldest = min(range(usable), key=slots.__getitem__)
            # Evenly spaced, never in a burst: a burst's last calls leave late, and the next second's
            # first calls early, which would crowd the server's window more than any margin allows for.
            paced_at = header[3] + WINDOW_SECONDS / usable
            free_at = max(slots[oldest] + WINDOW_SECONDS + ARRIVAL_MARGIN_SECONDS, paced_at)
            if now < free_at:
                return free_at - now, -1
            self._set_slot(oldest, now + RESERVATION_SECONDS)  # a process that dies before starting frees it
            # The pace is kept on schedule: a caller that came late may catch up, a little at a time.
            header[3] = max(paced_at, now - CATCH_UP_SECONDS)
            return 0.0, oldest

        return self._locked(take)

    def started(self, slot: int, delay: float = 0.0) -> None:
        """The reserved call leaves now, and may reach the server up to `delay` later than calls usually do.

        Said again when its bytes go out: only ever later, so never looser.
        """

        def start(header: list[Any], now: float) -> None:
            if 0 <= slot < self.limit:
                self._set_slot(slot, now + delay)

        self._locked(start)

    def throttled(self) -> None:
        """Tencent answered RequestLimitExceeded: pause the action, then go on at a lower rate."""

        def slow_down(header: list[Any], now: float) -> float:
            if now >= header[0]:  # the calls in flight when it happened do not lower it again
                header[1] = max(MIN_RATE_FACTOR, header[1] * THROTTLE_FACTOR)
                header[2] = now + THROTTLE_PAUSE_SECONDS  # it recovers from the end of the pause
            header[0] = max(header[0], now + THROTTLE_PAUSE_SECONDS)
            return 0.0

        self._locked(slow_down)

    def rate(self) -> float:
        """The calls per second the action may make now."""
        return self._locked(lambda header, now: max(1, math.floor(self.limit * header[1])))


_departure = threading.local()


@contextmanager
def departure(leaving: Callable[[float], None]) -> Iterator[None]:
    """Within it, `departing(delay)` on this thread calls `leaving(delay)`: the HTTP layer says when a call's
    bytes go out, and how much later than usual they may reach the server."""
    _departure.leaving = leaving
    try:
        yield
    finally:
        _departure.leaving = None


def departing(delay: float = 0.0) -> None:
    leaving = getattr(_departure, "leaving", None)
    if leaving is not None:
        leaving(delay)


def _recover(header: list[Any], now: float) -> None:
    if header[1] < 1.0 and now - header[2] >= 1.0:
        seconds = math.floor(now - header[2])
        header[1] = min(1.0, header[1] + RECOVERY_PER_SECOND * seconds)
        header[2] += seconds


def quota_directory(account: str, endpoints: Mapping[str, str | None]) -> str:
    """Where a host's worker processes keep their shared quotas: one directory per account and endpoints."""
    material = repr((account, sorted((k, v or "") for k, v in endpoints.items()))).encode()
    path = os.path.join(tempfile.gettempdir(), f"tc-receiver-quota-{hashlib.sha256(material).hexdigest()[:16]}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def host_quotas(directory: str, limits: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], HostQuota]:
    return {(service, action): HostQuota(os.path.join(directory, f"{service}.{action}"), limit)
            for (service, action), limit in limits.items()}


class RateLimits:
    """The sweeper's limiters, one per (service, action)."""

    def __init__(self, limits: Mapping[tuple[str, str], int]):
        self._limiters = {key: SlidingWindowLimiter(limit) for key, limit in limits.items()}

    def slot(self, service: str, action: str, deadline: float | None = None) -> AbstractContextManager[None]:
        """A slot of the action's limit; RateLimitTimeout rather than waiting past `deadline` (monotonic)."""
        return self._limiters[(service, action)].slot(deadline)


# Listing tasks is shared by two kinds of process on a host: the sweeper walks
# every page of DescribeTasks, the workers list only to find a BatchTask
# without task id. Each kind gets half of that action's limit, so together
# they never exceed it; every other action is the workers' alone.
LISTING_ACTION = "DescribeTasks"


def host_share(limits: Mapping[tuple[str, str], int], share: float = 1.0) -> dict[tuple[str, str], int]:
    """This host's part of each limit (TENCENTCLOUD_QUOTA_SHARE), at least one call a second."""
    return {key: max(1, math.floor(limit * share + 1e-9)) for key, limit in limits.items()}


def worker_limits(limits: Mapping[tuple[str, str], int], share: float = 1.0) -> dict[tuple[str, str], int]:
    return {key: max(1, limit // 2) if key[1] == LISTING_ACTION else limit
            for key, limit in host_share(limits, share).items()}


def sweeper_limits(limits: Mapping[tuple[str, str], int], share: float = 1.0) -> dict[tuple[str, str], int]:
    return {key: max(1, limit - limit // 2) if key[1] == LISTING_ACTION else max(1, limit // 2)
            for key, limit in host_share(limits, share).items()}
