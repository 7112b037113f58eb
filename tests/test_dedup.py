"""Deduplication that never costs a genuine event (SPEC 6, issue 9 finding 3), on the SQLite inbox.

A copy is the same body but its signature fields. A record answers its copies
`duplicate` while it is pending or leased, dead, or done as it claimed; a
record rejected, or done with another status than it claimed, lets go of its
key; copies answered `duplicate` meanwhile make it reconcile once more.
"""

from __future__ import annotations

import json

from receiver import auth
from receiver.inbox import Outcome, Settlement
from receiver.inbox.sqlite import SqliteInbox
from receiver.records import extract_record
from schemas.callbacks import MpsNotificationSchema
from tests import payloads
from tests.conftest import MPS_KEYS
from tests.servers import query_inbox

T0 = 1_800_000_000.0


def callback(received_at: float, **changes: str):
    """A signed MPS callback as the door stores it; each call signs anew, as each delivery does."""
    body = auth.sign_mps_notification(payloads.mps_workflow(**changes), MPS_KEYS[0], now=received_at)
    return extract_record("mps", MpsNotificationSchema().load(body), json.dumps(body).encode(), received_at)


def settle(inbox: SqliteInbox, record_id: str, outcome: Outcome, detail: str = "") -> None:
    [claimed] = inbox.claim("w", 10, 60, now=T0 + 100)
    assert claimed.record.id == record_id
    inbox.settle("w", [Settlement(record_id, outcome, detail)], now=T0 + 100)


def test_retries_with_new_signatures_are_copies_but_a_changed_field_is_not():
    first, retry = callback(T0), callback(T0 + 30)
    assert first.dedup_key == retry.dedup_key
    for change in ({"session_context": "forged"}, {"status": "PROCESSING"}, {"session_id": "other"}):
        assert callback(T0, **change).dedup_key != first.dedup_key, change


def test_a_forged_body_with_another_session_context_cannot_suppress_the_genuine_one(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    forged = inbox.accept(callback(T0, session_context="forged"))
    settle(inbox, forged.id, Outcome.REJECTED, "session_mismatch")
    genuine = inbox.accept(callback(T0 + 5))
    assert not genuine.duplicate and genuine.id != forged.id


def test_a_rejected_record_lets_go_of_its_key_and_the_next_copy_is_reconciled_afresh(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    first = inbox.accept(callback(T0))
    settle(inbox, first.id, Outcome.REJECTED, "unknown_task")
    again = inbox.accept(callback(T0 + 200))
    assert not again.duplicate and again.id != first.id
    assert inbox.accept(callback(T0 + 201)).duplicate  # and that one holds the key now
    states = {row["id"]: row["state"] for row in query_inbox(tmp_path / "inbox.db")}
    assert states == {first.id: "rejected", again.id: "pending"}  # the rejection stays on record


def test_an_unconfirmed_record_lets_go_of_its_key_a_confirmed_one_does_not(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    claimed_finish = inbox.accept(callback(T0))
    settle(inbox, claimed_finish.id, Outcome.UNCONFIRMED)  # Describe said PROCESSING after the patience
    assert not inbox.accept(callback(T0 + 200)).duplicate
    confirmed = inbox.accept(callback(T0, task_id="2500000000-WorkflowTask-other"))
    settle(inbox, confirmed.id, Outcome.DONE)
    assert inbox.accept(callback(T0 + 300, task_id="2500000000-WorkflowTask-other")).duplicate


def test_copies_answered_duplicate_while_pending_reconcile_the_record_again_instead_of_being_lost(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    first = inbox.accept(callback(T0))
    [claimed] = inbox.claim("w", 10, 60, now=T0 + 1)
    copy = inbox.accept(callback(T0 + 40))  # the genuine copy, while the first is being reconciled
    assert copy.duplicate and copy.id == first.id
    inbox.settle("w", [Settlement(first.id, Outcome.REJECTED, "unknown_task")], now=T0 + 50)
    [again] = inbox.claim("w", 10, 60, now=T0 + 50)
    # Back as a first call, its patience counted from the copy, its attempts afresh.
    assert again.record.id == first.id and again.priority == 0 and again.attempts == 1
    assert again.waiting_since == T0 + 40
    inbox.settle("w", [Settlement(first.id, Outcome.REJECTED, "unknown_task")], now=T0 + 80)
    assert inbox.counts_by_state() == {"rejected": 1}  # no copy this time: it lets go for good
    assert not inbox.accept(callback(T0 + 90)).duplicate


def test_claims_come_by_priority_and_a_deferred_record_comes_back_untouched(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    look_again = inbox.accept(callback(T0, task_id="2500000000-WorkflowTask-a")).id
    [claimed] = inbox.claim("w", 10, 60, now=T0)
    inbox.settle("w", [Settlement(look_again, Outcome.RETRY, "not found", T0 + 2)], now=T0)
    first_call = inbox.accept(callback(T0 + 5, task_id="2500000000-WorkflowTask-b")).id
    batch = inbox.claim("w", 10, 60, now=T0 + 10)
    assert [(c.record.id, c.priority) for c in batch] == [(first_call, 0), (look_again, 1)]
    inbox.settle("w", [Settlement(first_call, Outcome.DEFERRED), Settlement(look_again, Outcome.DEFERRED)],
                 now=T0 + 10)
    again = {c.record.id: c for c in inbox.claim("w", 10, 60, now=T0 + 10)}
    assert again[first_call].attempts == 1 and again[look_again].attempts == 2  # a deferral is not an attempt
