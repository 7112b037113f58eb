"""The worker: claim callbacks, reconcile them with Tencent Cloud, forward events, settle.

Reads top to bottom like the loop it is (SPEC 6, 8):

1. claim a batch of due inbox records under a lease (an expired lease is
   claimed again, so a crashed worker loses nothing);
2. group the callbacks of one task, so that they share one Describe call;
3. judge each callback against the authoritative answer: forward, reject
   with a reason, or look again later (the answer lags the callback);
4. forward the events not forwarded before, then mark the records done.

Failures keep records in the inbox with a backoff: Tencent Cloud trouble and
refused credentials never drop an event; a failing sink or an unexplained
error makes it a dead letter after MAX_ATTEMPTS.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import random
import signal
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver.callbacks import RESOLVE_BY_SESSION_ID, RESOLVE_NOTHING
from receiver.config import Settings
from receiver.inbox import ClaimedRecord, EventStillInProgress, Inbox, open_configured_inbox
from receiver.logs import configure_logging
from receiver.ratelimit import RateLimits, worker_limits
from receiver.reconcile import (
    FINAL_STATUSES,
    UNKNOWN_TASK,
    DescribeCall,
    Forward,
    LookAgain,
    Reject,
    describe_call,
    iso,
    judge,
    unreconciled_event,
)
from receiver.sinks import Sink, open_sink
from receiver.tencentcloud import Failure, TencentCloud, classify
from schemas.event import NormalizedEventSchema

log = logging.getLogger(__name__)

BATCH_SIZE = 100
LEASE_SECONDS = 120.0
IDLE_POLL_SECONDS = 0.2
LOOK_AGAIN_SECONDS = 1.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 15.0
DROPPED_UNRECONCILED = "dropped_unreconciled"
# How many MPS DescribeTasks pages a BatchTask without task id may cost.
SESSION_SEARCH_MAX_PAGES = 10
# Final answers and BatchTask sessions kept in memory; the oldest are forgotten first.
MEMORY_ENTRIES = 10_000


def backoff(attempts: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter in its upper half, capped."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return ceiling * (0.5 + rng() / 2)


class _Bounded(OrderedDict):
    """A dict that forgets its oldest entries past MEMORY_ENTRIES, so a long-running worker stays small."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        if len(self) > MEMORY_ENTRIES:
            self.popitem(last=False)


@dataclass
class _Batch:
    """What one pass decided: the events to forward and the records they settle."""

    forward: list[tuple[ClaimedRecord, dict[str, Any]]] = field(default_factory=list)


class Worker:
    def __init__(
        self,
        settings: Settings,
        inbox: Inbox,
        sink: Sink,
        tencentcloud: TencentCloud | None,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.inbox = inbox
        self.sink = sink
        self.tencentcloud = tencentcloud
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        self.stopping = threading.Event()
        self._final_answers: dict[tuple[str, str, str], dict[str, Any]] = _Bounded()
        self._batch_sessions: dict[str, str] = _Bounded()  # BatchTask id -> its SessionId
        self._health: dict[str, str] = {}
        self._schema = NormalizedEventSchema()
        # Events the sink took before a crash kept them from being marked: not again.
        recovered = sink.recover_forwarded_ids()
        if recovered:
            inbox.mark_forwarded(sorted(recovered), clock())

    # --- the loop ---------------------------------------------------------------------

    def release_dead_workers_leases(self) -> None:
        """Leases of this host's worker processes that died (kill -9, OOM) need not run out first."""
        host = socket.gethostname()
        for owner in self.inbox.lease_owners():
            owner_host, _, pid = owner.rpartition(":")
            if owner_host != host or owner == self.owner or not pid.isdigit() or _process_alive(int(pid)):
                continue
            released = self.inbox.release_leases(owner, self.clock())
            log.warning("released %d record(s) leased by %s, which is no longer running", released, owner)

    def run_forever(self) -> None:
        self.release_dead_workers_leases()
        log.info("worker %s started", self.owner)
        if self.tencentcloud is None:
            self._report("tencentcloud", "failing", "no TENCENTCLOUD_SECRET_ID / _KEY: callbacks wait in the inbox")
        while not self.stopping.is_set():
            try:
                handled = self.run_once()
            except Exception:  # noqa: BLE001 - the loop outlives one bad pass; leases expire
                log.exception("worker pass failed; its leases will expire and be claimed again")
                handled = 0
            if handled == 0:
                self.stopping.wait(IDLE_POLL_SECONDS)
        log.info("worker %s stopped", self.owner)

    def run_once(self) -> int:
        """Claim one batch and settle every record of it; return how many were claimed."""
        claimed = self.inbox.claim(self.owner, BATCH_SIZE, LEASE_SECONDS, self.clock())
        batch = _Batch()
        groups: dict[str, tuple[DescribeCall, list[ClaimedRecord]]] = {}
        for item in claimed:
            if item.record.resolve_by == RESOLVE_NOTHING:
                self._unreconciled(item, batch)
                continue
            call = self._describe_call(item)
            if call is not None:
                key = json.dumps([call.service, call.action, call.params], sort_keys=True)
                groups.setdefault(key, (call, []))[1].append(item)
        for call, items in groups.values():
            self._reconcile(call, items, batch)
        self._forward(batch)
        return len(claimed)

    # --- steps ------------------------------------------------------------------------

    def _unreconciled(self, item: ClaimedRecord, batch: _Batch) -> None:
        if self.settings.vod_forward_unreconciled:
            batch.forward.append((item, unreconciled_event(item.record, json.loads(item.record.body))))
        else:
            self.inbox.reject(self.owner, item.record.id, DROPPED_UNRECONCILED, self.clock())

    def _describe_call(self, item: ClaimedRecord) -> DescribeCall | None:
        record = item.record
        if record.resolve_by != RESOLVE_BY_SESSION_ID:
            return describe_call(record, self.settings.vod_subapp_id)
        if not record.session_id:
            self.inbox.reject(self.owner, record.id, UNKNOWN_TASK, self.clock())
            return None
        if self.tencentcloud is None:
            self._wait_for_credentials(item)
            return None
        try:
            task_id = self._find_batch_task(record.session_id, record.received_at)
        except TencentCloudSDKException as error:
            self._after_failure(item, classify(error), error)
            return None
        if task_id is None:
            self._after_failure(item, Failure.NOT_FOUND, None)
            return None
        return DescribeCall("mps", "DescribeBatchTaskDetail", {"TaskId": task_id})

    def _find_batch_task(self, session_id: str, received_at: float) -> str | None:
        """The BatchTask with this SessionId: recent tasks listed, then described (SPEC 6)."""
        assert self.tencentcloud is not None
        for task_id, known_session in self._batch_sessions.items():
            if known_session == session_id:
                return task_id
        window = {
            "StartTime": iso(received_at - self.settings.sweep_lookback_seconds),
            "EndTime": iso(received_at + 60),
        }
        for status in ("FINISH", "PROCESSING", "WAITING"):
            token = None
            for _ in range(SESSION_SEARCH_MAX_PAGES):
                params = {"Status": status, "Limit": 100, **window}
                if token:
                    params["ScrollToken"] = token
                page = self.tencentcloud.call(DescribeCall("mps", "DescribeTasks", params))
                for task in page.get("TaskSet") or []:
                    task_id = task.get("TaskId")
                    if task.get("TaskType") != "BatchTask" or task_id in self._batch_sessions:
                        continue
                    detail = self.tencentcloud.call(
                        DescribeCall("mps", "DescribeBatchTaskDetail", {"TaskId": task_id})
                    )
                    self._batch_sessions[task_id] = detail.get("SessionId") or ""
                    if self._batch_sessions[task_id] == session_id:
                        return task_id
                token = page.get("ScrollToken")
                if not token:
                    break
        return None

    def _reconcile(self, call: DescribeCall, items: list[ClaimedRecord], batch: _Batch) -> None:
        """One Describe call for every pending callback of one task."""
        if self.tencentcloud is None:
            for item in items:
                self._wait_for_credentials(item)
            return
        key = (call.service, call.action, json.dumps(call.params, sort_keys=True))
        answer = self._final_answers.get(key)
        if answer is None:
            try:
                answer = self.tencentcloud.call(call)
            except TencentCloudSDKException as error:
                failure = classify(error)
                for item in items:
                    self._after_failure(item, failure, error)
                return
            self._report("tencentcloud", "ok", "")
            if answer.get("Status") in FINAL_STATUSES[call.service]:
                # A final state does not change: later callbacks of the task need no new call.
                self._final_answers[key] = answer
        now = self.clock()
        for item in items:
            record = item.record
            verdict = judge(
                record, call, answer, self.settings.receiver_public_url, now,
                patience_left=now - record.received_at < self.settings.consistency_patience_seconds,
            )
            if isinstance(verdict, Forward):
                batch.forward.append((item, verdict.event))
            elif isinstance(verdict, Reject):
                log.warning("rejected callback %s (%s): %s", record.id, verdict.reason, verdict.detail)
                self.inbox.reject(self.owner, record.id, verdict.reason, now)
            elif isinstance(verdict, LookAgain):
                self.inbox.retry_later(self.owner, record.id, verdict.detail, now + LOOK_AGAIN_SECONDS, now)

    def _forward(self, batch: _Batch) -> None:
        """Send each event once per deployment, then settle the records behind them."""
        if not batch.forward:
            return
        now = self.clock()
        ids = list({event["event_id"] for _, event in batch.forward})
        try:
            seen = self.inbox.already_forwarded(ids)
        except EventStillInProgress as error:
            # Another worker is sending one of these right now: look again once it is done.
            for item, _ in batch.forward:
                self.inbox.retry_later(self.owner, item.record.id, str(error), now + LOOK_AGAIN_SECONDS, now)
            return
        fresh: dict[str, dict[str, Any]] = {}
        for _, event in batch.forward:
            if event["event_id"] not in seen:
                fresh.setdefault(event["event_id"], event)
        try:
            for event in fresh.values():
                self._schema.load(event)
            self.sink.send(list(fresh.values()))
        except Exception as error:  # noqa: BLE001 - any sink failure, or an invalid event, keeps them
            self._report("sink", "failing", type(error).__name__)
            self._settle_partly_sent(batch, seen | set(getattr(error, "delivered", ())), error)
            return
        self.inbox.mark_forwarded(list(fresh), now)
        self.inbox.mark_done(self.owner, [item.record.id for item, _ in batch.forward], now)
        self._report("sink", "ok", "")
        if fresh:
            log.info("forwarded %d event(s) for %d callback(s)", len(fresh), len(batch.forward))

    def _settle_partly_sent(self, batch: _Batch, sent: set[str], error: BaseException) -> None:
        """After a sink failure: what the sink did take is done; the rest waits in the inbox."""
        now = self.clock()
        delivered = sorted({event["event_id"] for _, event in batch.forward} & sent)
        self.inbox.mark_forwarded(delivered, now)
        done = []
        for item, event in batch.forward:
            if event["event_id"] in sent:
                done.append(item.record.id)
            else:
                self._after_failure(item, Failure.OTHER, error)
        self.inbox.mark_done(self.owner, done, now)

    # --- failures ---------------------------------------------------------------------

    def _after_failure(self, item: ClaimedRecord, failure: Failure, error: BaseException | None) -> None:
        record, now = item.record, self.clock()
        message = _describe_error(error)
        if failure is Failure.NOT_FOUND:
            # A task created a moment ago may not be visible to Describe yet.
            if now - record.received_at < self.settings.not_found_patience_seconds:
                self.inbox.retry_later(self.owner, record.id, message, now + LOOK_AGAIN_SECONDS * 2, now)
            else:
                self.inbox.reject(self.owner, record.id, UNKNOWN_TASK, now)
            return
        if failure is Failure.CREDENTIALS:
            self._report("tencentcloud", "failing", message)
        if failure is Failure.OTHER and item.attempts >= self.settings.max_attempts:
            log.error("callback %s is a dead letter after %d attempts: %s", record.id, item.attempts, message)
            self.inbox.bury(self.owner, record.id, message, now)
            return
        self.inbox.retry_later(self.owner, record.id, message, now + backoff(item.attempts), now)

    def _wait_for_credentials(self, item: ClaimedRecord) -> None:
        now = self.clock()
        self.inbox.retry_later(self.owner, item.record.id, "no Tencent Cloud credentials", now + 30, now)

    def _report(self, component: str, status: str, detail: str) -> None:
        """Tell every web process's /readyz, once per change."""
        if self._health.get(component) == status:
            return
        self._health[component] = status
        try:
            self.inbox.set_health(component, status, detail, self.clock())
        except Exception:  # noqa: BLE001 - health is advisory; never fail a pass for it
            log.warning("could not record %s health", component)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe_error(error: BaseException | None) -> str:
    if error is None:
        return "task not found"
    if isinstance(error, TencentCloudSDKException):
        return f"{error.get_code()}: {error.get_message()}"
    return f"{type(error).__name__}: {error}"


# --- processes --------------------------------------------------------------------------


def build_worker(settings: Settings, inbox: Inbox) -> Worker:
    limits = RateLimits(worker_limits(settings.rate_limits), settings.worker_processes)
    tencentcloud = TencentCloud(settings, limits) if settings.has_tencentcloud_credentials else None
    if tencentcloud is None:
        log.warning("no Tencent Cloud credentials: callbacks stay in the inbox until they are set")
    return Worker(settings, inbox, open_sink(settings), tencentcloud)


_in_web: tuple[Worker, threading.Thread] | None = None


def stop_in_web(timeout: float) -> None:
    """gunicorn's worker_exit hook: let the in-web worker finish its batch, so it leaves no lease."""
    if _in_web is not None:
        worker, thread = _in_web
        worker.stopping.set()
        thread.join(timeout)


def start_in_web(settings: Settings, inbox: Inbox) -> threading.Thread | None:
    """WORKER_IN_WEB=true: one web process per host runs the worker as a thread.

    The process that takes the host's worker lock runs it; if it dies, the
    kernel drops the lock and the process gunicorn starts in its place takes over.
    """
    path = settings.sqlite_path
    if path is not None:
        lock_path = f"{path}.worker.lock"
    else:  # an SQS inbox: one worker per host and inbox queue
        digest = hashlib.sha256(settings.inbox_url.encode()).hexdigest()[:16]
        lock_path = os.path.join(tempfile.gettempdir(), f"receiver-worker-{digest}.lock")
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        return None
    global _in_web
    worker = build_worker(settings, inbox)
    thread = threading.Thread(target=worker.run_forever, name="worker-in-web", daemon=True)
    thread.start()
    _in_web = (worker, thread)
    return thread


def main() -> None:
    configure_logging()
    settings, inbox = open_configured_inbox()
    worker = build_worker(settings, inbox)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stopping.set())
    # A stop finishes the batch in hand: its records are settled, none stay leased.
    worker.run_forever()
    inbox.close()


if __name__ == "__main__":
    main()
