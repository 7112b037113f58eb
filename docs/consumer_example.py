"""Example consumer of the events the receiver sends to SQS (SINK=sqs).

    pip install boto3 jsonschema
    SQS_QUEUE_URL=https://sqs.../events python docs/consumer_example.py

It long-polls the queue, reads each event whether inline or behind an S3
pointer (events over the queue's size limit), validates it against the
published JSON Schema, hands it to `handle`, and deletes the message only
after `handle` returned: a message whose handling failed comes back after the
visibility timeout (give the queue a redrive policy so that one failing for
good ends in a dead-letter queue).

Delivery is at least once, so `handle` must tolerate a repeated `event_id`
(a resend after a crash, or a standard queue's rare duplicate). Run from the
repository root, or copy receiver/consumer.py and schemas/event-v1.schema.json
next to your code: the helpers need only boto3 and, to validate, jsonschema.

Rights needed: sqs:ReceiveMessage and sqs:DeleteMessage on the queue,
s3:GetObject on SQS_LARGE_PAYLOAD_BUCKET/events/* (and kms:Decrypt if either
is encrypted with a customer key). Do not delete the S3 payloads here: expire
them with a lifecycle rule on the `events/` prefix, longer than the queue's
message retention.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receiver.consumer import read_event, validate_event  # noqa: E402

log = logging.getLogger("consumer")


def handle(event: dict[str, Any]) -> None:
    """Your code. Keyed on event_id, so that doing it twice does no harm."""
    print(event["event_id"], event["source"], event["task_id"], event["status"], event["succeeded"], flush=True)


def consume(queue_url: str, batches: int | None = None) -> None:
    """Receive, read, validate, handle, delete; `batches` bounds the loop (None: forever)."""
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    while batches is None or batches > 0:
        answer = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=20,
            # Attributes allow filtering without parsing; ExtendedPayloadSize marks an S3 pointer.
            MessageAttributeNames=["All"],
        )
        done = []
        for message in answer.get("Messages", []):
            try:
                event = read_event(message, s3)
                validate_event(event)
                handle(event)
            except Exception:  # noqa: BLE001 - an example: leave it on the queue, it comes back later
                log.exception("message %s not handled; it will be redelivered", message["MessageId"])
                continue
            done.append({"Id": str(len(done)), "ReceiptHandle": message["ReceiptHandle"]})
        if done:
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=done)
        if batches is not None:
            batches -= 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    consume(os.environ["SQS_QUEUE_URL"])
