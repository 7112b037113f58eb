"""When to make each Describe call: priorities, look-again backoff, and concurrency at the quota (SPEC 6).

`DescribeScheduler` serves the calls of a worker process. Callers (the
worker's unit threads) queue each call with its record's priority: a
callback's first call, then look-agains and retries, then tasks the sweeper
found. One dispatcher thread hands out slots of each action's `HostQuota`,
the best queued call first, and lets as many calls be in flight as the quota
and the latency it measures need (Little's law: rate × latency, with room to
spare), never more than `TENCENTCLOUD_MAX_IN_FLIGHT`. So a slow API is used
at its full rate, and a burst of swept tasks or look-agains never stands
between a new callback and its first call: at most the calls already in
flight do.

Look-agains back off exponentially within the record's patience, and the
last one falls at its end, so a callback for a task that does not exist costs
a few calls (`look_again_at`), however many arrive.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver.config import Settings
from receiver.ratelimit import HostQuota, departure, host_quotas, quota_directory, worker_limits
from receiver.tencentcloud import DescribeCall

LOOK_AGAIN_BASE_SECONDS = 2.0
# Calls queued per action beyond those in flight: a quarter second of its rate keeps
# the quota busy between the worker's rounds, and keeps a late first call close to the front.
QUEUE_AHEAD_SECONDS = 0.25
LATENCY_WEIGHT = 0.2  # of each new measurement in the moving average
FIRST_LATENCY_GUESS = 0.05  # until measured; calls in flight longer than the average count as they are
IN_FLIGHT_HEADROOM = 1.5


class Deferred(Exception):
    """The call was not made: the scheduler is closing. Its record goes back to the inbox unworked."""


def look_again_at(now: float, attempts: int, patience_ends: float) -> float:
    """The next look at a record that `attempts` looks found lagging: 2 s, 4 s, 8 s... and the end of its patience.

    So a record for a task that never appears is described at most about
    log2(patience / 2) + 2 times (5 with the default 20 s), and fewer when the
    quota is busy, since look-agains wait behind first calls.
    """
    delay = LOOK_AGAIN_BASE_SECONDS * 2 ** max(0, attempts - 1)
    return min(now + delay, patience_ends) if now < patience_ends else now


@dataclass(order=True)
class _Ticket:
    priority: int
    sequence: int
    granted: threading.Event = field(default_factory=threading.Event, compare=False)
    cancelled: bool = field(default=False, compare=False)
    slot: int = field(default=-1, compare=False)


@dataclass
class _Action:
    quota: HostQuota
    queue: list[_Ticket] = field(default_factory=list)
    in_flight: int = 0
    latency: float = FIRST_LATENCY_GUESS
    granted_at: dict[int, float] = field(default_factory=dict)  # calls in flight, by ticket

    def in_flight_needed(self, cap: int, now: float) -> int:
        """Calls in flight that keep the action at its rate, whatever its latency.

        The latency is the moving average of the answers, or the age of the
        oldest call in flight if that is more: a slow API is known slow before
        its first answer, so the first second already runs at the full rate.
        """
        oldest = now - min(self.granted_at.values()) if self.granted_at else 0.0
        latency = max(self.latency, oldest)
        return max(2, min(cap, math.ceil(self.quota.limit * latency * IN_FLIGHT_HEADROOM) + 2))

    def queue_ahead(self, cap: int) -> int:
        return max(2, min(cap // 4, math.ceil(self.quota.limit * QUEUE_AHEAD_SECONDS)))


class DescribeScheduler:
    """Describe calls by priority, at each action's quota, many at a time."""

    def __init__(self, call: Callable[[DescribeCall], dict[str, Any]], quotas: Mapping[tuple[str, str], HostQuota],
                 max_in_flight: int, monotonic: Callable[[], float] = time.monotonic):
        self._call = call
        self._actions = {key: _Action(quota) for key, quota in quotas.items()}
        self.max_in_flight = max_in_flight
        self._monotonic = monotonic
        self._sequence = itertools.count()
        self._in_flight = 0
        self._closed = False
        self._changed = threading.Condition()
        self._dispatcher = threading.Thread(target=self._dispatch, name="describe-dispatcher", daemon=True)
        self._dispatcher.start()

    @property
    def threads_needed(self) -> int:
        """Callers the scheduler can keep busy at once: those in flight and those queued."""
        # Bounded whatever the limits: a quota of thousands a second needs no thousands of threads.
        ahead = sum(action.queue_ahead(self.max_in_flight) for action in self._actions.values())
        return self.max_in_flight + min(ahead, self.max_in_flight)

    def capacity(self, service: str, action: str) -> int:
        """How many callers of the action it can serve soon: those it lets be in flight, and a queue ahead.

        A caller starts work only while fewer than this are at it: work started
        beyond it would wait outside the scheduler, where priorities do not reach.
        """
        state = self._actions[(service, action)]
        with self._changed:
            needed = state.in_flight_needed(self.max_in_flight, self._monotonic())
        return needed + state.queue_ahead(self.max_in_flight)

    def rate(self, service: str, action: str) -> int:
        """The action's calls per second on this host."""
        return self._actions[(service, action)].quota.limit

    def call(self, describe: DescribeCall, priority: int) -> dict[str, Any]:
        """The answer of one call, made when its action's quota and its priority allow; raises what the SDK raises."""
        state = self._actions[(describe.service, describe.action)]
        ticket = _Ticket(priority, next(self._sequence))
        with self._changed:
            if self._closed:
                raise Deferred(describe.label)
            heapq.heappush(state.queue, ticket)
            self._changed.notify_all()
        ticket.granted.wait()
        if ticket.cancelled:
            raise Deferred(describe.label)
        state.quota.started(ticket.slot)
        started = self._monotonic()
        try:
            # Stamped again when the request leaves (receiver.tencentcloud): signing it took some time.
            with departure(lambda delay: state.quota.started(ticket.slot, delay)):
                return self._call(describe)
        except TencentCloudSDKException as error:
            if (error.get_code() or "").startswith("RequestLimitExceeded"):
                state.quota.throttled()
            raise
        finally:
            with self._changed:
                state.in_flight -= 1
                state.granted_at.pop(ticket.sequence, None)
                self._in_flight -= 1
                elapsed = self._monotonic() - started
                state.latency += LATENCY_WEIGHT * (elapsed - state.latency)
                self._changed.notify_all()

    def close(self) -> None:
        """Make no more calls: queued callers get Deferred; calls in flight finish."""
        with self._changed:
            self._closed = True
            for state in self._actions.values():
                for ticket in state.queue:
                    ticket.cancelled = True
                    ticket.granted.set()
                state.queue.clear()
            self._changed.notify_all()
        self._dispatcher.join(5)
        for state in self._actions.values():
            state.quota.close()

    def _dispatch(self) -> None:
        with self._changed:
            while not self._closed:
                wait = self._grant_what_is_due()
                self._changed.wait(wait)

    def _grant_what_is_due(self) -> float | None:
        """Grant every call that may start now; how long until the next might (None: until something changes)."""
        wait: float | None = None
        for state in self._actions.values():
            while state.queue and self._in_flight < self.max_in_flight \
                    and state.in_flight < state.in_flight_needed(self.max_in_flight, self._monotonic()):
                free_in, slot = state.quota.try_take()
                if free_in > 0:
                    wait = free_in if wait is None else min(wait, free_in)
                    break
                ticket = heapq.heappop(state.queue)
                ticket.slot = slot
                state.granted_at[ticket.sequence] = self._monotonic()
                state.in_flight += 1
                self._in_flight += 1
                ticket.granted.set()
        return wait


def host_scheduler(settings: Settings, tencentcloud: Any | None,
                   quotas: dict[tuple[str, str], HostQuota] | None) -> DescribeScheduler | None:
    """The host's Describe quotas (shared with its other worker processes) and the calls made under them."""
    if tencentcloud is None:
        return None
    if quotas is None:
        directory = quota_directory(settings.tencentcloud_secret_id or "", settings.endpoints)
        quotas = host_quotas(directory, worker_limits(settings.rate_limits, settings.tencentcloud_quota_share))
    return DescribeScheduler(tencentcloud.call, quotas, settings.tencentcloud_max_in_flight)
