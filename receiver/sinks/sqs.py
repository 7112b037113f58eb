"""The SQS sink (SPEC 7): batched, FIFO-aware, large events through S3.

Events go out with `SendMessageBatch`, at most 10 per call and never more
bytes per call than the queue accepts for one message, so a batch is never
refused whole for its size. Each message carries the attributes `source`,
`event_type`, `status` and `task_id`, so consumers can filter (SNS, EventBridge
Pipes) without parsing bodies. On a `.fifo` queue the group is the task (the
states of one task stay in order) and the deduplication id is the event id (a
resend within SQS's five-minute window is dropped by SQS itself).

An event over the queue's `MaximumMessageSize` (body and attributes counted)
goes whole to S3 and the message carries the pointer of the AWS SQS extended
client libraries (Java `amazon-sqs-java-extended-client-lib`, Python
`amazon-sqs-extended-client`), so their readers follow it unchanged;
`receiver.consumer.read_event` follows it too.

`send()` keeps the Sink contract: it returns only when every event was
accepted, and raises otherwise (the worker then keeps all of them in the
inbox). Entries that SQS reports as failed for a reason a retry can fix are
retried alone a few times first, so a one-off failure does not make the whole
chunk go round the inbox again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from receiver.config import Settings
from receiver.sinks.encoding import (
    PAYLOAD_SIZE_ATTRIBUTE,
    encode_event,
    message_attributes,
    message_group,
    message_size,
    s3_key_for,
    s3_pointer_body,
)

log = logging.getLogger(__name__)

MAX_BATCH_ENTRIES = 10  # SQS's limit per SendMessageBatch

# Retries of the entries a SendMessageBatch answer lists as Failed (on top of
# botocore's own retries of whole calls): short, because the inbox retries
# later anyway with a longer backoff.
ENTRY_RETRIES = 3
ENTRY_RETRY_BASE_SECONDS = 0.1
# Sender-fault codes that still go away by themselves (every other sender
# fault, e.g. InvalidParameterValue, fails again the same way).
RETRYABLE_SENDER_CODES = frozenset({
    "RequestThrottled", "ThrottlingException", "Throttling", "KmsThrottled", "KMS.ThrottlingException",
})


class SqsSinkError(RuntimeError):
    """Some events of one send() were not accepted by SQS; the caller keeps them all.

    `failed` maps each event id that did not get through to its last error;
    `delivered` holds the ids that SQS did accept in this call, for a caller
    that wants to avoid resending them (a standard queue would hold them twice).
    """

    def __init__(self, message: str, failed: dict[str, str], delivered: Sequence[str] = ()):
        super().__init__(message)
        self.failed = dict(failed)
        self.delivered = list(delivered)


class PayloadTooLargeError(SqsSinkError):
    """An event exceeds the queue's size limit and no SQS_LARGE_PAYLOAD_BUCKET is configured."""


@dataclass
class _Entry:
    """One event ready to send: the SendMessageBatch entry without its Id, and its size as SQS counts it."""

    event_id: str
    fields: dict[str, Any]
    size: int


class SqsSink:
    """Sends normalized events to one SQS queue (standard or FIFO), large ones through S3."""

    def __init__(
        self,
        queue_url: str,
        large_payload_bucket: str | None = None,
        *,
        sqs_client: Any = None,
        s3_client: Any = None,
        max_message_size: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """Clients default to the standard boto3 chain (credentials, region, AWS_ENDPOINT_URL_SQS/_S3).

        `max_message_size` is read from the queue on first use when not given;
        `from_settings` reads it at once so a wrong queue URL stops start-up.
        """
        self.queue_url = queue_url
        self.large_payload_bucket = large_payload_bucket or None
        self.fifo = queue_url.rstrip("/").endswith(".fifo")
        self.sqs_client = sqs_client if sqs_client is not None else boto3.client("sqs")
        self._s3_client = s3_client
        self._max_message_size = max_message_size
        self._sleep = sleep
        # SQS's message id of each event sent, until the worker takes it for the task timeline (`inspect`).
        self.message_ids: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> SqsSink:
        """The sink SINK=sqs configures, with the queue's size limit already read (SPEC 7: at start-up)."""
        if not settings.sqs_queue_url:
            raise ValueError("SQS_QUEUE_URL: required when SINK=sqs")
        sink = cls(settings.sqs_queue_url, settings.sqs_large_payload_bucket)
        sink.read_queue_limit()
        return sink

    @property
    def s3_client(self) -> Any:
        """Created only when a large event needs it, so deployments without large events need no S3 access."""
        if self._s3_client is None:
            self._s3_client = boto3.client("s3")
        return self._s3_client

    def read_queue_limit(self) -> int:
        """Read the queue's MaximumMessageSize (GetQueueAttributes); a wrong URL or missing right fails here."""
        answer = self.sqs_client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["MaximumMessageSize"])
        self._max_message_size = int(answer["Attributes"]["MaximumMessageSize"])
        return self._max_message_size

    @property
    def max_message_size(self) -> int:
        """The queue's MaximumMessageSize in bytes, read once (the limit of one message and of one batch)."""
        if self._max_message_size is None:
            return self.read_queue_limit()
        return self._max_message_size

    def recover_forwarded_ids(self) -> set[str]:
        """Nothing: a queue cannot be read back without taking messages from its consumers."""
        return set()

    def send(self, events: list[dict[str, Any]]) -> None:
        """Deliver every event or raise SqsSinkError / a botocore error (then all stay in the inbox).

        Events too large for the queue are checked first, so that a chunk that
        cannot go through raises before anything of it was sent.
        """
        if not events:
            return
        limit = self.max_message_size
        prepared = []
        for event in events:
            body, attributes = encode_event(event), message_attributes(event)
            prepared.append((event, body, attributes, message_size(body, attributes)))
        too_large = {
            event["event_id"]: f"PayloadTooLarge: {size} bytes, queue limit {limit}"
            for event, _, _, size in prepared
            if size > limit and self.large_payload_bucket is None
        }
        if too_large:
            raise PayloadTooLargeError(
                f"{len(too_large)} event(s) exceed the queue's MaximumMessageSize of {limit} bytes and "
                "SQS_LARGE_PAYLOAD_BUCKET is not set; they stay in the inbox",
                too_large,
            )

        delivered: list[str] = []
        failed: dict[str, str] = {}
        try:
            entries = [self._entry(event, body, attributes, size, limit) for event, body, attributes, size in prepared]
            for batch in self._batches(entries, limit):
                failed.update(self._send_batch(batch, delivered))
        except (BotoCoreError, ClientError) as error:
            pending = {e["event_id"]: f"{type(error).__name__}: {error}" for e in events}
            for event_id in delivered:
                pending.pop(event_id, None)
            raise SqsSinkError(f"SQS send failed: {error}", pending, delivered) from error
        if failed:
            first = next(iter(failed.items()))
            raise SqsSinkError(
                f"SQS refused {len(failed)} of {len(events)} event(s), e.g. {first[0]}: {first[1]}", failed, delivered
            )

    def _entry(
        self, event: dict[str, Any], body: str, attributes: dict[str, dict[str, str]], size: int, limit: int
    ) -> _Entry:
        """The batch entry of one event; a too large event's body goes to S3 first."""
        event_id = event["event_id"]
        if size > limit:
            body, attributes = self._offload(event_id, body, attributes)
            size = message_size(body, attributes)
            if size > limit:  # only a queue limit below any sane value could do this
                raise PayloadTooLargeError(
                    f"even the S3 pointer of {event_id} ({size} bytes) exceeds the queue's limit of {limit}",
                    {event_id: "PayloadTooLarge"},
                )
        fields: dict[str, Any] = {"MessageBody": body, "MessageAttributes": attributes}
        if self.fifo:
            fields["MessageGroupId"] = message_group(event)
            fields["MessageDeduplicationId"] = event_id
        return _Entry(event_id, fields, size)

    def _offload(
        self, event_id: str, body: str, attributes: dict[str, dict[str, str]]
    ) -> tuple[str, dict[str, dict[str, str]]]:
        """Put the body in S3; return the pointer body and the attributes with ExtendedPayloadSize added."""
        assert self.large_payload_bucket is not None  # send() checked
        payload = body.encode("utf-8")
        key = s3_key_for(event_id)
        self.s3_client.put_object(
            Bucket=self.large_payload_bucket, Key=key, Body=payload, ContentType="application/json"
        )
        log.info("event %s (%d bytes) offloaded to s3://%s/%s", event_id, len(payload), self.large_payload_bucket, key)
        attributes = {
            **attributes,
            PAYLOAD_SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": str(len(payload))},
        }
        return s3_pointer_body(self.large_payload_bucket, key), attributes

    @staticmethod
    def _batches(entries: list[_Entry], limit: int) -> Iterator[list[_Entry]]:
        """Consecutive runs of at most 10 entries whose sizes add up to at most `limit`.

        In order, not packed, so a FIFO group's events are sent in the order given.
        """
        batch: list[_Entry] = []
        total = 0
        for entry in entries:
            if batch and (len(batch) == MAX_BATCH_ENTRIES or total + entry.size > limit):
                yield batch
                batch, total = [], 0
            batch.append(entry)
            total += entry.size
        if batch:
            yield batch

    def _send_batch(self, batch: list[_Entry], delivered: list[str]) -> dict[str, str]:
        """Send one batch, retrying only its failed entries; append what SQS took to `delivered` (kept even when
        a later call raises) and return {event id: last error} for what it did not take."""
        pending = {str(index): entry for index, entry in enumerate(batch)}
        permanent: dict[str, str] = {}
        last_error: dict[str, str] = {}
        for attempt in range(ENTRY_RETRIES + 1):
            if attempt:
                self._sleep(ENTRY_RETRY_BASE_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random()))
            answer = self.sqs_client.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": entry_id, **entry.fields} for entry_id, entry in pending.items()],
            )
            for success in answer.get("Successful", []):
                entry = pending.pop(success["Id"], None)
                if entry is not None:
                    delivered.append(entry.event_id)
                    self.message_ids[entry.event_id] = success["MessageId"]
            for failure in answer.get("Failed", []):
                entry = pending.get(failure["Id"])
                if entry is None:
                    continue
                error = f"{failure.get('Code', 'Unknown')}: {failure.get('Message', '')}".rstrip(": ")
                last_error[entry.event_id] = error
                if failure.get("SenderFault") and failure.get("Code") not in RETRYABLE_SENDER_CODES:
                    permanent[entry.event_id] = error
                    del pending[failure["Id"]]
            # What is left was reported as failed for a passing reason (or not reported at all): retry it alone.
            if not pending:
                break
            log.warning("SQS failed %d entr(ies) of a batch (attempt %d): %s", len(pending), attempt + 1,
                        sorted({last_error.get(e.event_id, "not in answer") for e in pending.values()}))
        for entry in pending.values():
            permanent[entry.event_id] = last_error.get(entry.event_id, "not acknowledged by SQS")
        return permanent
