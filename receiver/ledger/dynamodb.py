"""The forwarded-events ledger of several hosts: `event#<id>` records of the DynamoDB idempotency table (SPEC 8).

A claim is the table's conditional put of an `in_progress` record
(`receiver.idempotency`); completing turns it `completed` for
`EVENT_TTL_SECONDS`; releasing deletes our own `in_progress` record. One
call per id: DynamoDB has no conditional batch write.
"""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError

from receiver.idempotency import CLAIMED, COMPLETED, IdempotencyStore
from receiver.ledger import ClaimStep, LedgerStore

log = logging.getLogger(__name__)

DAY = 86400.0
EVENT_TTL_SECONDS = 7 * DAY


def event_key(event_id: str) -> str:
    return f"event#{event_id}"


class DynamoLedgerStore(LedgerStore):
    def __init__(self, store: IdempotencyStore):
        self.store = store

    def claim_in_order(self, event_ids: list[str], hold_seconds: float, now: float) -> ClaimStep:
        forwarded: set[str] = set()
        claimed: dict[str, str] = {}
        for event_id in event_ids:
            try:
                claim = self.store.claim(event_key(event_id), hold_seconds, EVENT_TTL_SECONDS, now)
            except Exception:
                self.release(claimed)  # one call per id: the ids before the failure are ours, give them back
                raise
            if claim.outcome == CLAIMED:
                claimed[event_id] = claim.token
            elif claim.outcome == COMPLETED:
                forwarded.add(event_id)
            else:
                return ClaimStep(forwarded, claimed, event_id)
        return ClaimStep(forwarded, claimed, None)

    def complete(self, event_ids: list[str], now: float) -> None:
        self.store.complete_many([event_key(event_id) for event_id in event_ids], EVENT_TTL_SECONDS, now)

    def release(self, held: dict[str, str]) -> None:
        for event_id, token in held.items():
            try:
                self.store.release(event_key(event_id), token)
            except (ClientError, BotoCoreError) as error:
                log.warning("could not release the claim of event %s (it will run out): %s", event_id, error)

    def close(self) -> None:
        pass  # the idempotency store's client needs no closing
