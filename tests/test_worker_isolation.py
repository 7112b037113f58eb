"""One record never holds up another (SPEC 6, issue 9 findings 1 and 7), in process.

A real SQLite inbox and a real log sink; Tencent Cloud is the one edge stood in
for, so that answers no emulator would give (NaN, nesting deeper than the
stack, a task notify configuration of the wrong type, an unreadable answer)
can each break one record of a batch.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver import auth
from receiver.config import load_settings
from receiver.inbox.sqlite import SqliteInbox
from receiver.ledger import ForwardedLedger
from receiver.ledger.sqlite import SqliteLedgerStore
from receiver.records import extract_record
from receiver.sinks import LogSink
from receiver.tencentcloud import UNREADABLE_ANSWER, DescribeCall
from receiver.worker import Worker
from schemas.callbacks import MpsNotificationSchema, VodEventSchema
from tests import payloads
from tests.conftest import MPS_KEYS

T0 = 1_800_000_000.0
RECEIVER = "https://hooks.example.com"


def answer(task_id: str, **changes: Any) -> dict[str, Any]:
    return {"TaskType": "WorkflowTask", "Status": "FINISH", "CreateTime": "2026-01-01T00:00:00Z",
            "BeginProcessTime": "2026-01-01T00:00:01Z", "FinishTime": "2026-01-01T00:00:02Z",
            "SessionId": "sess-1", "SessionContext": "ctx-1",
            "TaskNotifyConfig": {"NotifyType": "URL", "NotifyUrl": f"{RECEIVER}/callbacks/mps?token=x"},
            "WorkflowTask": {"TaskId": task_id, "Status": "FINISH", "ErrCode": 0, "Message": ""}, **changes}


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"Nested": value}
    return value


def task(name: str) -> str:
    return f"2500000000-WorkflowTask-{name}"


# Each task id names what its answer does to its record.
BAD_ANSWERS: dict[str, Any] = {
    task("nan"): answer(task("nan"), MetaData={"Duration": math.nan}),
    task("deep"): answer(task("deep"), MetaData=deep(3000)),
    task("string"): answer(task("string"), WorkflowTask="garbage"),
    task("unreadable"): TencentCloudSDKException(UNREADABLE_ANSWER, "RecursionError"),
}
# Not bad: JSON escapes a lone surrogate, and the event goes out.
ANSWERS = {**BAD_ANSWERS, task("surrogate"): answer(task("surrogate"), MetaData={"Title": "\ud800"})}


class TencentCloudEdge:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, call: DescribeCall, deadline: float | None = None) -> dict[str, Any]:
        task_id = call.params["TaskId"]
        self.calls.append(task_id)
        result = ANSWERS.get(task_id, answer(task_id))
        if isinstance(result, Exception):
            raise result
        return result


def no_constants(name: str) -> None:
    raise AssertionError(f"{name} in the sink")


def accept(inbox: SqliteInbox, task_id: str) -> str:
    body = auth.sign_mps_notification(payloads.mps_workflow(task_id=task_id), MPS_KEYS[0], now=T0)
    record = extract_record("mps", MpsNotificationSchema().load(body), json.dumps(body).encode(), T0)
    return inbox.accept(record).id


def test_records_that_break_are_retried_and_buried_alone_while_their_batch_mates_are_forwarded(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    sink_path = tmp_path / "events.jsonl"
    good = [task("good-1"), task("surrogate"), task("good-2")]
    for task_id in [task("good-1"), *BAD_ANSWERS, task("surrogate"), task("good-2")]:
        accept(inbox, task_id)
    settings = load_settings({"RECEIVER_PUBLIC_URL": RECEIVER, "MAX_ATTEMPTS": "2"})
    clock = [T0 + 1]
    worker = Worker(settings, inbox, LogSink(str(sink_path)), TencentCloudEdge(), clock=lambda: clock[0])
    try:
        assert worker.run_once() == 7
        # Standard JSON, line by line: UTF-8, no NaN (the lone surrogate travels as its JSON escape).
        lines = sink_path.read_bytes().decode("utf-8").splitlines()
        events = [json.loads(line, parse_constant=no_constants) for line in lines]
        assert "\\ud800" in "".join(lines)
        assert sorted(e["task_id"] for e in events) == sorted(good)
        assert inbox.counts_by_state() == {"done": 3, "pending": 4}
        clock[0] += 60
        assert worker.run_once() == 4  # MAX_ATTEMPTS=2: the second failure buries each of them
        assert inbox.counts_by_state() == {"done": 3, "dead": 4}
        conn = sqlite3.connect(tmp_path / "inbox.db")
        errors = dict(conn.execute("SELECT task_id, last_error FROM inbox WHERE state = 'dead'").fetchall())
        conn.close()
        assert set(errors) == set(BAD_ANSWERS)
        assert "not standard JSON" in errors[task("nan")] and UNREADABLE_ANSWER in errors[task("unreadable")]
        # A task object that is not an object: its schema says so (schemas/describe.py), not an AttributeError.
        assert "UnreadableAnswer" in errors[task("string")] and "WorkflowTask: Not a valid mapping" in errors[
            task("string")]
    finally:
        inbox.close()


def test_a_file_event_naming_more_files_than_one_call_takes_is_refused_without_a_call(tmp_path):
    """VOD deletes one file per DeleteMedia: a forged FileDeleted of 30,000 ids must not cost 1,500 calls."""
    inbox = SqliteInbox(tmp_path / "inbox.db")
    body = auth.sign_vod_event(payloads.vod_file_deleted(tuple(str(10**18 + i) for i in range(30_000))), "k", now=T0)
    inbox.accept(extract_record("vod", VodEventSchema().load(body), json.dumps(body).encode(), T0))
    edge = TencentCloudEdge()
    worker = Worker(load_settings({}), inbox, LogSink(str(tmp_path / "events.jsonl")), edge, clock=lambda: T0 + 1)
    try:
        assert worker.run_once() == 1
        assert edge.calls == [] and inbox.rejections_by_reason() == {"unconfirmed": 1}
    finally:
        inbox.close()


def test_an_unreadable_answer_is_not_remembered_as_final_so_each_attempt_asks_afresh(tmp_path):
    """A Status of the wrong type is UnreadableAnswer on its record, and the retry asks Tencent Cloud again."""
    inbox = SqliteInbox(tmp_path / "inbox.db")
    unhashable, garbage = task("status-list"), task("final-garbage")
    ANSWERS[unhashable] = answer(unhashable, Status=["FINISH"])
    ANSWERS[garbage] = answer(garbage, WorkflowTask="garbage")  # says FINISH, but does not fit
    try:
        for task_id in (unhashable, garbage, task("good")):
            accept(inbox, task_id)
        edge = TencentCloudEdge()
        clock = [T0 + 1]
        settings = load_settings({"RECEIVER_PUBLIC_URL": RECEIVER, "MAX_ATTEMPTS": "2"})
        worker = Worker(settings, inbox, LogSink(str(tmp_path / "events.jsonl")), edge, clock=lambda: clock[0])
        assert worker.run_once() == 3
        clock[0] += 60
        assert worker.run_once() == 2
        assert inbox.counts_by_state() == {"done": 1, "dead": 2}
        assert edge.calls.count(unhashable) == 2 and edge.calls.count(garbage) == 2
        conn = sqlite3.connect(tmp_path / "inbox.db")
        errors = dict(conn.execute("SELECT task_id, last_error FROM inbox WHERE state = 'dead'").fetchall())
        conn.close()
        assert "UnreadableAnswer" in errors[unhashable] and "Status: Not a valid string" in errors[unhashable]
        assert "UnreadableAnswer" in errors[garbage] and "WorkflowTask: Not a valid mapping" in errors[garbage]
    finally:
        del ANSWERS[unhashable], ANSWERS[garbage]
        inbox.close()


class FailingLedgerStore(SqliteLedgerStore):
    """The SQLite ledger with an outage switched on and off by the test: of its claims, or of its completes."""

    def __init__(self, path: Any, failing: str):
        super().__init__(path)
        self.failing = failing
        self.failures = 0

    def _fail(self, call: str) -> None:
        if self.failing == call:
            self.failures += 1
            raise sqlite3.OperationalError("database is locked")

    def claim_in_order(self, event_ids: list[str], hold_seconds: float, now: float) -> Any:
        self._fail("claim")
        return super().claim_in_order(event_ids, hold_seconds, now)

    def complete(self, event_ids: list[str], now: float) -> None:
        self._fail("complete")
        super().complete(event_ids, now)


def worker_with_ledger(tmp_path: Any, failing: str) -> tuple[Worker, SqliteInbox, FailingLedgerStore, list[float]]:
    inbox = SqliteInbox(tmp_path / "inbox.db")
    for name in ("a", "b", "c"):
        accept(inbox, task(name))
    store = FailingLedgerStore(tmp_path / "inbox.db", failing)
    clock = [T0 + 1]
    settings = load_settings({"RECEIVER_PUBLIC_URL": RECEIVER, "MAX_ATTEMPTS": "2"})
    worker = Worker(settings, inbox, LogSink(str(tmp_path / "events.jsonl")), TencentCloudEdge(),
                    clock=lambda: clock[0], ledger=ForwardedLedger(store))
    return worker, inbox, store, clock


def forwarded_tasks(tmp_path: Any) -> list[str]:
    path = tmp_path / "events.jsonl"
    return sorted(json.loads(line)["task_id"] for line in path.read_text().splitlines()) if path.exists() else []


def test_a_ledger_that_fails_a_claim_sends_nothing_and_its_records_retry_soon_never_buried(tmp_path):
    """Before the fix the store's exception escaped the pass: the records waited out their lease behind it."""
    worker, inbox, store, clock = worker_with_ledger(tmp_path, failing="claim")
    try:
        for _ in range(3):  # more outages than MAX_ATTEMPTS: an outage is never the record's fault
            worker.run_once()
            assert forwarded_tasks(tmp_path) == [] and inbox.counts_by_state() == {"pending": 3}
            clock[0] += 120
        assert store.failures == 3
        store.failing = ""
        worker.run_once()
        assert forwarded_tasks(tmp_path) == [task("a"), task("b"), task("c")]
        assert inbox.counts_by_state() == {"done": 3}
    finally:
        worker.stop()
        inbox.close()


def test_a_ledger_that_fails_to_record_a_send_still_settles_the_records_and_sends_each_event_once(tmp_path):
    """The sink took the events: their records are done, whatever the ledger says (before: they stayed leased
    and were sent again when the lease ran out)."""
    worker, inbox, store, clock = worker_with_ledger(tmp_path, failing="complete")
    try:
        assert worker.run_once() == 3
        assert store.failures == 1
        assert inbox.counts_by_state() == {"done": 3}
        clock[0] += 3600  # past every lease and claim
        store.failing = ""
        worker.run_once()
        assert forwarded_tasks(tmp_path) == [task("a"), task("b"), task("c")]
    finally:
        worker.stop()
        inbox.close()
