"""The forwarded-events ledger: which event ids this deployment forwarded, and who is forwarding one right now.

One event per real state change (SPEC 6) is one algorithm, written here once,
over two thin backends - SQLite for one host (`receiver.ledger.sqlite`), the
DynamoDB idempotency table for several (`receiver.ledger.dynamodb`) - as AWS
Lambda Powertools separates its idempotency algorithm from its persistence
layers:

1. **claim** (`claim`): before sending, a worker claims each event id for
   `hold_seconds` (its records' lease). Each answers *forwarded* (sent before:
   not again) or is ours now. An id another worker holds is waited for, up
   to `WAIT_SECONDS`: two workers holding records of one state change
   (copies accepted by two instances, a redelivered message, a callback and
   the sweeper's record of its task) thus send it once. Ids are claimed in
   sorted order, so two workers with overlapping batches never each hold
   what the other waits for. Past the wait, the pass's own claims are
   released and `EventStillInProgress` raised: the worker looks again shortly.
2. **settle** (`settle`): what the sink took is completed (forwarded, for
   good); the claims of what it did not take are released at once, so the
   retry need not wait for them to run out. A failure to complete is
   logged, not raised: the sink took the events, so their records are done;
   the claims, never released, run out.
3. A store that fails a claim (an outage, a lock that does not clear): the
   pass's claims are released and `LedgerUnavailable` raised, so the records
   retry shortly instead of waiting out their lease behind claims of their own.
4. A worker that dies holding claims lets them run out after `hold_seconds`;
   its records come back when their leases run out, and claim again. If it
   died after the sink took an event and before completing it, the next
   delivery sends the event again: at-least-once, the one case of a duplicate
   (a FIFO sink queue drops it within five minutes by its deduplication id).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

WAIT_SECONDS = 10.0  # how long a claim waits for another worker's claim of the same event
POLL_SECONDS = 0.05


class EventStillInProgress(Exception):
    """Another worker is still forwarding one of these events: the worker looks again shortly."""


class LedgerUnavailable(Exception):
    """The store failed a claim: nothing was sent, nothing stays claimed; the worker tries again shortly."""


@dataclass
class Claims:
    """What `claim` found: ids forwarded before, and ours now (id -> the backend's token of our claim)."""

    forwarded: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimStep:
    """One backend call's progress through the sorted ids: up to the first one another worker holds."""

    forwarded: set[str]
    claimed: dict[str, str]
    blocked_at: str | None  # the id another worker holds; None when every id was settled


class LedgerStore(ABC):
    """A thin persistence layer: no waiting, no ordering, no policy."""

    @abstractmethod
    def claim_in_order(self, event_ids: list[str], hold_seconds: float, now: float) -> ClaimStep:
        """Claim the ids in this order, stopping at the first one another worker holds.
        A step that fails part way gives up what it claimed before raising."""

    @abstractmethod
    def complete(self, event_ids: list[str], now: float) -> None:
        """These were forwarded: for good, whoever held them."""

    @abstractmethod
    def release(self, held: dict[str, str]) -> None:
        """Give up these claims of ours (id -> token), if still ours; best-effort (a claim left runs out)."""

    def known_forwarded(self, event_ids: list[str]) -> set[str]:
        """Which ids are known forwarded, read without claiming; a store that cannot tell cheaply answers none."""
        return set()

    @abstractmethod
    def close(self) -> None: ...


class ForwardedLedger:
    """Forward each event id once per deployment: claim, send, settle (module docstring)."""

    def __init__(self, store: LedgerStore, wait_seconds: float = WAIT_SECONDS,
                 sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.wait_seconds = wait_seconds
        self._sleep = sleep

    def claim(self, event_ids: list[str], hold_seconds: float, now: float) -> Claims:
        """Claim every id (waiting for others' claims); raises EventStillInProgress past `wait_seconds`."""
        claims = Claims()
        remaining = sorted(set(event_ids))
        started = time.monotonic()
        deadline = started + self.wait_seconds
        while remaining:
            # `now` moves on while we wait: a claim that ran out meanwhile is free.
            try:
                step = self.store.claim_in_order(remaining, hold_seconds, now + time.monotonic() - started)
            except Exception as error:  # noqa: BLE001 - any store failure: give back what the pass took
                self.release(claims)
                raise LedgerUnavailable(f"{type(error).__name__}: {error}") from error
            claims.forwarded |= step.forwarded
            claims.held.update(step.claimed)
            if step.blocked_at is None:
                break
            if time.monotonic() > deadline:
                self.release(claims)
                raise EventStillInProgress(f"event {step.blocked_at} is still being forwarded by another worker")
            remaining = remaining[remaining.index(step.blocked_at):]
            self._sleep(POLL_SECONDS)
        return claims

    def settle(self, claims: Claims, forwarded: list[str], now: float) -> None:
        """The sink took `forwarded`: complete them; release every other claim of the pass."""
        sent = set(forwarded)
        for event_id in sent:
            claims.held.pop(event_id, None)  # out: never released, whatever happens next
        if sent:
            try:
                self.store.complete(sorted(sent), now)
            except Exception as error:  # noqa: BLE001 - the events are out whatever the store says
                log.error("could not record %d forwarded event(s); their claims run out in time: %s",
                          len(sent), error)
        self.release(claims)

    def release(self, claims: Claims) -> None:
        held, claims.held = claims.held, {}
        if held:
            self.store.release(held)

    def record_forwarded(self, event_ids: list[str], now: float) -> None:
        """Forwarded without a claim of this process (the sink's record of a send before a crash)."""
        if event_ids:
            self.store.complete(sorted(set(event_ids)), now)

    def known_forwarded(self, event_ids: list[str]) -> set[str]:
        return self.store.known_forwarded(event_ids)

    def close(self) -> None:
        self.store.close()
