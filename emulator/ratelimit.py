"""Per-action request-rate limits and the counters the admin routes show.

Each action has a sliding one-second window. The counters record every call
(and its errors by code) and the largest number of calls seen in any
one-second window, both of calls admitted past the limiter and of all calls
attempted, so a test can prove a client never exceeded a limit. They also
count the calls being answered at this moment (`in_flight`, latency included)
and the most seen at once, so a test can see how many calls a client keeps
under way; and they keep the admitted calls in the order they were admitted
(the newest `CALL_LOG_SIZE`), so a test can assert on the order of calls.
"""

from __future__ import annotations

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
    admitted: deque = field(default_factory=deque)
    attempted: deque = field(default_factory=deque)
    max_admitted: int = 0
    max_attempted: int = 0
    max_in_flight: int = 0


def _slide(window: deque, now: float) -> int:
    """Drop timestamps older than one second, add `now`, return the window's size."""
    while window and window[0] <= now - WINDOW_SECONDS:
        window.popleft()
    window.append(now)
    return len(window)


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

    def _count_locked(self, key: tuple[str, str]) -> _ActionStats:
        stats = self._get(key)
        stats.total += 1
        stats.max_attempted = max(stats.max_attempted, _slide(stats.attempted, time.monotonic()))
        return stats

    def count_call(self, key: tuple[str, str]) -> None:
        """Record an attempted call, whatever happens to it afterwards."""
        with self._lock:
            self._count_locked(key)

    def begin(self, key: tuple[str, str]) -> None:
        """Record an attempted call that is now being answered, in flight until `end`."""
        with self._lock:
            stats = self._count_locked(key)
            self._in_flight[key] += 1
            stats.max_in_flight = max(stats.max_in_flight, self._in_flight[key])

    def end(self, key: tuple[str, str]) -> None:
        """The answer of a call `begin` counted is ready."""
        with self._lock:
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]

    def admit(self, key: tuple[str, str], task_id: Any = None, file_ids: Any = None) -> bool:
        """True when the call fits in the action's one-second window (and is then counted in it and logged)."""
        now = time.monotonic()
        with self._lock:
            stats = self._get(key)
            limit = self._limits.get(key)
            while stats.admitted and stats.admitted[0] <= now - WINDOW_SECONDS:
                stats.admitted.popleft()
            if limit is not None and len(stats.admitted) >= limit:
                return False
            stats.max_admitted = max(stats.max_admitted, _slide(stats.admitted, now))
            self._calls.append({"service": key[0], "action": key[1], "at": time.time(), "task_id": task_id,
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
