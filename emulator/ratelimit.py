"""Per-action request-rate limits and the counters the admin routes show.

Each action has a sliding one-second window. The counters record every call
(and its errors by code) and the largest number of calls seen in any
one-second window, both of calls admitted past the limiter and of all calls
attempted, so a test can prove a client never exceeded a limit. They also
count the calls being answered at this moment (`in_flight`, latency included)
and the most seen at once, so a test can see how many calls a client keeps
under way; and they keep the admitted calls in the order they were admitted
(the newest `CALL_LOG_SIZE`), so a test can assert on the order of calls.
Every call counts at its arrival time (`emulator.arrival`), as Tencent's
gateway counts it, not when a thread got to it.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

WINDOW_SECONDS = 1.0
# Admitted calls kept for GET /_emulator/calls; older ones are forgotten first.
CALL_LOG_SIZE = 200_000


@dataclass
class _ActionStats:
    total: int = 0
    errors: Counter = field(default_factory=Counter)
    admitted: list = field(default_factory=list)  # arrival times, sorted
    attempted: list = field(default_factory=list)
    max_admitted: int = 0
    max_attempted: int = 0
    max_in_flight: int = 0


# Arrivals are stamped by the kernel but counted by threads, so one may be counted after a later one:
# windows keep their arrival times sorted, and stamps older than this are forgotten.
_KEPT_SECONDS = 3 * WINDOW_SECONDS


def _in_window(window: list[float], end: float) -> int:
    """How many arrivals fall in the one-second window that ends at `end` (inclusive)."""
    return bisect.bisect_right(window, end) - bisect.bisect_right(window, end - WINDOW_SECONDS)


def _busiest_with(window: list[float], at: float) -> int:
    """The most arrivals in any one-second window that would hold `at`, were it added."""
    # Those windows end at `at` or at a later arrival less than a second after it.
    later = window[bisect.bisect_right(window, at):bisect.bisect_left(window, at + WINDOW_SECONDS)]
    return 1 + max(_in_window(window, end) for end in (at, *later))


def _add(window: list[float], at: float) -> int:
    """Add an arrival at `at`; the most arrivals in any one-second window that holds it."""
    busiest = _busiest_with(window, at)
    bisect.insort(window, at)
    del window[:bisect.bisect_left(window, window[-1] - _KEPT_SECONDS)]
    return busiest


class RateLimiter:
    """Thread-safe limiter plus statistics, keyed by ``(service, action)``."""

    def __init__(self, limits: dict[tuple[str, str], int]) -> None:
        self._limits = dict(limits)
        self._stats: dict[tuple[str, str], _ActionStats] = {}
        # Apart from the stats: a reset does not end the calls under way.
        self._in_flight: Counter = Counter()
        self._calls: deque[dict[str, Any]] = deque(maxlen=CALL_LOG_SIZE)
        self._lock = threading.Lock()

    def _get(self, key: tuple[str, str]) -> _ActionStats:
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = _ActionStats()
        return stats

    def _count_locked(self, key: tuple[str, str], at: float) -> _ActionStats:
        stats = self._get(key)
        stats.total += 1
        stats.max_attempted = max(stats.max_attempted, _add(stats.attempted, at))
        return stats

    def count_call(self, key: tuple[str, str], at: float | None = None) -> None:
        """Record an attempted call that arrived `at` (time.time(); default now), whatever happens to it."""
        with self._lock:
            self._count_locked(key, time.time() if at is None else at)

    def begin(self, key: tuple[str, str], at: float | None = None) -> None:
        """Record an attempted call that arrived `at` and is now being answered, in flight until `end`."""
        with self._lock:
            stats = self._count_locked(key, time.time() if at is None else at)
            self._in_flight[key] += 1
            stats.max_in_flight = max(stats.max_in_flight, self._in_flight[key])

    def end(self, key: tuple[str, str]) -> None:
        """The answer of a call `begin` counted is ready."""
        with self._lock:
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]

    def admit(self, key: tuple[str, str], at: float | None = None, task_id: Any = None,
              file_ids: Any = None) -> bool:
        """True when the call that arrived `at` fits in the action's window (it is then counted and logged)."""
        at = time.time() if at is None else at
        with self._lock:
            stats = self._get(key)
            limit = self._limits.get(key)
            if limit is not None and _busiest_with(stats.admitted, at) > limit:
                return False
            stats.max_admitted = max(stats.max_admitted, _add(stats.admitted, at))
            self._calls.append({"service": key[0], "action": key[1], "at": at, "task_id": task_id,
                                "file_ids": file_ids})
            return True

    def count_error(self, key: tuple[str, str], code: str) -> None:
        with self._lock:
            self._get(key).errors[code] += 1

    def snapshot(self) -> dict[str, Any]:
        """Counters as JSON: ``{"mps.DescribeTaskDetail": {"calls": ..., "errors": {...}, ...}}``."""
        with self._lock:
            return {
                f"{service}.{action}": {
                    "calls": s.total,
                    "errors": dict(s.errors),
                    "max_1s_window": s.max_admitted,
                    "max_1s_window_attempted": s.max_attempted,
                    "in_flight": self._in_flight.get((service, action), 0),
                    "max_in_flight": s.max_in_flight,
                    "limit": self._limits.get((service, action)),
                }
                for (service, action), s in sorted(self._stats.items())
            }

    def calls(self, service: str | None = None, action: str | None = None) -> list[dict[str, Any]]:
        """The admitted calls in the order they were admitted, optionally of one service and/or action."""
        with self._lock:
            calls = list(self._calls)
        return [c for c in calls  # never changed once logged: shared as they are
                if (service is None or c["service"] == service) and (action is None or c["action"] == action)]

    def limits(self) -> dict[str, int]:
        return {f"{s}.{a}": n for (s, a), n in sorted(self._limits.items())}

    def reset(self) -> None:
        """Forget counters and logged calls; calls still under way stay counted in flight."""
        with self._lock:
            self._stats.clear()
            self._calls.clear()
            for key, count in self._in_flight.items():
                self._get(key).max_in_flight = count
