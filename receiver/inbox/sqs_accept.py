"""Accepting a callback into the SQS inbox: claim its copy key in the idempotency table, queue it, complete the key.

The callback's `dedup_key` is claimed in the table (`callback#<key>`, in
progress for `ACCEPT_CLAIM_SECONDS`), the record is sent to the queue, and
the claim is completed with the record id. Only then is `200` answered. A
crash between the claim and the send leaves a claim that runs out by itself,
so Tencent Cloud's next retry is stored, not answered "duplicate" forever; a
crash between the send and the completion may make that retry a second
record, which the forwarded-events ledger absorbs. A duplicate arriving while
another instance is still sending waits for it a moment, then answers with
the stored id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from receiver.idempotency import CLAIMED, COMPLETED, IdempotencyStore
from receiver.inbox import AcceptResult, InboxUnavailable
from receiver.inbox.sqs_messages import message_body
from receiver.records import CallbackRecord

log = logging.getLogger(__name__)

DAY = 86400.0
ACCEPT_CLAIM_SECONDS = 30.0  # longer than a SendMessage with botocore's retries takes
ACCEPT_WAIT_SECONDS = 5.0  # how long a duplicate waits for the instance storing the same callback
CALLBACK_TTL_SECONDS = 7 * DAY  # a callback repeated later than this is stored again
POLL_SECONDS = 0.05


def callback_key(record: CallbackRecord) -> str:
    return f"callback#{record.dedup_key}"


def accept_callback(sqs: Any, queue_url: str, store: IdempotencyStore, record: CallbackRecord) -> AcceptResult:
    key = callback_key(record)
    deadline = time.monotonic() + ACCEPT_WAIT_SECONDS
    while True:
        try:
            claim = store.claim(key, ACCEPT_CLAIM_SECONDS, CALLBACK_TTL_SECONDS, time.time(), {"record_id": record.id})
        except (ClientError, BotoCoreError) as error:
            raise InboxUnavailable(f"idempotency table: {error}") from error
        if claim.outcome == COMPLETED:
            # Remembered, so that the record reconciles once more if it lets go of its key;
            # if it let go just now, this copy is a record of its own: claim again.
            try:
                if not store.add_copy(key, record.received_at):
                    continue
            except (ClientError, BotoCoreError) as error:
                raise InboxUnavailable(f"idempotency table: {error}") from error
            return AcceptResult(claim.data["record_id"], duplicate=True)
        if claim.outcome == CLAIMED:
            return _send(sqs, queue_url, store, key, claim.token, record)
        # Another instance is storing this very callback now: its answer is ours.
        if time.monotonic() > deadline:
            raise InboxUnavailable("the same callback is being stored by another instance")
        time.sleep(POLL_SECONDS)


def _send(sqs: Any, queue_url: str, store: IdempotencyStore, key: str, token: str,
          record: CallbackRecord) -> AcceptResult:
    try:
        answer = sqs.send_message(QueueUrl=queue_url, MessageBody=message_body(record))
    except (ClientError, BotoCoreError) as error:
        try:
            store.release(key, token)
        except (ClientError, BotoCoreError) as cleanup:
            log.warning("idempotency clean-up failed (the claim will run out): %s", cleanup)
        raise InboxUnavailable(f"inbox queue: {error}") from error
    try:
        store.complete(key, CALLBACK_TTL_SECONDS, time.time(),
                       {"record_id": record.id, "message_id": answer["MessageId"]})
    except (ClientError, BotoCoreError) as error:
        # Stored all the same: the claim runs out, and a repeat at worst becomes a second record.
        log.warning("callback %s is queued but its idempotency record stays in progress: %s", record.id, error)
    return AcceptResult(record.id, duplicate=False)
