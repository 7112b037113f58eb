"""The inbox for several hosts (SPEC 8): an SQS queue, with the DynamoDB idempotency table.

Web instances on any host put accepted callbacks on the queue; worker
processes on any host receive them. What SQLite's rows and unique index did
on one host, SQS and the shared table (`receiver.idempotency`) do here:

- **Accept** (web): `receiver.inbox.sqs_accept`.
- **Claim** (worker): ReceiveMessage with `VisibilityTimeout` = the lease; a
  crashed worker's messages reappear when it runs out, so there are no lease
  owners to release. `attempts` is SQS's `ApproximateReceiveCount`. One queue
  has no priorities across batches; within a batch, records come in the
  SQLite inbox's order, told from the record: first receives, then records
  received before (look-agains, retries, deferrals), then records of the
  missed-callback sweeper (`origin` "sweeper"). A message written before
  records had an `origin` loads as a callback.
- **Settle** (`settle`): done = DeleteMessage; retry later or deferred =
  ChangeMessageVisibility to the backoff (0 when deferred); reject = a
  `rejected#<record id>` record with its reason and a per-reason counter,
  then delete; bury = send the record, with its last error as a message
  attribute, to the dead-letter queue named by the queue's RedrivePolicy,
  then delete. The redrive policy itself remains the backstop for a record
  that crashes every worker before it can be settled.
- **Copies** (SPEC 6): a duplicate adds one to `copies` on the callback's
  `callback#<key>` record. A record rejected, or done with another status
  than it claimed, deletes that record (the key is free: the next copy is a
  record of its own) unless copies came meanwhile; then it is sent to the
  queue afresh, its patience counted from the latest copy, and reconciled
  once more.
Forwarding each event once across hosts is the ledger's
(`receiver.ledger.dynamodb`, in the same table); the health board is its
`health` item (`receiver.health`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from receiver.config import ConfigError
from receiver.idempotency import CLIENT_CONFIG, IdempotencyStore
from receiver.inbox import (
    AcceptResult,
    ClaimedRecord,
    Inbox,
    InboxUnavailable,
    Outcome,
    Settlement,
    delivery_priority,
    in_claim_order,
)
from receiver.inbox.sqs_accept import accept_callback, callback_key
from receiver.inbox.sqs_dead_letters import DeadLetterQueue
from receiver.inbox.sqs_messages import MAX_RECEIVE, message_body, record_of
from receiver.records import ORIGIN_SWEEPER, CallbackRecord

log = logging.getLogger(__name__)

DAY = 86400.0
ACCEPT_MANY_THREADS = 8  # a sweeper page's records stored a few at a time
REJECTION_TTL_SECONDS = 30 * DAY
RECEIVE_WAIT_SECONDS = 1  # long polling: an idle worker costs one call a second, not five
MAX_VISIBILITY_SECONDS = 43200  # 12 h, SQS's limit

REJECTIONS_KEY = "rejections"


@dataclass
class _Received:
    """What settling a received message needs."""

    receipt_handle: str
    body: str
    lease_expires_at: float
    attempts: int


class SqsInbox(Inbox):
    def __init__(self, queue_url: str, store: IdempotencyStore, sqs: Any | None = None):
        if queue_url.endswith(".fifo"):
            # Ordering buys nothing here (the worker orders by Describe answers) and caps throughput.
            raise ConfigError("INBOX_URL: the inbox must be a standard queue, not a .fifo queue")
        self.queue_url = queue_url
        self.store = store
        self._sqs = sqs or boto3.client("sqs", config=CLIENT_CONFIG)
        self._lock = threading.Lock()
        self._received: dict[str, _Received] = {}
        # Held across each lease-extension call: a record settled meanwhile (made visible again for a retry)
        # is settled after the call, never put back out of sight for a whole lease by it. SQS documents that
        # it "might" refuse a change of a message no longer in flight; moto takes it.
        self._extending = threading.Lock()
        self.dead_letter_queue = DeadLetterQueue(self._sqs, queue_url)

    @classmethod
    def from_url(cls, inbox_url: str, table: str) -> SqsInbox:
        """From `sqs+<queue url>` and IDEMPOTENCY_TABLE (the standard AWS chain gives the rest)."""
        return cls(inbox_url.removeprefix("sqs+"), IdempotencyStore(table))

    # --- web: accept -----------------------------------------------------------------------

    def accept_many(self, records: list[CallbackRecord]) -> list[AcceptResult]:
        """Each record is two network round trips (DynamoDB, SQS): a few at a time, not one after another."""
        with ThreadPoolExecutor(ACCEPT_MANY_THREADS, thread_name_prefix="inbox-accept") as pool:
            return list(pool.map(self.accept, records))

    def accept(self, record: CallbackRecord) -> AcceptResult:
        return accept_callback(self._sqs, self.queue_url, self.store, record)

    def check_writable(self) -> None:
        try:
            self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        except (ClientError, BotoCoreError) as error:
            raise InboxUnavailable(f"inbox queue: {error}") from error

    # --- workers: claim and settle ------------------------------------------------------------

    def claim(self, owner: str, limit: int, lease_seconds: float, now: float, wait: bool = True) -> list[ClaimedRecord]:
        claimed: list[ClaimedRecord] = []
        while len(claimed) < limit:
            answer = self._sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=min(MAX_RECEIVE, limit - len(claimed)),
                VisibilityTimeout=math.ceil(lease_seconds), MessageSystemAttributeNames=["ApproximateReceiveCount"],
                # Wait for the first message only: a batch is whatever is there at that moment.
                WaitTimeSeconds=RECEIVE_WAIT_SECONDS if wait and not claimed else 0,
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            for message in messages:
                item = self._claimed(message, now + lease_seconds)
                if item is not None:
                    claimed.append(item)
        return in_claim_order(claimed)

    def _claimed(self, message: dict[str, Any], lease_expires_at: float) -> ClaimedRecord | None:
        try:
            record, patience_from = record_of(message["Body"])
        except (ValueError, TypeError) as error:
            # Not a record of ours: the redrive policy moves it to the dead-letter queue in time.
            log.error("inbox message %s is not a callback record: %s", message.get("MessageId"), error)
            return None
        attempts = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        with self._lock:
            self._forget_expired(time.time())
            self._received[record.id] = _Received(message["ReceiptHandle"], message["Body"], lease_expires_at,
                                                  attempts)
        # One queue has no priorities: they are told from the record and its receive count (a receive past
        # the first is a look-again, or a record deferred by a busy pass).
        return ClaimedRecord(record, attempts, lease_expires_at, delivery_priority(record, attempts), patience_from)

    def _forget_expired(self, now: float) -> None:
        """Receipt handles of leases that ran out (a pass that failed) are useless: drop them."""
        for record_id in [r for r, seen in self._received.items() if seen.lease_expires_at < now]:
            del self._received[record_id]

    def _take(self, record_id: str) -> _Received | None:
        with self._extending, self._lock:
            return self._received.pop(record_id, None)

    def lease_owners(self) -> set[str]:
        return set()  # visibility timeouts run out by themselves

    def release_leases(self, owner: str, now: float) -> int:
        return 0

    def extend_leases(self, owner: str, ids: list[str], lease_seconds: float, now: float) -> None:
        """ChangeMessageVisibilityBatch, ten messages a call; a message whose handle is gone runs out by itself."""
        expires = now + lease_seconds
        for start in range(0, len(ids), MAX_RECEIVE):
            with self._extending:
                with self._lock:
                    held = [self._received[record_id] for record_id in ids[start:start + MAX_RECEIVE]
                            if record_id in self._received]
                    for seen in held:
                        seen.lease_expires_at = expires
                if held:
                    self._extend(held, lease_seconds)

    def _extend(self, held: list[_Received], lease_seconds: float) -> None:
        entries = [{"Id": str(n), "ReceiptHandle": seen.receipt_handle, "VisibilityTimeout": math.ceil(lease_seconds)}
                   for n, seen in enumerate(held)]
        try:
            answer = self._sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as error:
            log.warning("could not extend %d lease(s): %s", len(entries), error)
            return
        for failed in answer.get("Failed", []):
            log.warning("could not extend a lease: %s", failed.get("Message") or failed.get("Code"))

    def settle(self, owner: str, settlements: list[Settlement], now: float) -> None:
        """Each record on its own: one that SQS or DynamoDB fails keeps its lease and comes back when it runs
        out (its event, if sent, is known forwarded by then); the rest of the batch is settled."""
        done: list[str] = []
        for settlement in settlements:
            try:
                if self._settle_one(settlement, now):
                    done.append(settlement.record_id)
            except (ClientError, BotoCoreError) as error:
                log.warning("could not settle callback %s (%s); it comes back when its lease runs out: %s",
                            settlement.record_id, settlement.outcome.value, error)
        self._delete(done)

    def _settle_one(self, settlement: Settlement, now: float) -> bool:
        """Settle one record; True when it is done and only its message is left to delete."""
        outcome = settlement.outcome
        if outcome is Outcome.DONE:
            return True
        if outcome is Outcome.RETRY:
            self._delay(settlement.record_id, settlement.detail, settlement.next_attempt_at or now, now)
        elif outcome is Outcome.DEFERRED:
            self._delay(settlement.record_id, "deferred", now, now)
        elif outcome is Outcome.DEAD:
            self._bury(settlement.record_id, settlement.detail)
        elif not self._reconcile_again(settlement.record_id):  # REJECTED or UNCONFIRMED, key let go
            if outcome is Outcome.UNCONFIRMED:
                return True  # the event is out, the record is done
            self._reject(settlement.record_id, settlement.detail, now)
        return False

    def _delete(self, ids: list[str]) -> None:
        handles = [seen.receipt_handle for seen in map(self._take, ids) if seen is not None]
        for start in range(0, len(handles), MAX_RECEIVE):
            entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles[start:start + MAX_RECEIVE])]
            try:
                answer = self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as error:
                log.warning("could not delete %d inbox message(s); they come back and are settled then: %s",
                            len(entries), error)
                continue
            for failed in answer.get("Failed", []):
                # A lease lost to another worker: the record comes back and is settled then.
                log.warning("could not delete an inbox message: %s", failed.get("Message") or failed.get("Code"))

    def _reconcile_again(self, record_id: str) -> bool:
        """Let go of the record's copy key; or, if copies came meanwhile, queue it afresh and say so."""
        with self._lock:
            seen = self._received.get(record_id)
        if seen is None:
            return False
        record, _ = record_of(seen.body)
        if record.origin == ORIGIN_SWEEPER:
            return False  # a swept task's verdict is final: every sweep would add it again
        copy_at = self.store.release_unless_copied(callback_key(record), record.id)
        if copy_at is None:
            return False
        self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=message_body(record, patience_from=copy_at))
        self._delete([record_id])
        return True

    def _delay(self, record_id: str, error: str, next_attempt_at: float, now: float) -> None:
        seen = self._take(record_id)
        if seen is None:
            return
        delay = min(MAX_VISIBILITY_SECONDS, max(0, math.ceil(next_attempt_at - now)))
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=seen.receipt_handle, VisibilityTimeout=delay
            )
        except ClientError as failure:
            # E.g. past SQS's 12 hours since the receive: the lease runs out and the record comes back.
            log.warning("could not delay callback %s (%s): %s", record_id, error, failure)

    def _reject(self, record_id: str, reason: str, now: float) -> None:
        seen = self._take(record_id)
        if seen is None:
            return
        # Counted once per record, also when a redelivered copy is rejected again.
        if self.store.put_if_absent(f"rejected#{record_id}", {"reason": reason}, REJECTION_TTL_SECONDS, now):
            self.store.increment(REJECTIONS_KEY, reason)
        self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=seen.receipt_handle)

    def _bury(self, record_id: str, error: str) -> None:
        seen = self._take(record_id)
        if seen is None:
            return
        self.dead_letter_queue.bury(seen.body, record_id, error, seen.attempts)
        self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=seen.receipt_handle)

    # --- DeadLetterStore -----------------------------------------------------------------------

    def dead_letters(self, limit: int) -> list[tuple[CallbackRecord, int, str]]:
        return self.dead_letter_queue.letters(limit)

    def replay_dead(self, ids: list[str] | None, now: float) -> int:
        return self.dead_letter_queue.replay(ids, self.queue_url)

    # --- counts ---------------------------------------------------------------------------------

    def counts_by_state(self) -> dict[str, int]:
        main = self._queue_counts(self.queue_url)
        dead = self._queue_counts(self.dead_letter_queue.url())
        return {
            "pending": main["ApproximateNumberOfMessages"] + main["ApproximateNumberOfMessagesDelayed"],
            "leased": main["ApproximateNumberOfMessagesNotVisible"],
            "dead": sum(dead.values()),
            "rejected": sum(self.rejections_by_reason().values()),
        }

    def _queue_counts(self, url: str) -> dict[str, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]
        attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names).get("Attributes", {})
        return {name: int(attributes.get(name, 0)) for name in names}

    def rejections_by_reason(self) -> dict[str, int]:
        counters = self.store.get(REJECTIONS_KEY)
        return {reason: int(n) for reason, n in counters.items() if reason != "id"}

    def oldest_pending_age(self, now: float) -> float | None:
        # SQS tells a queue's oldest message's age only through CloudWatch (ApproximateAgeOfOldestMessage),
        # not GetQueueAttributes; finding it here would mean receiving every message. Alert on CloudWatch.
        return None

    def close(self) -> None:
        pass  # boto3 clients need no closing
