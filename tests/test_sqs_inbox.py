"""The SQS inbox and the DynamoDB idempotency table (SPEC 8), against moto_server over real HTTP.

Two `SqsInbox` objects play two hosts: they share nothing but the queue and
the table, as web instances and workers on different machines do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from receiver.config import ConfigError, load_settings
from receiver.idempotency import CLAIMED, IdempotencyStore
from receiver.inbox import InboxUnavailable, Outcome, Settlement, open_inbox, sqs_dead_letters
from receiver.inbox.sqs import SqsInbox
from receiver.records import CallbackRecord, new_record_id
from tests.moto_fixtures import MotoServer, create_inbox_queue, create_table, drain
from tests.servers import ROOT, wait_until

OWNER = "host-a:1"


def record(dedup_key: str | None = None, task_id: str = "2500000000-WorkflowTask-abc") -> CallbackRecord:
    now = time.time()
    return CallbackRecord(
        id=new_record_id(now), dedup_key=dedup_key or uuid.uuid4().hex, source="mps", event_type="WorkflowTask",
        task_id=task_id, resolve_by="task_id", session_id="s-1", session_context="ctx", claimed_status="FINISH",
        body='{"EventType": "WorkflowTask"}', received_at=now,
    )


class Deployment:
    """One queue and one table; `inbox()` opens them as one more host would."""

    def __init__(self, moto: MotoServer):
        name = f"inbox-{uuid.uuid4().hex[:8]}"
        self.moto = moto
        self.queue_url = create_inbox_queue(moto, name)
        self.dead_url = moto.client("sqs").get_queue_url(QueueName=f"{name}-dead")["QueueUrl"]
        self.table = create_table(moto, f"idempotency-{name}")

    def inbox(self) -> SqsInbox:
        return SqsInbox(self.queue_url, IdempotencyStore(self.table))

    def messages(self, expected: int) -> list[dict[str, Any]]:
        return drain(self.moto.client("sqs"), self.queue_url, expected, timeout=10)


@pytest.fixture
def deployment(moto_server: MotoServer) -> Deployment:
    return Deployment(moto_server)


def claim_until(inbox: SqsInbox, count: int, lease: float = 30, timeout: float = 15) -> list:
    """Claim until `count` records came back (polling: messages reappear when their lease runs out)."""
    found: list = []

    def enough() -> bool:
        found.extend(inbox.claim(OWNER, count - len(found), lease, time.time()))
        return len(found) >= count

    wait_until(enough, timeout, f"{count} record(s) to be claimable", interval=0.1)
    return found


# --- configuration ----------------------------------------------------------------------------


def test_open_inbox_builds_the_sqs_inbox_from_the_environment(deployment):
    settings = load_settings({"INBOX_URL": f"sqs+{deployment.queue_url}", "IDEMPOTENCY_TABLE": deployment.table})
    inbox = open_inbox(settings)
    assert isinstance(inbox, SqsInbox) and inbox.queue_url == deployment.queue_url
    inbox.check_writable()


def test_a_queue_without_a_dead_letter_queue_is_refused(deployment):
    bare = deployment.moto.create_queue(f"bare-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConfigError, match="INBOX_URL: .*RedrivePolicy"):
        SqsInbox(bare, IdempotencyStore(deployment.table))


def test_a_fifo_inbox_queue_is_refused(deployment):
    with pytest.raises(ConfigError, match="INBOX_URL: .*standard queue"):
        SqsInbox(deployment.queue_url + ".fifo", IdempotencyStore(deployment.table))


def test_an_unreachable_queue_makes_the_inbox_unavailable(deployment):
    inbox = SqsInbox(deployment.queue_url.rsplit("/", 1)[0] + "/no-such-queue", IdempotencyStore(deployment.table))
    with pytest.raises(InboxUnavailable):
        inbox.check_writable()
    first = record()
    with pytest.raises(InboxUnavailable):
        inbox.accept(first)
    # the failed send released its claim: the callback's retry is stored, not called a duplicate
    assert deployment.inbox().accept(replace(first, id=new_record_id())).duplicate is False


# --- accept -------------------------------------------------------------------------------------


def test_accept_is_idempotent_on_the_dedup_key_across_hosts(deployment):
    host_a, host_b = deployment.inbox(), deployment.inbox()
    first = record()
    assert host_a.accept(first).duplicate is False
    again = host_b.accept(replace(first, id=new_record_id()))  # the same callback, retried to another host
    assert (again.id, again.duplicate) == (first.id, True)
    assert host_a.accept(first) == again
    [message] = deployment.messages(1)
    assert json.loads(message["Body"]) == first.__dict__


def test_concurrent_accepts_of_one_callback_send_one_message(deployment):
    hosts = [deployment.inbox(), deployment.inbox()]
    key = uuid.uuid4().hex
    copies = [replace(record(key), id=new_record_id()) for _ in range(24)]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: hosts[i % 2].accept(copies[i]), range(len(copies))))
    assert len({r.id for r in results}) == 1
    assert [r.duplicate for r in results].count(False) == 1
    assert len(deployment.messages(1)) == 1


def test_a_claim_left_by_a_crashed_web_instance_runs_out_and_the_retry_is_stored(deployment):
    callback = record()
    # a web instance claimed the callback and died before sending it to the queue
    crashed = IdempotencyStore(deployment.table)
    claim = crashed.claim(f"callback#{callback.dedup_key}", 1.0, 3600, time.time(), {"record_id": "lost"})
    assert claim.outcome == CLAIMED
    # Tencent Cloud's retry waits for the claim, which runs out: it is stored, not answered "duplicate"
    retried = deployment.inbox().accept(callback)
    assert (retried.id, retried.duplicate) == (callback.id, False)
    assert len(deployment.messages(1)) == 1


# --- claim and settle -------------------------------------------------------------------------


def test_a_lease_hides_records_until_it_runs_out(deployment):
    host_a, host_b = deployment.inbox(), deployment.inbox()
    stored = {host_a.accept(record()).id for _ in range(3)}
    claimed = claim_until(host_a, 3, lease=3)
    assert {c.record.id for c in claimed} == stored and {c.attempts for c in claimed} == {1}
    started = time.monotonic()
    # while leased, nobody else gets them; when the lease runs out, another host does
    assert host_b.claim(OWNER, 10, 3, time.time()) == []
    again = claim_until(host_b, 3, lease=30)
    assert time.monotonic() - started >= 0.5
    assert {c.record.id for c in again} == stored and {c.attempts for c in again} == {2}
    assert host_b.counts_by_state()["leased"] == 3
    host_b.mark_done(OWNER, sorted(stored), time.time())
    wait_until(lambda: host_b.counts_by_state() == {"pending": 0, "leased": 0, "dead": 0, "rejected": 0}, 10,
               "the queue to be empty")
    assert host_a.lease_owners() == set() and host_a.release_leases(OWNER, time.time()) == 0


def test_retry_later_delays_the_record(deployment):
    inbox = deployment.inbox()
    stored = inbox.accept(record()).id
    [claimed] = claim_until(inbox, 1)
    started = time.time()
    inbox.retry_later(OWNER, stored, "RequestLimitExceeded", started + 3, started)
    assert inbox.claim(OWNER, 10, 30, time.time()) == []
    [again] = claim_until(inbox, 1, timeout=20)
    assert again.record.id == stored and again.attempts == 2
    assert time.time() - started >= 2.5


def test_bury_moves_the_record_to_the_dead_letter_queue_with_its_error(deployment):
    inbox = deployment.inbox()
    callback = record()
    inbox.accept(callback)
    claim_until(inbox, 1)
    inbox.bury(OWNER, callback.id, "SqsSinkError: the sink is down", time.time())
    [dead] = drain(deployment.moto.client("sqs"), deployment.dead_url, 1, timeout=10)
    assert json.loads(dead["Body"])["id"] == callback.id
    assert dead["MessageAttributes"]["last_error"]["StringValue"] == "SqsSinkError: the sink is down"
    wait_until(lambda: inbox.counts_by_state()["pending"] + inbox.counts_by_state()["leased"] == 0, 10,
               "the record to leave the inbox queue")


def test_dead_letters_are_listed_and_replayed_from_the_dead_letter_queue(deployment, monkeypatch):
    monkeypatch.setattr(sqs_dead_letters, "DEAD_LETTER_PEEK_SECONDS", 2)
    inbox = deployment.inbox()
    callbacks = [record() for _ in range(3)]
    for callback in callbacks:
        inbox.accept(callback)
    claim_until(inbox, 3)
    for callback in callbacks:
        inbox.bury(OWNER, callback.id, f"gave up on {callback.id}", time.time())
    letters = deployment.inbox().dead_letters(10)
    assert sorted((r.id, n, e) for r, n, e in letters) == sorted((c.id, 1, f"gave up on {c.id}") for c in callbacks)
    # listing hid them for a while; replay finds the chosen one once it shows again
    replayed = deployment.inbox()
    wait_until(lambda: replayed.replay_dead([callbacks[0].id], time.time()) == 1, 15, "the replay", interval=0.5)
    [again] = claim_until(inbox, 1)
    assert again.record == callbacks[0] and again.attempts == 1


def test_reject_counts_each_record_once_by_reason(deployment):
    inbox = deployment.inbox()
    callbacks = [record() for _ in range(3)]
    for callback in callbacks:
        inbox.accept(callback)
    claim_until(inbox, 3)
    inbox.reject(OWNER, callbacks[0].id, "unknown_task", time.time())
    inbox.reject(OWNER, callbacks[1].id, "unknown_task", time.time())
    inbox.reject(OWNER, callbacks[2].id, "session_mismatch", time.time())
    inbox.reject(OWNER, callbacks[2].id, "session_mismatch", time.time())  # settled already: nothing
    assert deployment.inbox().rejections_by_reason() == {"unknown_task": 2, "session_mismatch": 1}
    assert inbox.counts_by_state()["rejected"] == 3


# --- dedup that never costs a genuine event (SPEC 6, issue 9 finding 3) -----------------------------


def test_a_rejected_record_lets_go_of_its_key_across_hosts(deployment):
    host_a, host_b = deployment.inbox(), deployment.inbox()
    forged = record()
    host_a.accept(forged)
    claim_until(host_a, 1)
    host_a.reject(OWNER, forged.id, "session_mismatch", time.time())
    genuine = host_b.accept(replace(forged, id=new_record_id()))
    assert genuine.duplicate is False and genuine.id != forged.id
    assert host_a.accept(replace(forged, id=new_record_id())).duplicate  # the new record holds the key now


def test_an_unconfirmed_record_lets_go_of_its_key(deployment):
    inbox = deployment.inbox()
    first = record()
    inbox.accept(first)
    claim_until(inbox, 1)
    inbox.settle(OWNER, [Settlement(first.id, Outcome.UNCONFIRMED)], time.time())
    assert inbox.accept(replace(first, id=new_record_id())).duplicate is False


def test_copies_answered_duplicate_while_pending_queue_the_record_again_with_their_patience(deployment):
    host_a, host_b = deployment.inbox(), deployment.inbox()
    first = record()
    host_a.accept(first)
    [claimed] = claim_until(host_a, 1)
    copy = replace(first, id=new_record_id(), received_at=first.received_at + 40)
    assert host_b.accept(copy).duplicate  # the genuine copy, while the first is being reconciled
    host_a.reject(OWNER, first.id, "unknown_task", time.time())
    [again] = claim_until(host_b, 1)
    assert again.record == first and again.waiting_since == copy.received_at and again.priority == 0
    assert deployment.inbox().rejections_by_reason() == {}  # not rejected: reconciled once more
    host_b.reject(OWNER, first.id, "unknown_task", time.time())
    assert deployment.inbox().rejections_by_reason() == {"unknown_task": 1}
    assert host_a.accept(replace(first, id=new_record_id())).duplicate is False


def test_a_deferred_record_comes_back_at_once(deployment):
    inbox = deployment.inbox()
    callback = record()
    inbox.accept(callback)
    claim_until(inbox, 1, lease=60)
    inbox.settle(OWNER, [Settlement(callback.id, Outcome.DEFERRED)], time.time())
    [again] = claim_until(inbox, 1, timeout=5)
    assert again.record.id == callback.id


class RejectionsFail(IdempotencyStore):
    """The table refuses to store a rejection, as DynamoDB does in an outage (one edge, faulted on purpose)."""

    def put_if_absent(self, key: str, data: Any, ttl_seconds: float, now: float) -> bool:
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, "PutItem")


def test_a_record_that_cannot_be_settled_does_not_keep_its_batch_mates_from_being_settled(deployment):
    inbox = SqsInbox(deployment.queue_url, RejectionsFail(deployment.table))
    stuck, done, deferred = record(), record(), record()
    for callback in (stuck, done, deferred):
        inbox.accept(callback)
    claim_until(inbox, 3, lease=60)
    inbox.settle(OWNER, [Settlement(stuck.id, Outcome.REJECTED, "unknown_task"), Settlement(done.id, Outcome.DONE),
                         Settlement(deferred.id, Outcome.DEFERRED)], time.time())
    [again] = claim_until(deployment.inbox(), 1, timeout=5)
    assert again.record.id == deferred.id
    # the one that failed keeps its lease (and comes back when it runs out); the done one is gone
    assert deployment.inbox().counts_by_state() == {"pending": 0, "leased": 2, "dead": 0, "rejected": 0}


class SettleDuringExtension:
    """The SQS client, with a settle run on another thread while a lease extension is on its way to SQS: the
    worker's forwarding thread settles while its loop extends the leases of the records in hand."""

    def __init__(self, sqs: Any):
        self._sqs = sqs
        self.settle: Any = None
        self.settled_during_the_call = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def change_message_visibility_batch(self, **request: Any) -> Any:
        if self.settle is not None:
            settling = threading.Thread(target=self.settle)
            settling.start()
            settling.join(2)  # unfixed, the settle is done by now; fixed, it waits for this call
            self.settled_during_the_call = not settling.is_alive()
        return self._sqs.change_message_visibility_batch(**request)


def test_a_lease_extension_racing_a_settle_does_not_hide_the_settled_record_again(deployment):
    """Seen in test_scale_out: a record deferred while its lease was being extended was put back out of sight
    for a whole lease (its receipt handle was still the latest), and no worker held it."""
    sqs = SettleDuringExtension(deployment.moto.client("sqs"))
    inbox = SqsInbox(deployment.queue_url, IdempotencyStore(deployment.table), sqs=sqs)
    callback = record()
    inbox.accept(callback)
    claim_until(inbox, 1, lease=60)
    sqs.settle = lambda: inbox.settle(OWNER, [Settlement(callback.id, Outcome.DEFERRED)], time.time())
    inbox.extend_leases(OWNER, [callback.id], 60, time.time())
    [again] = claim_until(deployment.inbox(), 1, timeout=5)  # deferred: due at once, not in 60 s
    assert again.record.id == callback.id
    assert not sqs.settled_during_the_call  # the settle waited for the extension's call to SQS


# --- the command line on an SQS deployment ----------------------------------------------------------


def test_inspect_on_an_sqs_inbox_says_what_it_cannot_see_and_lists_the_tasks_dead_letters(deployment):
    inbox = deployment.inbox()
    buried = record(task_id=f"2500000000-WorkflowTask-{uuid.uuid4().hex}")
    inbox.accept(buried)
    claim_until(inbox, 1)
    inbox.bury(OWNER, buried.id, "SqsSinkError: the sink is down", time.time())
    env = {**os.environ, "INBOX_URL": f"sqs+{deployment.queue_url}", "IDEMPOTENCY_TABLE": deployment.table}

    def tc_receiver(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "receiver", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    shown = wait_until(lambda: (out := tc_receiver("inspect", buried.task_id, "--json")).returncode == 0
                       and json.loads(out.stdout)["timeline"] and out, 15, "the dead letter to be listed")
    answer = json.loads(shown.stdout)
    assert [(item["what"], item["record_id"]) for item in answer["timeline"]] == [("dead", buried.id)]
    assert "not kept" in answer["note"]
    refused = tc_receiver("replay", "--reason", "unknown_task")
    assert refused.returncode != 0 and "SQS inbox keeps no rejected records" in refused.stderr
