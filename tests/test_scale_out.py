"""Scale-out (SPEC 8, issue 5): two web instances and two workers on one SQS inbox and one idempotency table.

Every process is real: two gunicorn instances and two `python -m receiver.worker`
processes, moto_server serving SQS and DynamoDB over HTTP, and the Tencent
Cloud emulator answering the workers' Describe calls. The instances stand
behind one public URL (a load balancer in production), which is the tasks'
NotifyUrl; the test plays Tencent Cloud and sends each callback to both
instances, some twice, and a few tasks a second callback of the same state
change claiming an older status - so duplicates meet at the table (same
callback) and at the workers (same event from two records).
"""

from __future__ import annotations

import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from receiver.idempotency import IdempotencyStore
from receiver.inbox.sqs import SqsInbox
from tests import payloads
from tests.client import post_mps
from tests.conftest import MPS_KEYS, TOKENS, receiver_env
from tests.emulator_fixtures import SECRET_ID, SECRET_KEY, EmulatorProcess
from tests.moto_fixtures import MotoServer, create_inbox_queue, create_table
from tests.pipeline_fixtures import NO_CALLBACK_INPUT, WorkerProcess
from tests.servers import GunicornServer, sink_events, wait_until

TASKS = 500
# Every OLDER_CLAIM_EVERY-th task also gets a callback claiming PROCESSING: a second record whose
# Describe answer (FINISH) makes the same event as the first.
OLDER_CLAIM_EVERY = 4
ACCESS_LINE = re.compile(r'^[0-9.]+ "')  # gunicorn's access log: not what a diagnosis needs
PUBLIC_URL = "http://receiver.example.test"  # the load balancer both instances stand behind


class ScaleOut:
    """The processes of the test and what they share."""

    def __init__(self, tmp_path: Path, moto: MotoServer):
        self.tmp_path = tmp_path
        self.moto = moto
        name = f"scale-{uuid.uuid4().hex[:8]}"
        self.queue_url = create_inbox_queue(moto, name)
        self.table = create_table(moto, f"idempotency-{name}")
        self.emulator = EmulatorProcess(
            tmp_path / "emulator.log", "--processing-after", "0.1", "--finish-after", "0.2",
            "--rate-limit", "mps.ProcessMedia=1000", "--rate-limit", "mps.DescribeTaskDetail=1000",
            "--log-level", "WARNING",
        )
        self.webs: list[GunicornServer] = []
        self.workers: list[WorkerProcess] = []
        self.sinks = [tmp_path / f"events-{i}.jsonl" for i in range(2)]

    def env(self, **extra: str) -> dict[str, str]:
        return receiver_env(
            self.tmp_path, **self.moto.env(),
            INBOX_URL=f"sqs+{self.queue_url}", IDEMPOTENCY_TABLE=self.table, RECEIVER_PUBLIC_URL=PUBLIC_URL,
            TENCENTCLOUD_SECRET_ID=SECRET_ID, TENCENTCLOUD_SECRET_KEY=SECRET_KEY,
            TENCENTCLOUD_MPS_ENDPOINT=self.emulator.url, TENCENTCLOUD_VOD_ENDPOINT=self.emulator.url,
            TENCENTCLOUD_AMS_ENDPOINT=self.emulator.url, NOT_FOUND_PATIENCE_SECONDS="5", **extra,
        )

    def start(self) -> ScaleOut:
        self.emulator.start()
        for i in range(2):
            web = GunicornServer(self.env(), self.tmp_path / f"gunicorn-{i}.log", workers=2, threads=8)
            self.webs.append(web.start())
        for i, sink in enumerate(self.sinks):
            env = {**os.environ, **self.env(LOG_SINK_PATH=str(sink))}
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            self.workers.append(WorkerProcess(env, self.tmp_path / f"worker-{i}.log").start())
        return self

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for web in self.webs:
            web.stop()
        self.emulator.stop()

    def create_task(self) -> tuple[str, str]:
        """A task that notifies the public URL (the emulator never calls it: the test sends the callbacks)."""
        session_id = f"scale-{uuid.uuid4().hex[:16]}"
        notify = {"NotifyType": "URL", "NotifyMode": "Finish", "NotifyKey": MPS_KEYS[0],
                  "NotifyUrl": f"{PUBLIC_URL}/callbacks/mps?token={TOKENS[0]}"}
        params = {"InputInfo": NO_CALLBACK_INPUT, "TaskNotifyConfig": notify,
                  "SessionId": session_id, "SessionContext": "ctx"}
        return self.emulator.mps().call_json("ProcessMedia", params)["Response"]["TaskId"], session_id

    def events(self) -> list[dict[str, Any]]:
        return [event for sink in self.sinks for event in sink_events(sink)]


@pytest.fixture
def scale_out(tmp_path: Path, moto_server: MotoServer) -> Iterator[ScaleOut]:
    system = ScaleOut(tmp_path, moto_server)
    try:
        yield system.start()
    finally:
        system.stop()


def test_two_instances_and_two_workers_forward_each_of_500_events_once(scale_out):
    with ThreadPoolExecutor(8) as pool:
        tasks = list(pool.map(lambda _: scale_out.create_task(), range(TASKS)))
    last_task_id = tasks[-1][0]
    mps = scale_out.emulator.mps()
    wait_until(lambda: mps.call_json("DescribeTaskDetail", {"TaskId": last_task_id})["Response"]["Status"] == "FINISH",
               10, "the tasks to finish")

    # (instance, body): each FINISH callback to both instances, a quarter of them twice to one of them,
    # and every fourth task a callback claiming PROCESSING as well; all shuffled and sent concurrently
    sends: list[tuple[int, dict[str, Any]]] = []
    for n, (task_id, session_id) in enumerate(tasks):
        finish = payloads.mps_workflow(task_id=task_id, status="FINISH", session_id=session_id, session_context="ctx")
        sends += [(0, finish), (1, finish)]
        if n % 4 == 1:
            sends.append((n % 2, finish))
        if n % OLDER_CLAIM_EVERY == 0:
            older = payloads.mps_workflow(task_id=task_id, status="PROCESSING", session_id=session_id,
                                          session_context="ctx")
            sends.append((n % 2, older))
    random.Random(5).shuffle(sends)
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda s: post_mps(scale_out.webs[s[0]].url, s[1]), sends))
    intake_seconds = time.monotonic() - started
    assert [a.status_code for a in answers if a.status_code != 200] == []
    outcomes = Counter(a.json()["status"] for a in answers)
    records = TASKS + len(range(0, TASKS, OLDER_CLAIM_EVERY))
    assert outcomes == {"accepted": records, "duplicate": len(sends) - records}

    wanted = {task_id for task_id, _ in tasks}

    def all_forwarded() -> bool:
        return wanted <= {e["task_id"] for e in scale_out.events()}

    try:
        wait_until(all_forwarded, 90, f"events for {TASKS} tasks", interval=0.5)
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}\n{_diagnosis(scale_out, wanted)}") from None

    def settled() -> bool:
        counts = _inbox_counts(scale_out)
        return counts["pending"] + counts["leased"] == 0

    wait_until(settled, 30, "every record settled", interval=0.5)
    events = scale_out.events()
    ids = Counter(e["event_id"] for e in events)
    assert len(ids) == TASKS and [i for i, n in ids.items() if n > 1] == []
    assert {e["task_id"] for e in events} == wanted and {e["status"] for e in events} == {"FINISH"}
    # both workers took part, and nothing was rejected or buried
    per_worker = [sum(1 for line in sink.read_text().splitlines() if line) for sink in scale_out.sinks]
    assert all(n > 0 for n in per_worker), per_worker
    assert _inbox_counts(scale_out) == {"pending": 0, "leased": 0, "dead": 0, "rejected": 0}
    print(f"\n{len(sends)} callbacks to 2 instances in {intake_seconds:.1f}s; events per worker {per_worker}")


def _inbox_counts(scale_out: ScaleOut) -> dict[str, int]:
    return SqsInbox(scale_out.queue_url, IdempotencyStore(scale_out.table)).counts_by_state()


def _diagnosis(scale_out: ScaleOut, wanted: set[str]) -> str:
    """What a timed-out run leaves to read: what is missing, where the records stand, what the workers said."""
    missing = sorted(wanted - {e["task_id"] for e in scale_out.events()})
    lines = [f"{len(missing)} task(s) without an event, e.g. {missing[:3]}; inbox {_inbox_counts(scale_out)}"]
    for log in [*(w.log_path for w in scale_out.workers), *(w.log_path for w in scale_out.webs)]:
        said = [line for line in log.read_text().splitlines() if " INFO " not in line and not ACCESS_LINE.match(line)]
        lines += [f"--- {log.name}: {len(said)} line(s) above INFO, the last 15:", *said[-15:]]
    return "\n".join(lines)
