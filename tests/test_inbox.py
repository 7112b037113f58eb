"""The SQLite inbox on its own: idempotent accept, leases, settling."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import requests

from receiver.inbox.sqlite import SqliteInbox
from receiver.records import extract_record
from schemas.callbacks import MpsNotificationSchema
from tests import payloads
from tests.client import post_mps
from tests.pipeline_fixtures import WorkerProcess
from tests.servers import inbox_rows, wait_until

T0 = 1_800_000_000.0


def make_record(task_id: str, status: str = "FINISH"):
    body = payloads.mps_workflow(task_id=task_id, status=status)
    return extract_record("mps", MpsNotificationSchema().load(body), json.dumps(body).encode(), T0)


def test_accept_is_idempotent(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    first = inbox.accept(make_record("t1"))
    again = inbox.accept(make_record("t1"))
    assert not first.duplicate and again.duplicate and again.id == first.id
    assert inbox.counts_by_state() == {"pending": 1}


def test_accept_many_answers_each_record_in_order_and_stores_them_once(tmp_path):
    """The sweeper's page in one call: queued together, they share the group commits."""
    inbox = SqliteInbox(tmp_path / "inbox.db")
    earlier = inbox.accept(make_record("m3"))
    records = [make_record(f"m{i}") for i in range(300)] + [make_record("m1")]
    results = inbox.accept_many(records)
    assert len(results) == len(records)
    assert [r.duplicate for r in results] == [i == 3 for i in range(300)] + [True]
    assert results[3].id == earlier.id and results[-1].id == results[1].id
    assert inbox.counts_by_state() == {"pending": 300}
    assert inbox.accept_many([]) == []


def test_expired_lease_is_reclaimed_and_the_old_owner_cannot_settle(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    record_id = inbox.accept(make_record("t1")).id
    [claimed] = inbox.claim("a", 10, lease_seconds=30, now=T0)
    assert claimed.record.id == record_id and claimed.attempts == 1
    assert inbox.claim("b", 10, lease_seconds=30, now=T0 + 10) == []  # still leased to a
    [reclaimed] = inbox.claim("b", 10, lease_seconds=30, now=T0 + 31)  # a crashed: lease ran out
    assert reclaimed.attempts == 2
    inbox.mark_done("a", [record_id], now=T0 + 32)  # too late: b owns it now
    assert inbox.counts_by_state() == {"leased": 1}
    inbox.mark_done("b", [record_id], now=T0 + 33)
    assert inbox.counts_by_state() == {"done": 1}


def test_leases_of_a_dead_owner_are_released_at_once(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    ids = [inbox.accept(make_record(f"t{i}")).id for i in range(3)]
    inbox.claim("host:1", 2, lease_seconds=120, now=T0)
    inbox.claim("host:2", 1, lease_seconds=120, now=T0)
    assert inbox.lease_owners() == {"host:1", "host:2"}
    assert inbox.release_leases("host:1", now=T0 + 1) == 2
    assert inbox.lease_owners() == {"host:2"}
    reclaimed = inbox.claim("host:3", 10, lease_seconds=120, now=T0 + 1)
    assert len(reclaimed) == 2 and {c.record.id for c in reclaimed} < set(ids)


def test_retry_reject_and_bury(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    ids = [inbox.accept(make_record(f"t{i}")).id for i in range(3)]
    inbox.claim("w", 10, 30, now=T0)
    inbox.retry_later("w", ids[0], "InternalError", next_attempt_at=T0 + 60, now=T0)
    inbox.reject("w", ids[1], "session_mismatch", now=T0)
    inbox.bury("w", ids[2], "sink down", now=T0)
    assert inbox.counts_by_state() == {"pending": 1, "rejected": 1, "dead": 1}
    assert inbox.claim("w", 10, 30, now=T0 + 59) == []  # not due yet
    [due] = inbox.claim("w", 10, 30, now=T0 + 60)
    assert due.record.id == ids[0] and due.attempts == 2


def test_worker_without_credentials_keeps_callbacks_and_reports_degraded(start_receiver, tmp_path):
    server = start_receiver()
    for i in range(3):
        assert post_mps(server.url, payloads.mps_workflow(task_id=f"wait-{i}")).status_code == 200
    env = {k: v for k, v in server.env.items() if not k.startswith("TENCENTCLOUD_SECRET")}
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        ready = wait_until(
            lambda: (r := requests.get(server.url + "/readyz", timeout=5)).json()["status"] == "degraded" and r,
            30, "readiness to turn degraded")
    finally:
        try:
            returncode = worker.terminate()
        finally:
            worker.stop()  # killed if SIGTERM did not stop it
    assert ready.status_code == 200 and ready.json()["checks"]["tencentcloud"] == "failing"
    assert returncode == 0, worker.log()
    # Nothing was dropped: every callback waits, none is left leased by the stopped worker.
    assert {r["state"] for r in inbox_rows(server)} == {"pending"}


def _open_inbox(path: str) -> bool:
    SqliteInbox(Path(path))
    return True


def test_processes_starting_together_on_a_new_inbox_all_open_it(tmp_path):
    # gunicorn boots its workers at the same instant: each must open the new file.
    for trial in range(10):
        path = str(tmp_path / f"inbox-{trial}.db")
        with multiprocessing.get_context("fork").Pool(6) as pool:
            assert pool.map(_open_inbox, [path] * 6) == [True] * 6
