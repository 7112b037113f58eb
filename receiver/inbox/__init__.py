"""The durable inbox: one interface, one backend per file (SQLite for one host, SQS for several).

Web processes `accept()` callbacks; `200` is answered only once `accept()`
has returned, i.e. the record is on durable storage. Workers `claim()` due
records under a lease, first calls before look-agains before swept tasks,
extend the leases of those they still work on (`extend_leases()`), and
`settle()` each one (`Outcome`): done, done but unconfirmed, rejected
(with its reason), retried later, dead, or deferred (not worked on this
pass). A crashed worker's lease simply expires, and its records become
claimable again.

Deduplication never costs a genuine event (SPEC 6). A record holds its copy
key (`CallbackRecord.dedup_key`) while it is pending, leased, dead, or done as
it claimed: a copy is then answered `duplicate`. A record rejected, or done
with a status other than the one it claimed, lets go of its key, and the next
copy is a record of its own. A copy answered `duplicate` while its record was
still pending or leased is remembered: if that record then lets go of its
key, it is reconciled once more instead, its patience counted from the copy.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from receiver.config import ConfigError, Settings
from receiver.records import ORIGIN_CALLBACK, ORIGIN_SWEEPER, CallbackRecord

STATES = ("pending", "leased", "done", "rejected", "dead")


class InboxUnavailable(Exception):
    """The inbox cannot durably store a record right now; the sender should retry."""


@dataclass(frozen=True)
class AcceptResult:
    id: str
    duplicate: bool


# Claim order (SPEC 6): a callback's first Describe call, then look-agains and
# retries, then tasks the sweeper found. The policy is here, for every backend.
PRIORITY_FIRST_CALL = 0
PRIORITY_LOOK_AGAIN = 1
PRIORITY_SWEPT = 2
# A record's origin decides where it goes when it arrives and when it is looked at again.
ARRIVAL_PRIORITY = {ORIGIN_CALLBACK: PRIORITY_FIRST_CALL, ORIGIN_SWEEPER: PRIORITY_SWEPT}
RETRY_PRIORITY = {ORIGIN_CALLBACK: PRIORITY_LOOK_AGAIN, ORIGIN_SWEEPER: PRIORITY_SWEPT}


def arrival_priority(record: CallbackRecord) -> int:
    return ARRIVAL_PRIORITY.get(record.origin, PRIORITY_FIRST_CALL)


def retry_priority(record: CallbackRecord) -> int:
    return RETRY_PRIORITY.get(record.origin, PRIORITY_LOOK_AGAIN)


def delivery_priority(record: CallbackRecord, delivery: int) -> int:
    """For a backend that knows only how often a record was delivered (SQS): after the first, a look-again."""
    return arrival_priority(record) if delivery <= 1 else retry_priority(record)


def priority_sql(priorities: dict[str, int], default: int) -> str:
    """The same policy as an SQL expression over a row's `origin`, for a backend that settles in SQL."""
    cases = " ".join(f"WHEN '{origin}' THEN {priority}" for origin, priority in sorted(priorities.items()))
    return f"CASE origin {cases} ELSE {default} END"


@dataclass(frozen=True)
class ClaimedRecord:
    record: CallbackRecord
    attempts: int
    lease_expires_at: float
    priority: int = PRIORITY_FIRST_CALL
    patience_from: float | None = None  # when the latest copy was answered duplicate, if later than received

    @property
    def waiting_since(self) -> float:
        """Where the patience for a lagging answer starts: the latest copy of the callback."""
        return max(self.record.received_at, self.patience_from or 0.0)


def in_claim_order(claimed: list[ClaimedRecord]) -> list[ClaimedRecord]:
    """A claimed batch as the worker takes it up: by priority, then by id."""
    return sorted(claimed, key=lambda c: (c.priority, c.record.id))


class Outcome(enum.Enum):
    DONE = "done"  # forwarded (or known forwarded) as it claimed
    UNCONFIRMED = "unconfirmed"  # the event forwarded says another status than the callback claimed
    REJECTED = "rejected"  # a check failed; `detail` is the reason
    RETRY = "retry"  # look again or try again at `next_attempt_at`; `detail` is the last error
    DEAD = "dead"  # buried after too many attempts; `detail` is the last error
    DEFERRED = "deferred"  # not worked on this pass (no Describe slot left): back as it was


@dataclass(frozen=True)
class Settlement:
    record_id: str
    outcome: Outcome
    detail: str = ""
    next_attempt_at: float | None = None


class Inbox(ABC):
    @abstractmethod
    def accept(self, record: CallbackRecord) -> AcceptResult:
        """Store `record` durably, or return the id of the same callback stored before."""

    def accept_many(self, records: list[CallbackRecord]) -> list[AcceptResult]:
        """`accept` for each record, in order (the sweeper's pages); a backend may store them together."""
        return [self.accept(record) for record in records]

    @abstractmethod
    def check_writable(self) -> None:
        """Raise InboxUnavailable unless a write would succeed now."""

    @abstractmethod
    def claim(self, owner: str, limit: int, lease_seconds: float, now: float, wait: bool = True) -> list[ClaimedRecord]:
        """Lease up to `limit` due records (pending and due, or with an expired lease), by priority.

        With `wait`, an inbox that can long-poll may wait a moment for the first record.
        """

    @abstractmethod
    def lease_owners(self) -> set[str]:
        """Owners holding leases now."""

    @abstractmethod
    def release_leases(self, owner: str, now: float) -> int:
        """Make `owner`'s leased records claimable at once (its process is gone); how many."""

    @abstractmethod
    def extend_leases(self, owner: str, ids: list[str], lease_seconds: float, now: float) -> None:
        """The worker still works on these: their leases run `lease_seconds` from `now` (heartbeat)."""

    @abstractmethod
    def settle(self, owner: str, settlements: list[Settlement], now: float) -> None:
        """Settle records still leased by `owner`, all at once; a lease lost to another worker is left alone."""

    # The settlements one at a time, for callers that have one.

    def mark_done(self, owner: str, ids: list[str], now: float) -> None:
        self.settle(owner, [Settlement(record_id, Outcome.DONE) for record_id in ids], now)

    def retry_later(self, owner: str, record_id: str, error: str, next_attempt_at: float, now: float) -> None:
        self.settle(owner, [Settlement(record_id, Outcome.RETRY, error, next_attempt_at)], now)

    def reject(self, owner: str, record_id: str, reason: str, now: float) -> None:
        self.settle(owner, [Settlement(record_id, Outcome.REJECTED, reason)], now)

    def bury(self, owner: str, record_id: str, error: str, now: float) -> None:
        self.settle(owner, [Settlement(record_id, Outcome.DEAD, error)], now)

    def oldest_pending_age(self, now: float) -> float | None:
        """Seconds since the oldest record not yet settled (pending or leased) was received; 0.0 when none is;
        None when this inbox cannot tell cheaply (the default)."""
        return None

    @abstractmethod
    def close(self) -> None: ...


class InboxStats(Protocol):
    """What /metrics reads of an inbox."""

    def counts_by_state(self) -> dict[str, int]: ...

    def rejections_by_reason(self) -> dict[str, int]: ...

    def oldest_pending_age(self, now: float) -> float | None:
        """See `Inbox.oldest_pending_age`: None leaves receiver_inbox_oldest_pending_seconds out."""
        ...


@dataclass(frozen=True)
class StoredRecord:
    """A record as the inbox holds it, for `inspect` and `replay`."""

    record: CallbackRecord
    state: str
    attempts: int
    reason: str | None  # of a rejected record
    last_error: str | None
    duplicates: int  # copies answered duplicate while it held its key
    updated_at: float


@runtime_checkable
class RecordLookup(Protocol):
    """What `inspect` and `replay` read of an inbox that can find its records (SQLite; not an SQS queue)."""

    def records_of_task(self, task_id: str) -> list[StoredRecord]:
        """Every record of the task, oldest first."""
        ...

    def settled_records(self, states: tuple[str, ...], reason: str | None = None, source: str | None = None,
                        since: float | None = None, until: float | None = None,
                        ids: list[str] | None = None) -> list[StoredRecord]:
        """Records in these states (dead, rejected) that match every filter given, oldest first."""
        ...

    def replay(self, ids: list[str], now: float) -> int:
        """Make these dead or rejected records pending again, fresh attempts, behind first calls; how many."""
        ...


@runtime_checkable
class DeadLetterStore(Protocol):
    """What `python -m receiver.deadletters` reads and replays."""

    def dead_letters(self, limit: int) -> list[tuple[CallbackRecord, int, str]]:
        """Dead records, newest first: the record, its attempts and its last error."""
        ...

    def replay_dead(self, ids: list[str] | None, now: float) -> int:
        """Make dead records (all, or those of `ids`) pending again with fresh attempts; how many."""
        ...


def open_inbox(settings: Settings) -> Inbox:
    """The inbox INBOX_URL names."""
    path = settings.sqlite_path
    if path is not None:
        from receiver.inbox.sqlite import SqliteInbox

        return SqliteInbox(path)
    if settings.inbox_url.startswith("sqs+"):
        if not settings.idempotency_table:
            raise ConfigError("IDEMPOTENCY_TABLE: required when INBOX_URL is an sqs+ queue")
        from receiver.inbox.sqs import SqsInbox  # boto3 only where SQS is used

        return SqsInbox.from_url(settings.inbox_url, settings.idempotency_table)
    raise ConfigError(f"INBOX_URL: expected sqlite:///path or sqs+<queue url>, got {settings.inbox_url!r}")


def open_configured_inbox() -> tuple[Settings, Inbox]:
    """For a process's main(): the settings of the environment and the inbox they name.

    A bad value stops the process with the message that names the variable.
    """
    from receiver.config import load_settings

    try:
        settings = load_settings()
        return settings, open_inbox(settings)
    except ConfigError as error:
        raise SystemExit(f"configuration error: {error}") from None
