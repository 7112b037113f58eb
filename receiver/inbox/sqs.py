"""The inbox for several hosts (SPEC 8): an SQS queue, with the DynamoDB idempotency table.

Web instances on any host put accepted callbacks on the queue; worker
processes on any host receive them. What SQLite's rows and unique index did
on one host, SQS and the shared table (`receiver.idempotency`) do here:

- **Accept** (web): the callback's `dedup_key` is claimed in the table
  (`callback#<key>`, in progress for `ACCEPT_CLAIM_SECONDS`), the record is
  sent to the queue, and the claim is completed with the record id. Only then
  is `200` answered. A crash between the claim and the send leaves a claim
  that runs out by itself, so Tencent Cloud's next retry is stored, not
  answered "duplicate" forever; a crash between the send and the completion
  may make that retry a second record, which the event idempotency below
  absorbs. A duplicate arriving while another instance is still sending waits
  for it a moment, then answers with the stored id.
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
- **Forward once across hosts**: `already_forwarded(ids)` *claims* each
  `event#<id>` until the current batch's lease runs out and answers the ids that
  are completed or that another worker holds; `mark_forwarded(ids)` completes
  them for `EVENT_TTL_SECONDS`. Two workers holding records of the same state
  change (duplicates accepted by two instances, a redelivered message)
  therefore send it once. If the sink fails, the worker retries its records
  and the claims are released at once. Limits: a worker that dies after the
  sink took an event but before `mark_forwarded` leaves a claim that runs out
  with its lease, and the record's next delivery sends the event again -
  at-least-once, the only case of a duplicate (a FIFO sink queue drops it
  within five minutes by its deduplication id). A worker that finds another's
  live claim waits up to `EVENT_WAIT_SECONDS` for it to complete; if it does
  not, the worker looks at the batch again a second later, rather than
  marking done a record whose event nobody may send.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from receiver.config import ConfigError
from receiver.idempotency import CLAIMED, COMPLETED, IdempotencyStore
from receiver.inbox import (
    PRIORITY_FIRST_CALL,
    PRIORITY_LOOK_AGAIN,
    PRIORITY_SWEPT,
    AcceptResult,
    ClaimedRecord,
    EventStillInProgress,
    Inbox,
    InboxUnavailable,
    Outcome,
    Settlement,
)
from receiver.records import ORIGIN_SWEEPER, CallbackRecord

log = logging.getLogger(__name__)

DAY = 86400.0
ACCEPT_CLAIM_SECONDS = 30.0  # longer than a SendMessage with botocore's retries takes
ACCEPT_WAIT_SECONDS = 5.0  # how long a duplicate waits for the instance storing the same callback
ACCEPT_MANY_THREADS = 8  # a sweeper page's records stored a few at a time
CALLBACK_TTL_SECONDS = 7 * DAY  # a callback repeated later than this is stored again
EVENT_TTL_SECONDS = 7 * DAY
EVENT_WAIT_SECONDS = 10.0
DEFAULT_LEASE_SECONDS = 120.0  # event claims of an instance that claimed no batch (the worker's lease)
MIN_EVENT_CLAIM_SECONDS = 5.0  # a batch past its lease still gets a moment to send
REJECTION_TTL_SECONDS = 30 * DAY
POLL_SECONDS = 0.05
RECEIVE_WAIT_SECONDS = 1  # long polling: an idle worker costs one call a second, not five
MAX_RECEIVE = 10  # SQS's limit per ReceiveMessage and per DeleteMessageBatch
MAX_VISIBILITY_SECONDS = 43200  # 12 h, SQS's limit
MAX_ERROR_CHARS = 4096
DEAD_LETTER_PEEK_SECONDS = 30  # listing dead letters receives them: they reappear this much later

REJECTIONS_KEY = "rejections"
HEALTH_KEY = "health"




def message_body(record: CallbackRecord, patience_from: float | None = None) -> str:
    """An inbox message: the record, and when its latest copy came if it is queued afresh for one."""
    body = asdict(record)
    if patience_from is not None:
        body["patience_from"] = patience_from
    return json.dumps(body)


def record_of(body: str) -> tuple[CallbackRecord, float | None]:
    fields = json.loads(body)
    patience_from = fields.pop("patience_from", None)
    return CallbackRecord(**fields), patience_from


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
        self._sqs = sqs or boto3.client(
            "sqs", config=Config(connect_timeout=5, read_timeout=20, max_pool_connections=32)
        )
        self._lock = threading.Lock()
        self._received: dict[str, _Received] = {}
        self._open_event_claims: dict[str, str] = {}  # event id -> claim token, until sent
        self._lease_expires_at: float | None = None  # of the batch claimed last
        self._dead_letter_url: str | None = None
        try:
            self._dead_letter_url = self._find_dead_letter_queue()
        except (ClientError, BotoCoreError) as error:
            # SQS unreachable at start: web instances must still come up; bury() asks again.
            log.warning("could not read the inbox queue's RedrivePolicy yet: %s", error)

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
        key = f"callback#{record.dedup_key}"
        deadline = time.monotonic() + ACCEPT_WAIT_SECONDS
        while True:
            try:
                claim = self.store.claim(key, ACCEPT_CLAIM_SECONDS, CALLBACK_TTL_SECONDS, time.time(),
                                         {"record_id": record.id})
            except (ClientError, BotoCoreError) as error:
                raise InboxUnavailable(f"idempotency table: {error}") from error
            if claim.outcome == COMPLETED:
                # Remembered, so that the record reconciles once more if it lets go of its key;
                # if it let go just now, this copy is a record of its own: claim again.
                try:
                    if not self.store.add_copy(key, record.received_at):
                        continue
                except (ClientError, BotoCoreError) as error:
                    raise InboxUnavailable(f"idempotency table: {error}") from error
                return AcceptResult(claim.data["record_id"], duplicate=True)
            if claim.outcome == CLAIMED:
                return self._send(key, claim.token, record)
            # Another instance is storing this very callback now: its answer is ours.
            if time.monotonic() > deadline:
                raise InboxUnavailable("the same callback is being stored by another instance")
            time.sleep(POLL_SECONDS)

    def _send(self, key: str, token: str, record: CallbackRecord) -> AcceptResult:
        try:
            answer = self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=message_body(record))
        except (ClientError, BotoCoreError) as error:
            self._quietly(self.store.release, key, token)
            raise InboxUnavailable(f"inbox queue: {error}") from error
        try:
            self.store.complete(key, CALLBACK_TTL_SECONDS, time.time(),
                                {"record_id": record.id, "message_id": answer["MessageId"]})
        except (ClientError, BotoCoreError) as error:
            # Stored all the same: the claim runs out, and a repeat at worst becomes a second record.
            log.warning("callback %s is queued but its idempotency record stays in progress: %s", record.id, error)
        return AcceptResult(record.id, duplicate=False)

    def check_writable(self) -> None:
        try:
            self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        except (ClientError, BotoCoreError) as error:
            raise InboxUnavailable(f"inbox queue: {error}") from error

    # --- workers: claim and settle ------------------------------------------------------------

    def claim(self, owner: str, limit: int, lease_seconds: float, now: float, wait: bool = True) -> list[ClaimedRecord]:
        self._lease_expires_at = time.time() + lease_seconds
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
        return sorted(claimed, key=lambda c: (c.priority, c.record.id))

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
        # One queue has no priorities: they are told from the record (a receive
        # past the first is a look-again, or a record deferred by a busy pass).
        if record.origin == ORIGIN_SWEEPER:
            priority = PRIORITY_SWEPT
        else:
            priority = PRIORITY_LOOK_AGAIN if attempts > 1 else PRIORITY_FIRST_CALL
        return ClaimedRecord(record, attempts, lease_expires_at, priority, patience_from)

    def _forget_expired(self, now: float) -> None:
        """Receipt handles of leases that ran out (a pass that failed) are useless: drop them."""
        for record_id in [r for r, seen in self._received.items() if seen.lease_expires_at < now]:
            del self._received[record_id]

    def _take(self, record_id: str) -> _Received | None:
        with self._lock:
            return self._received.pop(record_id, None)

    def lease_owners(self) -> set[str]:
        return set()  # visibility timeouts run out by themselves

    def release_leases(self, owner: str, now: float) -> int:
        return 0

    def extend_leases(self, owner: str, ids: list[str], lease_seconds: float, now: float) -> None:
        """ChangeMessageVisibilityBatch, ten messages a call; a message whose handle is gone runs out by itself."""
        expires = now + lease_seconds
        with self._lock:
            held = [(record_id, self._received[record_id]) for record_id in ids if record_id in self._received]
            for _, seen in held:
                seen.lease_expires_at = expires
            self._lease_expires_at = max(self._lease_expires_at or 0.0, time.time() + lease_seconds)
        for start in range(0, len(held), MAX_RECEIVE):
            entries = [{"Id": str(n), "ReceiptHandle": seen.receipt_handle,
                        "VisibilityTimeout": math.ceil(lease_seconds)}
                       for n, (_, seen) in enumerate(held[start:start + MAX_RECEIVE])]
            try:
                answer = self._sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as error:
                log.warning("could not extend %d lease(s): %s", len(entries), error)
                continue
            for failed in answer.get("Failed", []):
                log.warning("could not extend a lease: %s", failed.get("Message") or failed.get("Code"))

    def settle(self, owner: str, settlements: list[Settlement], now: float) -> None:
        done: list[str] = []
        for settlement in settlements:
            outcome = settlement.outcome
            if outcome is Outcome.DONE:
                done.append(settlement.record_id)
            elif outcome is Outcome.RETRY:
                self._delay(settlement.record_id, settlement.detail, settlement.next_attempt_at or now, now)
            elif outcome is Outcome.DEFERRED:
                self._delay(settlement.record_id, "deferred", now, now)
            elif outcome is Outcome.DEAD:
                self._bury(settlement.record_id, settlement.detail)
            elif self._reconcile_again(settlement.record_id):
                continue
            elif outcome is Outcome.REJECTED:
                self._reject(settlement.record_id, settlement.detail, now)
            else:  # UNCONFIRMED, key released: the event is out, the record is done
                done.append(settlement.record_id)
        self._delete(done)

    def _delete(self, ids: list[str]) -> None:
        handles = [seen.receipt_handle for seen in map(self._take, ids) if seen is not None]
        for start in range(0, len(handles), MAX_RECEIVE):
            entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles[start:start + MAX_RECEIVE])]
            answer = self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
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
        copy_at = self.store.release_unless_copied(f"callback#{record.dedup_key}", record.id)
        if copy_at is None:
            return False
        self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=message_body(record, patience_from=copy_at))
        self._delete([record_id])
        return True

    def _delay(self, record_id: str, error: str, next_attempt_at: float, now: float) -> None:
        self._release_event_claims()
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
        self._release_event_claims()
        seen = self._take(record_id)
        if seen is None:
            return
        self._sqs.send_message(
            QueueUrl=self._dead_letter_queue(), MessageBody=seen.body,
            MessageAttributes={
                "last_error": {"DataType": "String", "StringValue": error[:MAX_ERROR_CHARS] or "-"},
                "record_id": {"DataType": "String", "StringValue": record_id},
                "attempts": {"DataType": "Number", "StringValue": str(seen.attempts)},
            },
        )
        self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=seen.receipt_handle)

    # --- dead-letter queue ------------------------------------------------------------------------

    def _find_dead_letter_queue(self) -> str:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"]
        ).get("Attributes", {})
        if "RedrivePolicy" not in attributes:
            raise ConfigError(
                f"INBOX_URL: queue {self.queue_url} has no RedrivePolicy; give it a dead-letter queue"
            )
        arn = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
        *_, account, name = arn.split(":")
        return self._sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]

    def _dead_letter_queue(self) -> str:
        if self._dead_letter_url is None:
            self._dead_letter_url = self._find_dead_letter_queue()
        return self._dead_letter_url

    def dead_letters(self, limit: int) -> list[tuple[CallbackRecord, int, str]]:
        """Up to `limit` dead letters, read by receiving them: they are hidden for DEAD_LETTER_PEEK_SECONDS."""
        letters = []
        for message in self._receive_dead(limit):
            attributes = message.get("MessageAttributes", {})
            error = attributes.get("last_error", {}).get("StringValue", "moved by the queue's redrive policy")
            attempts = attributes.get("attempts", {}).get("StringValue") or message["Attributes"].get(
                "ApproximateReceiveCount", "0")
            letters.append((record_of(message["Body"])[0], int(attempts), error))
        return sorted(letters, key=lambda letter: letter[0].received_at, reverse=True)

    def replay_dead(self, ids: list[str] | None, now: float) -> int:
        """Send dead letters (all, or those of `ids`) back to the inbox queue as new messages (fresh attempts)."""
        wanted = None if ids is None else set(ids)
        replayed = 0
        dead_url = self._dead_letter_queue()
        for message in self._receive_dead(None):
            if wanted is not None and json.loads(message["Body"]).get("id") not in wanted:
                self._sqs.change_message_visibility(
                    QueueUrl=dead_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
                continue
            self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=message["Body"])
            self._sqs.delete_message(QueueUrl=dead_url, ReceiptHandle=message["ReceiptHandle"])
            replayed += 1
        return replayed

    def _receive_dead(self, limit: int | None) -> list[dict[str, Any]]:
        """Receive what the dead-letter queue holds (up to `limit`), each message once."""
        found: dict[str, dict[str, Any]] = {}
        while limit is None or len(found) < limit:
            answer = self._sqs.receive_message(
                QueueUrl=self._dead_letter_queue(), MaxNumberOfMessages=MAX_RECEIVE,
                VisibilityTimeout=DEAD_LETTER_PEEK_SECONDS, MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=0,
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            for message in messages:
                found.setdefault(message["MessageId"], message)
        return list(found.values())[:limit]

    # --- counts ---------------------------------------------------------------------------------

    def counts_by_state(self) -> dict[str, int]:
        main = self._queue_counts(self.queue_url)
        dead = self._queue_counts(self._dead_letter_queue())
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

    # --- forwarding once across hosts --------------------------------------------------------------

    def already_forwarded(self, event_ids: list[str]) -> set[str]:
        """Claim each event for this lease; the ids sent before (module docstring).

        Ids are claimed in sorted order, waiting at each one another worker
        holds: two workers with overlapping batches then never each hold what
        the other waits for.
        """
        seen: set[str] = set()
        deadline = time.monotonic() + EVENT_WAIT_SECONDS
        for event_id in sorted(set(event_ids)):
            while True:
                claim = self.store.claim(f"event#{event_id}", self._event_claim_seconds(), EVENT_TTL_SECONDS,
                                         time.time())
                if claim.outcome == CLAIMED:
                    with self._lock:
                        self._open_event_claims[event_id] = claim.token
                    break
                if claim.outcome == COMPLETED:
                    seen.add(event_id)
                    break
                if time.monotonic() > deadline:
                    self._release_event_claims()
                    raise EventStillInProgress(f"event {event_id} is still being forwarded by another worker")
                time.sleep(POLL_SECONDS)
        return seen

    def _event_claim_seconds(self) -> float:
        """Until the batch's lease runs out: a worker that died lets go of its events when its records reappear."""
        if self._lease_expires_at is None:
            return DEFAULT_LEASE_SECONDS
        return max(MIN_EVENT_CLAIM_SECONDS, self._lease_expires_at - time.time())

    def mark_forwarded(self, event_ids: list[str], now: float) -> None:
        with self._lock:
            # Sent: from here on a failure must leave the claims to run out, never release them.
            for event_id in event_ids:
                self._open_event_claims.pop(event_id, None)
        self.store.complete_many([f"event#{event_id}" for event_id in event_ids], EVENT_TTL_SECONDS, now)

    def _release_event_claims(self) -> None:
        """The sink failed (the worker is retrying or burying): let the next try claim the events at once."""
        with self._lock:
            open_claims, self._open_event_claims = self._open_event_claims, {}
        for event_id, token in open_claims.items():
            self._quietly(self.store.release, f"event#{event_id}", token)

    # --- health -------------------------------------------------------------------------------------

    def set_health(self, component: str, status: str, detail: str, now: float) -> None:
        self.store.set_attribute(HEALTH_KEY, component, {"status": status, "detail": detail, "updated_at": repr(now)})

    def health(self) -> dict[str, str]:
        try:
            reported = self.store.get(HEALTH_KEY)
        except (ClientError, BotoCoreError) as error:
            raise InboxUnavailable(f"idempotency table: {error}") from error
        return {name: value["status"] for name, value in reported.items() if isinstance(value, dict)}

    def close(self) -> None:
        self._release_event_claims()

    @staticmethod
    def _quietly(action: Any, *args: Any) -> None:
        """Best-effort clean-up: a claim that cannot be released now runs out by itself."""
        try:
            action(*args)
        except (ClientError, BotoCoreError) as error:
            log.warning("idempotency clean-up failed (the claim will run out): %s", error)
