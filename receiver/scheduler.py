"""When to make each Describe call: priorities, look-again backoff, and a pass's budget (SPEC 6).

Calls are made in priority order: a callback's first call, then look-agains
(a task not visible yet, a status that lags the callback) and retries, then
tasks the sweeper found. Look-agains back off exponentially within the
record's patience, and the last one falls at its end, so a callback for a task
that does not exist costs a few calls (`look_again_at`), however many
arrive. A pass of the worker spends at most `PASS_SECONDS` waiting for rate
limit slots (`PassBudget`): what it cannot call by then goes back to the inbox
unworked (`Outcome.DEFERRED`), and the next pass claims by priority again, so
genuine first calls never queue behind a backlog of look-agains.

Calls are made one at a time today; `PassBudget.call` is the one place that
waits for a slot, so a pool of concurrent callers can take its place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from receiver.ratelimit import RateLimitTimeout
from receiver.reconcile import DescribeCall

PASS_SECONDS = 1.0
LOOK_AGAIN_BASE_SECONDS = 2.0


class Deferred(Exception):
    """No slot of this action's limit is left in this pass."""


def look_again_at(now: float, attempts: int, patience_ends: float) -> float:
    """The next look at a record that `attempts` looks found lagging: 2 s, 4 s, 8 s... and the end of its patience.

    So a record for a task that never appears is described at most about
    log2(patience / 2) + 2 times (5 with the default 20 s), and fewer when the
    quota is busy, since look-agains wait behind first calls.
    """
    delay = LOOK_AGAIN_BASE_SECONDS * 2 ** max(0, attempts - 1)
    return min(now + delay, patience_ends) if now < patience_ends else now


class PassBudget:
    """The rate-limited calls of one worker pass, none waiting for a slot past the pass's deadline."""

    def __init__(self, call: Callable[[DescribeCall, float], dict[str, Any]], seconds: float = PASS_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic):
        self._call = call
        self._monotonic = monotonic
        self.deadline = monotonic() + seconds
        self._exhausted: set[tuple[str, str]] = set()

    def call(self, call: DescribeCall) -> dict[str, Any]:
        """The answer of one call; Deferred when its action has no slot left before the deadline."""
        key = (call.service, call.action)
        if key in self._exhausted:
            raise Deferred(call.label)
        try:
            return self._call(call, self.deadline)
        except RateLimitTimeout:
            self._exhausted.add(key)
            raise Deferred(call.label) from None
