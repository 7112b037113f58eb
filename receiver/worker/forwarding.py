"""Step 5 of the worker's loop: forward the finished units' events in whole batches, and settle every verdict.

The loop hands verdicts to the `Outbox`; the forwarding thread takes them
out in batches (`Outbox.next_batch`) and the `Forwarder` sends each event
once per deployment (through the forwarded-events ledger) and settles every
verdict in one place (`settlement`). A slow sink never idles the quota: the
loop goes on claiming and starting while a batch is being sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from receiver.inbox import ClaimedRecord, Inbox, Outcome, Settlement
from receiver.ledger import EventStillInProgress, ForwardedLedger, LedgerUnavailable
from receiver.metrics import count_forwarded
from receiver.reconcile import Forward, Reject
from receiver.sinks import Sink, encode_event
from receiver.tencentcloud import Failure
from receiver.timeline import Entry, Timeline
from receiver.worker.units import Bury, Judged, Retry, Verdict
from schemas.event import NormalizedEventSchema

log = logging.getLogger(__name__)

SINK_BATCH = 10  # events per sink call (SQS SendMessageBatch takes 10)
# The longest a finished record waits for a full batch while the worker is busy: at 20 events/s (the
# slowest action's limit) that is two full batches. A worker with no batch's worth coming forwards at once.
FLUSH_SECONDS = 1.0
LOOK_AGAIN_SECONDS = 1.0


class Outbox:
    """Verdicts waiting for the forwarding thread, and what it needs to know to batch them."""

    def __init__(self) -> None:
        self._judged: Judged = []
        self._since = 0.0
        self._changed = threading.Condition()
        self._idle = True
        self._coming = 0  # units started or waiting: verdicts still to come
        self._done = False  # set at the stop, once no more verdicts can come

    def put(self, judged: Judged) -> None:
        if not judged:
            return
        with self._changed:
            if not self._judged:
                self._since = time.monotonic()
            self._judged.extend(judged)
            self._changed.notify()

    def expect(self, coming: int, idle: bool) -> None:
        """How many verdicts are still to come; an idle loop has nothing coming soon: what waits goes at once."""
        with self._changed:
            self._coming = coming
            self._idle = idle
            if idle:
                self._changed.notify()

    def close(self) -> None:
        """No more verdicts: the forwarding thread takes what is left, then stops."""
        with self._changed:
            self._idle = self._done = True
            self._changed.notify()

    def take_all(self) -> Judged:
        with self._changed:
            judged, self._judged = self._judged, []
            return judged

    def next_batch(self) -> Judged | None:
        """Whole batches of 10 events; what waited FLUSH_SECONDS; all, when no batch's worth is coming.
        None once closed and empty."""
        with self._changed:
            while not self._ready():
                if self._done and not self._judged:
                    return None
                wait = FLUSH_SECONDS - (time.monotonic() - self._since) if self._judged else None
                self._changed.wait(wait if wait is None else max(wait, 0.001))
            return self._batch()

    def _ready(self) -> bool:
        if not self._judged:
            return False
        events = sum(isinstance(verdict, Forward) for _, verdict in self._judged)
        # Waiting pays only when enough is coming to fill a batch.
        return (events >= SINK_BATCH or self._idle or events + self._coming < SINK_BATCH
                or time.monotonic() - self._since >= FLUSH_SECONDS)

    def _batch(self) -> Judged:
        """All that waits; but a busy worker's events beyond whole batches of 10 wait for the next."""
        judged, self._judged = self._judged, []
        if self._idle or time.monotonic() - self._since >= FLUSH_SECONDS or self._coming < SINK_BATCH:
            return judged
        forwards = [index for index, (_, verdict) in enumerate(judged) if isinstance(verdict, Forward)]
        later = set(forwards[len(forwards) - len(forwards) % SINK_BATCH:])
        self._judged = [pair for index, pair in enumerate(judged) if index in later]
        self._since = time.monotonic() if self._judged else 0.0
        return [pair for index, pair in enumerate(judged) if index not in later]


class Forwarder:
    """Sends a batch's events once per deployment, then settles every verdict of the batch."""

    def __init__(self, inbox: Inbox, ledger: ForwardedLedger, sink: Sink, owner: str, hold_seconds: float,
                 clock: Callable[[], float], failed: Callable[[ClaimedRecord, Failure, BaseException], Verdict],
                 report: Callable[[str, str, str], None], timeline: Timeline | None = None):
        self.inbox = inbox
        self.ledger = ledger
        self.timeline = timeline or Timeline()
        self.sink = sink
        self.owner = owner
        self.hold_seconds = hold_seconds  # the records' lease: a dead worker's claims run out with it
        self.clock = clock
        self._failed = failed
        self._report = report
        self._schema = NormalizedEventSchema()

    def forward_and_settle(self, judged: Judged) -> None:
        judged, sent = self.forward(judged)
        now = self.clock()
        self.inbox.settle(self.owner, [settlement(item, verdict, now) for item, verdict in judged], now)
        sink_ids = getattr(self.sink, "message_ids", {})
        message_ids = {event_id: sink_ids.pop(event_id) for event_id in sent if event_id in sink_ids}
        self.timeline.append(entries_of(judged, sent, type(self.sink).__name__, message_ids, now))

    def forward(self, judged: Judged) -> tuple[Judged, set[str]]:
        """Send each event once per deployment; what the sink took stays Forward, the rest becomes a retry.
        Also the event ids sent now."""
        outgoing: Judged = []
        result: Judged = []
        for item, verdict in judged:
            if not isinstance(verdict, Forward):
                result.append((item, verdict))
                continue
            try:  # an event that cannot be forwarded fails its own record, not the batch
                self._schema.load(verdict.event)
                encode_event(verdict.event)
            except Exception as error:  # noqa: BLE001 - invalid or unencodable: retried, then buried
                log.error("the event of callback %s cannot be forwarded: %s", item.record.id, error)
                result.append((item, self._failed(item, Failure.OTHER, error)))
                continue
            outgoing.append((item, verdict))
        if not outgoing:
            return result, set()
        sent_verdicts, sent = self._send(outgoing)
        return result + sent_verdicts, sent

    def _send(self, outgoing: Judged) -> tuple[Judged, set[str]]:
        """Claim, send, settle the claims; the verdicts as they stand now, and the event ids the sink took."""
        now = self.clock()
        try:
            claims = self.ledger.claim([verdict.event["event_id"] for _, verdict in outgoing], self.hold_seconds, now)
        except EventStillInProgress as error:
            # Another worker is sending one of these right now: look again once it is done.
            return [(item, Retry(str(error), now + LOOK_AGAIN_SECONDS)) for item, _ in outgoing], set()
        except LedgerUnavailable as error:
            # Nothing was sent: the records back off and try again (an outage never buries a record).
            log.error("the forwarded-events ledger failed; %d record(s) try again later: %s", len(outgoing), error)
            return [(item, self._failed(item, Failure.RETRY, error)) for item, _ in outgoing], set()
        fresh: dict[str, dict[str, Any]] = {}
        for _, verdict in outgoing:
            if verdict.event["event_id"] not in claims.forwarded:
                fresh.setdefault(verdict.event["event_id"], verdict.event)
        failure: Exception | None = None
        try:
            self.sink.send(list(fresh.values()))
            delivered = set(fresh)
        except Exception as error:  # noqa: BLE001 - any sink failure keeps the events it did not take
            failure = error
            self._report("sink", "failing", type(error).__name__)
            delivered = set(fresh) & set(getattr(error, "delivered", ()))
        self.ledger.settle(claims, sorted(delivered), now)  # what the sink did not take is free at once
        count_forwarded([(v.event, item.record.received_at) for item, v in outgoing
                         if v.event["event_id"] in delivered], self.clock())
        if failure is not None:
            sent = claims.forwarded | delivered
            return [(item, verdict if verdict.event["event_id"] in sent else self._failed(item, Failure.OTHER, failure))
                    for item, verdict in outgoing], delivered
        self._report("sink", "ok", "")
        if fresh:
            log.info("forwarded %d event(s) for %d callback(s)", len(fresh), len(outgoing))
        return outgoing, delivered


def settlement(item: ClaimedRecord, verdict: Verdict, now: float) -> Settlement:
    """Every verdict becomes an inbox outcome here."""
    record_id = item.record.id
    if isinstance(verdict, Forward):
        return Settlement(record_id, Outcome.DONE if verdict.confirmed else Outcome.UNCONFIRMED)
    if isinstance(verdict, Reject):
        log.warning("rejected callback %s (%s): %s", record_id, verdict.reason, verdict.detail)
        return Settlement(record_id, Outcome.REJECTED, verdict.reason)
    if isinstance(verdict, Retry):
        return Settlement(record_id, Outcome.RETRY, verdict.error, max(verdict.at, now))
    if isinstance(verdict, Bury):
        return Settlement(record_id, Outcome.DEAD, verdict.error)
    return Settlement(record_id, Outcome.DEFERRED)


def entries_of(judged: Judged, sent: set[str], sink: str, message_ids: dict[str, str], now: float) -> list[Entry]:
    """The timeline entries of settled verdicts (a record without a task id, or deferred, leaves none)."""
    entries = []
    for item, verdict in judged:
        detail = _detail(verdict, sent, sink, message_ids)
        if detail is not None and item.record.task_id:
            kind, fields = detail
            entries.append(Entry(item.record.task_id, item.record.source, item.record.id, now, kind, fields))
    return entries


def _detail(verdict: Any, sent: set[str], sink: str, message_ids: dict[str, str]) -> tuple[str, dict] | None:
    if isinstance(verdict, Forward):
        event_id = verdict.event["event_id"]
        fields = {"event_id": event_id, "status": verdict.event.get("status"),
                  "reconciled_with": verdict.event.get("reconciled_with"), "confirmed": verdict.confirmed}
        if event_id in sent:
            return "forwarded", {**fields, "sink": sink, "message_id": message_ids.get(event_id)}
        return "already_forwarded", fields
    if isinstance(verdict, Reject):
        return "rejected", {"reason": verdict.reason, "detail": verdict.detail}
    if isinstance(verdict, Retry):
        return "retry", {"error": verdict.error}
    if isinstance(verdict, Bury):
        return "dead", {"error": verdict.error}
    return None
