"""Per-action request-rate limits and the counters the admin route shows.

Each action has a sliding one-second window. The counters record every call
(and its errors by code) and the largest number of calls seen in any
one-second window, both of calls admitted past the limiter and of all calls
attempted, so a test can prove a client never exceeded a limit.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

WINDOW_SECONDS = 1.0


@dataclass
class _ActionStats:
    total: int = 0
    errors: Counter = field(default_factory=Counter)
    admitted: deque = field(default_factory=deque)
    attempted: deque = field(default_factory=deque)
    max_admitted: int = 0
    max_attempted: int = 0


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
        self._lock = threading.Lock()

    def _get(self, key: tuple[str, str]) -> _ActionStats:
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = _ActionStats()
        return stats

    def count_call(self, key: tuple[str, str]) -> None:
        """Record an attempted call, whatever happens to it afterwards."""
        with self._lock:
            stats = self._get(key)
            stats.total += 1
            stats.max_attempted = max(stats.max_attempted, _slide(stats.attempted, time.monotonic()))

    def admit(self, key: tuple[str, str]) -> bool:
        """True when the call fits in the action's one-second window (and is then counted in it)."""
        now = time.monotonic()
        with self._lock:
            stats = self._get(key)
            limit = self._limits.get(key)
            while stats.admitted and stats.admitted[0] <= now - WINDOW_SECONDS:
                stats.admitted.popleft()
            if limit is not None and len(stats.admitted) >= limit:
                return False
            stats.max_admitted = max(stats.max_admitted, _slide(stats.admitted, now))
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
                    "limit": self._limits.get((service, action)),
                }
                for (service, action), s in sorted(self._stats.items())
            }

    def limits(self) -> dict[str, int]:
        return {f"{s}.{a}": n for (s, a), n in sorted(self._limits.items())}

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()
