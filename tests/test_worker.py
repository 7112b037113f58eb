"""The worker's settling rules, in process, against a real SQLite inbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from receiver.config import load_settings
from receiver.inbox.sqlite import SqliteInbox
from receiver.records import extract_record
from receiver.sinks.sqs import SqsSinkError
from receiver.worker import Worker, backoff
from schemas.callbacks import VodEventSchema
from tests.servers import ROOT, query_inbox

T0 = 1_800_000_000.0


class FlakySink:
    """Takes some events, refuses the others, the way SqsSink reports a partial failure."""

    def __init__(self, refuse: set[str]):
        self.refuse = refuse
        self.sent: list[dict] = []

    def send(self, events: list[dict]) -> None:
        taken = [e for e in events if e["detail"]["RestoreMediaCompleteEvent"]["FileId"] not in self.refuse]
        self.sent.extend(taken)
        if len(taken) < len(events):
            raise SqsSinkError("refused", {"x": "InvalidParameterValue"}, [e["event_id"] for e in taken])

    def recover_forwarded_ids(self) -> set[str]:
        return set()


def file_event(inbox: SqliteInbox, file_id: str) -> str:
    """A VOD event with no task or file to describe: forwarded unreconciled when the operator asks."""
    body = {"EventType": "RestoreMediaComplete", "RestoreMediaCompleteEvent": {"FileId": file_id}}
    record = extract_record("vod", VodEventSchema().load(body), json.dumps(body).encode(), T0)
    return inbox.accept(record).id


def test_a_partly_sent_batch_settles_what_the_sink_took(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    ids = {file_id: file_event(inbox, file_id) for file_id in ("f1", "f2", "f3")}
    sink = FlakySink(refuse={"f2"})
    settings = load_settings({"MAX_ATTEMPTS": "2", "VOD_FORWARD_UNRECONCILED": "true"})
    worker = Worker(settings, inbox, sink, tencentcloud=None, clock=lambda: T0)
    assert worker.run_once() == 3
    assert inbox.counts_by_state() == {"done": 2, "pending": 1}
    # the refused one comes back alone, and after MAX_ATTEMPTS is a dead letter with its error
    worker.clock = lambda: T0 + 60
    worker.run_once()
    assert inbox.counts_by_state() == {"done": 2, "dead": 1}
    assert sorted(e["detail"]["RestoreMediaCompleteEvent"]["FileId"] for e in sink.sent) == ["f1", "f3"]
    [dead] = query_inbox(tmp_path / "inbox.db", state="dead")
    assert dead["id"] == ids["f2"] and "refused" in dead["last_error"]


def test_backoff_grows_with_jitter_and_stays_capped():
    assert 0.5 <= backoff(1, rng=lambda: 0.0) <= 1.0
    assert backoff(3, rng=lambda: 1.0) == 4.0
    assert backoff(50, rng=lambda: 1.0) == 15.0


def test_dead_letters_are_listed_and_replayed_from_the_command_line(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    record_id = file_event(inbox, "f9")
    inbox.claim("w", 10, 30, now=T0)
    inbox.bury("w", record_id, "InvalidParameterValue: refused", now=T0)
    env = {**os.environ, "INBOX_URL": f"sqlite:///{tmp_path}/inbox.db"}
    listed = subprocess.run([sys.executable, "-m", "receiver.deadletters", "list"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and record_id in listed.stdout and "refused" in listed.stdout
    replayed = subprocess.run([sys.executable, "-m", "receiver.deadletters", "replay", record_id], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0 and "replayed 1" in replayed.stdout
    assert inbox.counts_by_state() == {"pending": 1}
    [claimed] = inbox.claim("w", 10, 30, now=time.time())
    assert claimed.attempts == 1
