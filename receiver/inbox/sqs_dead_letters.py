"""The SQS inbox's dead-letter queue: the one its RedrivePolicy names.

A record buried by a worker is sent there with its last error and attempts
as message attributes; a record that crashed every worker before it could be
settled is moved there by SQS itself (the redrive policy is the backstop).
Listing receives the messages, so they are hidden for
DEAD_LETTER_PEEK_SECONDS; replaying sends them back to the inbox queue as
new messages, with fresh attempts.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from receiver.config import ConfigError
from receiver.inbox.sqs_messages import MAX_RECEIVE, record_of
from receiver.records import CallbackRecord

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4096
DEAD_LETTER_PEEK_SECONDS = 30  # listing dead letters receives them: they reappear this much later


class DeadLetterQueue:
    def __init__(self, sqs: Any, inbox_queue_url: str):
        self._sqs = sqs
        self._inbox_queue_url = inbox_queue_url
        self._url: str | None = None
        try:
            self._url = self._find()
        except (ClientError, BotoCoreError) as error:
            # SQS unreachable at start: web instances must still come up; bury() asks again.
            log.warning("could not read the inbox queue's RedrivePolicy yet: %s", error)

    def _find(self) -> str:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self._inbox_queue_url, AttributeNames=["RedrivePolicy"]
        ).get("Attributes", {})
        if "RedrivePolicy" not in attributes:
            raise ConfigError(
                f"INBOX_URL: queue {self._inbox_queue_url} has no RedrivePolicy; give it a dead-letter queue"
            )
        arn = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
        *_, account, name = arn.split(":")
        return self._sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]

    def url(self) -> str:
        if self._url is None:
            self._url = self._find()
        return self._url

    def bury(self, body: str, record_id: str, error: str, attempts: int) -> None:
        self._sqs.send_message(
            QueueUrl=self.url(), MessageBody=body,
            MessageAttributes={
                "last_error": {"DataType": "String", "StringValue": error[:MAX_ERROR_CHARS] or "-"},
                "record_id": {"DataType": "String", "StringValue": record_id},
                "attempts": {"DataType": "Number", "StringValue": str(attempts)},
            },
        )

    def letters(self, limit: int) -> list[tuple[CallbackRecord, int, str]]:
        """Up to `limit` dead letters, newest first, read by receiving them (hidden for DEAD_LETTER_PEEK_SECONDS)."""
        letters = []
        for message in self._receive(limit):
            attributes = message.get("MessageAttributes", {})
            error = attributes.get("last_error", {}).get("StringValue", "moved by the queue's redrive policy")
            attempts = attributes.get("attempts", {}).get("StringValue") or message["Attributes"].get(
                "ApproximateReceiveCount", "0")
            letters.append((record_of(message["Body"])[0], int(attempts), error))
        return sorted(letters, key=lambda letter: letter[0].received_at, reverse=True)

    def replay(self, ids: list[str] | None, inbox_queue_url: str) -> int:
        """Send dead letters (all, or those of `ids`) back to the inbox queue as new messages; how many."""
        wanted = None if ids is None else set(ids)
        replayed = 0
        dead_url = self.url()
        for message in self._receive(None):
            if wanted is not None and json.loads(message["Body"]).get("id") not in wanted:
                self._sqs.change_message_visibility(
                    QueueUrl=dead_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
                continue
            self._sqs.send_message(QueueUrl=inbox_queue_url, MessageBody=message["Body"])
            self._sqs.delete_message(QueueUrl=dead_url, ReceiptHandle=message["ReceiptHandle"])
            replayed += 1
        return replayed

    def _receive(self, limit: int | None) -> list[dict[str, Any]]:
        """Receive what the dead-letter queue holds (up to `limit`), each message once."""
        found: dict[str, dict[str, Any]] = {}
        while limit is None or len(found) < limit:
            answer = self._sqs.receive_message(
                QueueUrl=self.url(), MaxNumberOfMessages=MAX_RECEIVE,
                VisibilityTimeout=DEAD_LETTER_PEEK_SECONDS, MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=0,
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            for message in messages:
                found.setdefault(message["MessageId"], message)
        return list(found.values())[:limit]
