"""The worker: claim callbacks, reconcile them with Tencent Cloud, forward events, settle.

Reads top to bottom like the loop it is (SPEC 6, 8):

1. claim a batch of due inbox records under a lease, by priority (first
   calls, look-agains, swept tasks); an expired lease is claimed again, so a
   crashed worker loses nothing;
2. plan the Describe calls: the callbacks of one task share one call, VOD
   file events share one DescribeMediaInfos per 20 files;
3. make the calls in priority order within the pass's budget
   (`receiver.scheduler`) and judge each callback against its answer into a
   verdict: forward, reject with a reason, retry (look again later, or try
   again after an error), bury, or defer (no slot left this pass);
4. forward the events not forwarded before;
5. settle every verdict in one place (`_settlement`).

Each record is judged on its own: an answer or an exception that breaks one
record makes that record retry and, after MAX_ATTEMPTS, a dead letter; the
rest of its batch goes on. Tencent Cloud trouble and refused credentials never
drop an event.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver.batch_sessions import BatchSessionIndex
from receiver.callbacks import RESOLVE_BY_SESSION_ID, RESOLVE_BY_TASK_ID, VOD_FILE_EVENTS, file_ids
from receiver.config import Settings
from receiver.inbox import ClaimedRecord, EventStillInProgress, Inbox, Outcome, Settlement, open_configured_inbox
from receiver.logs import configure_logging
from receiver.ratelimit import RateLimits, worker_limits
from receiver.reconcile import (
    FINAL_STATUSES,
    UNCONFIRMED,
    UNKNOWN_TASK,
    UNRECONCILABLE,
    DescribeCall,
    Forward,
    LookAgain,
    Reject,
    describe_call,
    judge,
    judge_file_event,
    media_infos_call,
    unreconciled_event,
)
from receiver.scheduler import Deferred, PassBudget, look_again_at
from receiver.sinks import Sink, encode_event, open_sink
from receiver.tencentcloud import Failure, TencentCloud, classify
from schemas.event import NormalizedEventSchema

log = logging.getLogger(__name__)

BATCH_SIZE = 100
LEASE_SECONDS = 120.0
IDLE_POLL_SECONDS = 0.2
LOOK_AGAIN_SECONDS = 1.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 15.0
NO_CREDENTIALS_RETRY_SECONDS = 30.0
MEDIA_INFOS_PER_CALL = 20  # DescribeMediaInfos takes at most 20 FileIds
# Final answers kept in memory; the oldest are forgotten first.
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


# --- verdicts beyond the pure ones of receiver.reconcile (Forward, Reject) ------------------


@dataclass(frozen=True)
class Retry:
    """Look again, or try again after an error, at `at`."""

    error: str
    at: float


@dataclass(frozen=True)
class Bury:
    error: str


@dataclass(frozen=True)
class Defer:
    """Not worked on this pass: back to the inbox as it was."""


Verdict = Forward | Reject | Retry | Bury | Defer
Judged = list[tuple[ClaimedRecord, Verdict]]


@dataclass
class _Unit:
    """Records answered by the same Describe call(s): one task, a set of files, or nothing to call."""

    kind: str  # "task", "files", "session", "unreconcilable"
    items: list[ClaimedRecord] = field(default_factory=list)
    call: DescribeCall | None = None

    @property
    def order(self) -> tuple[int, str]:
        return min((item.priority, item.record.id) for item in self.items)


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
        self._final_answers: dict[str, dict[str, Any]] = _Bounded()
        self._batch_sessions = BatchSessionIndex(settings.sweep_lookback_seconds, clock)
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
        if not claimed:
            return 0
        budget = PassBudget(self.tencentcloud.call) if self.tencentcloud is not None else None
        judged: Judged = []
        for unit in sorted(self._plan(claimed), key=lambda u: u.order):
            judged.extend(self._work(unit, budget))
        judged = self._forward(judged)
        now = self.clock()
        self.inbox.settle(self.owner, [self._settlement(item, verdict, now) for item, verdict in judged], now)
        return len(claimed)

    # --- planning ---------------------------------------------------------------------

    def _plan(self, claimed: list[ClaimedRecord]) -> Iterator[_Unit]:
        tasks: dict[str, _Unit] = {}
        files: list[ClaimedRecord] = []
        for item in claimed:
            record = item.record
            if record.resolve_by == RESOLVE_BY_TASK_ID and record.task_id:
                call = describe_call(record, self.settings.vod_subapp_id)
                assert call is not None
                key = json.dumps([call.service, call.action, call.params], sort_keys=True)
                tasks.setdefault(key, _Unit("task", call=call)).items.append(item)
            elif record.resolve_by == RESOLVE_BY_SESSION_ID:
                yield _Unit("session", [item])
            elif record.source == "vod" and record.event_type in VOD_FILE_EVENTS:
                files.append(item)
            else:
                yield _Unit("unreconcilable", [item])
        yield from tasks.values()
        yield from _file_units(files)

    # --- working: calls and verdicts, one unit at a time ------------------------------

    def _work(self, unit: _Unit, budget: PassBudget | None) -> Judged:
        """The verdicts of one unit; whatever goes wrong stays with its records."""
        if budget is None and unit.kind != "unreconcilable":
            now = self.clock()
            return [(item, Retry("no Tencent Cloud credentials", now + NO_CREDENTIALS_RETRY_SECONDS))
                    for item in unit.items]
        try:
            if unit.kind == "unreconcilable":
                return [(item, self._unreconcilable(item)) for item in unit.items]
            assert budget is not None
            if unit.kind == "files":
                return self._describe_files(unit.items, budget)
            if unit.kind == "session":
                return self._describe_batch_by_session(unit.items[0], budget)
            assert unit.call is not None
            return self._describe_task(unit.call, unit.items, budget)
        except Deferred:
            return [(item, Defer()) for item in unit.items]
        except TencentCloudSDKException as error:
            failure = classify(error)
            if failure is Failure.OTHER and len(unit.items) > 1 and unit.kind == "files":
                # One file id the API refuses must not hold up the others: ask for each record alone.
                return [judged for item in unit.items for judged in self._work(_Unit("files", [item]), budget)]
            if failure is Failure.CREDENTIALS:
                self._report("tencentcloud", "failing", _describe_error(error))
            return [(item, self._failed(item, failure, error)) for item in unit.items]
        except Exception as error:  # noqa: BLE001 - an answer this code cannot handle: these records alone
            log.exception("reconciling %d record(s) failed", len(unit.items))
            return [(item, self._failed(item, Failure.OTHER, error)) for item in unit.items]

    def _describe_task(self, call: DescribeCall, items: list[ClaimedRecord], budget: PassBudget) -> Judged:
        """One Describe call for every pending callback of one task."""
        key = json.dumps([call.service, call.action, call.params], sort_keys=True)
        answer = self._final_answers.get(key)
        if answer is None:
            answer = budget.call(call)
            self._report("tencentcloud", "ok", "")
            if answer.get("Status") in FINAL_STATUSES[call.service]:
                # A final state does not change: later callbacks of the task need no new call.
                self._final_answers[key] = answer
        now = self.clock()
        patience = self.settings.consistency_patience_seconds
        judged: Judged = []
        for item in items:
            try:
                verdict = judge(item.record, call, answer, self.settings.receiver_public_url, now,
                                patience_left=now - item.waiting_since < patience)
            except Exception as error:  # noqa: BLE001 - an answer this record cannot be judged by
                log.exception("judging callback %s failed", item.record.id)
                judged.append((item, self._failed(item, Failure.OTHER, error)))
                continue
            judged.append((item, self._looked(item, verdict, now, patience)))
        return judged

    def _describe_batch_by_session(self, item: ClaimedRecord, budget: PassBudget) -> Judged:
        """A BatchTask callback without task id: its task found through its SessionId (SPEC 6)."""
        record = item.record
        if not record.session_id:
            return [(item, Reject(UNKNOWN_TASK, "a BatchTask callback with neither task id nor SessionId"))]
        task_id = self._batch_sessions.find(record.session_id, budget.call)
        if task_id is None:
            return [(item, self._failed(item, Failure.NOT_FOUND, None))]
        return self._describe_task(DescribeCall("mps", "DescribeBatchTaskDetail", {"TaskId": task_id}), [item],
                                   budget)

    def _describe_files(self, items: list[ClaimedRecord], budget: PassBudget) -> Judged:
        """VOD NewFileUpload / FileDeleted: one DescribeMediaInfos per 20 files of the unit.

        VOD deletes one file per DeleteMedia: an event naming more than 20 is
        refused unasked, so that a forged one cannot spend hundreds of calls.
        """
        wanted = {item.record.id: file_ids(item.record) for item in items}
        judged: Judged = []
        asked = []
        for item in items:
            if len(wanted[item.record.id]) > MEDIA_INFOS_PER_CALL:
                judged.append((item, Reject(UNCONFIRMED, f"the event names more than {MEDIA_INFOS_PER_CALL} files")))
            else:
                asked.append(item)
        items = asked
        unique = list(dict.fromkeys(file_id for item in items for file_id in wanted[item.record.id]))
        found: dict[str, dict[str, Any]] = {}
        missing: set[str] = set()
        for start in range(0, len(unique), MEDIA_INFOS_PER_CALL):
            answer = budget.call(media_infos_call(unique[start:start + MEDIA_INFOS_PER_CALL],
                                                  self.settings.vod_subapp_id))
            for info in answer.get("MediaInfoSet") or []:
                if isinstance(info, dict) and isinstance(info.get("FileId"), str):
                    found[info["FileId"]] = info
            missing.update(i for i in answer.get("NotExistFileIdSet") or [] if isinstance(i, str))
        self._report("tencentcloud", "ok", "")
        now = self.clock()
        patience = self.settings.not_found_patience_seconds
        for item in items:
            verdict = judge_file_event(item.record, wanted[item.record.id], found, missing, now,
                                       patience_left=now - item.waiting_since < patience)
            judged.append((item, self._looked(item, verdict, now, patience)))
        return judged

    def _unreconcilable(self, item: ClaimedRecord) -> Verdict:
        """A VOD event with neither task nor file: forwarded on its signature only if the operator asks."""
        if self.settings.vod_forward_unreconciled:
            return Forward(unreconciled_event(item.record, json.loads(item.record.body)))
        return Reject(UNRECONCILABLE, f"a {item.record.event_type!r} event names no task or file to describe")

    def _looked(self, item: ClaimedRecord, verdict: Any, now: float, patience: float) -> Verdict:
        """A lagging answer becomes a look-again, backing off within the record's patience."""
        if isinstance(verdict, LookAgain):
            return Retry(verdict.detail, look_again_at(now, item.attempts, item.waiting_since + patience))
        return verdict

    def _failed(self, item: ClaimedRecord, failure: Failure, error: BaseException | None) -> Verdict:
        now, message = self.clock(), _describe_error(error)
        if failure is Failure.NOT_FOUND:
            # A task created a moment ago may not be visible to Describe yet.
            patience = self.settings.not_found_patience_seconds
            if now - item.waiting_since < patience:
                return Retry(message, look_again_at(now, item.attempts, item.waiting_since + patience))
            return Reject(UNKNOWN_TASK, message)
        if failure is Failure.OTHER and item.attempts >= self.settings.max_attempts:
            log.error("callback %s is a dead letter after %d attempts: %s", item.record.id, item.attempts, message)
            return Bury(message)
        return Retry(message, now + backoff(item.attempts))

    # --- forwarding -------------------------------------------------------------------

    def _forward(self, judged: Judged) -> Judged:
        """Send each event once per deployment; what the sink took stays Forward, the rest becomes a retry."""
        outgoing: Judged = []
        result: Judged = []
        for item, verdict in judged:
            if not isinstance(verdict, Forward):
                result.append((item, verdict))
                continue
            try:  # an event that cannot be forwarded fails its own record, not the batch
                self._schema.load(verdict.event)
                encode_event(verdict.event)
            except Exception as error:  # noqa: BLE001 - invalid or unencodable: retried, then buried
                log.error("the event of callback %s cannot be forwarded: %s", item.record.id, error)
                result.append((item, self._failed(item, Failure.OTHER, error)))
                continue
            outgoing.append((item, verdict))
        if not outgoing:
            return result
        now = self.clock()
        ids = list({verdict.event["event_id"] for _, verdict in outgoing})
        try:
            seen = self.inbox.already_forwarded(ids)
        except EventStillInProgress as error:
            # Another worker is sending one of these right now: look again once it is done.
            return result + [(item, Retry(str(error), now + LOOK_AGAIN_SECONDS)) for item, _ in outgoing]
        fresh: dict[str, dict[str, Any]] = {}
        for _, verdict in outgoing:
            if verdict.event["event_id"] not in seen:
                fresh.setdefault(verdict.event["event_id"], verdict.event)
        try:
            self.sink.send(list(fresh.values()))
        except Exception as error:  # noqa: BLE001 - any sink failure keeps the events it did not take
            self._report("sink", "failing", type(error).__name__)
            delivered = sorted(set(fresh) & set(getattr(error, "delivered", ())))
            self.inbox.mark_forwarded(delivered, now)
            sent = seen | set(delivered)
            return result + [
                (item, verdict if verdict.event["event_id"] in sent else self._failed(item, Failure.OTHER, error))
                for item, verdict in outgoing
            ]
        self.inbox.mark_forwarded(list(fresh), now)
        self._report("sink", "ok", "")
        if fresh:
            log.info("forwarded %d event(s) for %d callback(s)", len(fresh), len(outgoing))
        return result + outgoing

    # --- settling: every verdict becomes an inbox outcome here --------------------------

    def _settlement(self, item: ClaimedRecord, verdict: Verdict, now: float) -> Settlement:
        record_id = item.record.id
        if isinstance(verdict, Forward):
            return Settlement(record_id, Outcome.DONE if verdict.confirmed else Outcome.UNCONFIRMED)
        if isinstance(verdict, Reject):
            log.warning("rejected callback %s (%s): %s", record_id, verdict.reason, verdict.detail)
            return Settlement(record_id, Outcome.REJECTED, verdict.reason)
        if isinstance(verdict, Retry):
            return Settlement(record_id, Outcome.RETRY, verdict.error, max(verdict.at, now))
        if isinstance(verdict, Bury):
            return Settlement(record_id, Outcome.DEAD, verdict.error)
        return Settlement(record_id, Outcome.DEFERRED)

    def _report(self, component: str, status: str, detail: str) -> None:
        """Tell every web process's /readyz, once per change."""
        if self._health.get(component) == status:
            return
        self._health[component] = status
        try:
            self.inbox.set_health(component, status, detail, self.clock())
        except Exception:  # noqa: BLE001 - health is advisory; never fail a pass for it
            log.warning("could not record %s health", component)


def _file_units(items: list[ClaimedRecord]) -> Iterator[_Unit]:
    """File events packed, in order, into units of at most 20 distinct files (one call each)."""
    unit, files = _Unit("files"), set()
    for item in items:
        ids = set(file_ids(item.record))
        if unit.items and len(files | ids) > MEDIA_INFOS_PER_CALL:
            yield unit
            unit, files = _Unit("files"), set()
        unit.items.append(item)
        files |= ids
    if unit.items:
        yield unit


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
