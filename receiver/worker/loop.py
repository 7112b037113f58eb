"""The worker's loop: claim callbacks, reconcile them with Tencent Cloud, forward events, settle.

It reads top to bottom like the loop it is (SPEC 6, 8); each round:

1. **claim** due inbox records under a lease, by priority (first calls,
   look-agains, swept tasks), whenever an action runs out of work, and a few
   every half second so a new callback is never stuck behind records in hand;
2. **plan** them into units, the records one Describe call answers: the
   callbacks of one task share a call, VOD file events share one
   DescribeMediaInfos per 20 files;
3. **start** units on threads while their action's queue at the
   `DescribeScheduler` has room; the scheduler makes the calls by priority,
   at the host's quota, as many at a time as the latency needs;
4. **judge** each answer into a verdict, on the unit's thread
   (`receiver.worker.reconciling.Reconciler`): forward,
   reject with a reason, retry (look again later, or try again after an
   error), bury, or defer (not worked on: the worker is stopping);
5. **forward** the finished units' events in whole batches of 10, on a
   thread of its own while the loop goes on, each event once per deployment
   (the forwarded-events ledger), and **settle** every verdict in one place
   (`receiver.worker.forwarding`);
6. **extend the leases** of every record still in hand (heartbeat), so slow
   work is never claimed twice.

Each record is judged on its own: an answer or an exception that breaks one
record makes that record retry and, after MAX_ATTEMPTS, a dead letter; the
rest goes on. Tencent Cloud trouble and refused credentials never drop an
event. The process around the loop (main, signals, the in-web thread) is in
`receiver.worker.process`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from receiver.config import Settings
from receiver.health import HealthBoard, HealthReporter
from receiver.inbox import ClaimedRecord, Inbox
from receiver.ledger import ForwardedLedger
from receiver.ratelimit import HostQuota
from receiver.scheduler import host_scheduler
from receiver.sinks import Sink
from receiver.stores import health_board_beside, ledger_beside, timeline_beside
from receiver.tencentcloud import Failure
from receiver.worker.forwarding import Forwarder, Outbox
from receiver.worker.planning import Planner
from receiver.worker.reconciling import Reconciler
from receiver.worker.units import NO_CALL, Defer, Judged, Unit

log = logging.getLogger(__name__)

CLAIM_SIZE = 100
PEEK_SIZE = 20  # claimed every PEEK_SECONDS however busy, so new first calls join the queues
PEEK_SECONDS = 0.5
IN_HAND_MAX = 2_000  # records one process holds at most
IDLE_POLL_SECONDS = 0.05
BUSY_POLL_SECONDS = 0.025  # a busy loop looks for room to start work at least this often
STOP_SECONDS = 15.0  # calls in flight at a stop get this long to finish


class Worker:
    def __init__(
        self,
        settings: Settings,
        inbox: Inbox,
        sink: Sink,
        tencentcloud: Any | None,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        quotas: dict[tuple[str, str], HostQuota] | None = None,
        ledger: ForwardedLedger | None = None,
        health: HealthBoard | None = None,
    ):
        """`tencentcloud` answers `call(DescribeCall)` (a `receiver.tencentcloud.TencentCloud`), None without keys.

        The ledger and the health board are those beside the inbox unless given.
        """
        self.settings = settings
        self.inbox = inbox
        self.ledger = ledger or ledger_beside(inbox)
        self.health = health or health_board_beside(inbox)
        self.sink = sink
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        self.lease_seconds = settings.worker_lease_seconds
        self.stopping = threading.Event()
        self.scheduler = host_scheduler(settings, tencentcloud, quotas)
        self._thread_count = self.scheduler.threads_needed if self.scheduler else 1
        self._threads = ThreadPoolExecutor(self._thread_count, thread_name_prefix="reconcile")
        self._report = HealthReporter(self.health, clock).report  # once per change
        self.reconciler = Reconciler(settings, self.scheduler, clock, self._report)
        self.planner = Planner(settings, self.reconciler.image_tasks)
        # What the loop holds: every record in hand, units not started yet (per action, by priority),
        # task units not started yet by call (a later callback of the task joins its unit), units running,
        # and verdicts waiting to be forwarded and settled.
        self._in_hand: dict[str, ClaimedRecord] = {}
        self._waiting: dict[tuple[str, str], list[tuple[int, str, int, Unit]]] = {}
        self._order = itertools.count()
        self._running: dict[tuple[str, str], int] = {}
        # Units hand their verdicts back through a Queue: made of threading primitives, which gevent patches.
        self._done: queue.Queue[tuple[tuple[str, str], Judged]] = queue.Queue()
        # Finished verdicts wait in the outbox for the forwarding thread, which sends them in batches and
        # settles them while the loop goes on claiming and starting: a slow sink never idles the quota.
        self._outbox = Outbox()
        self.forwarder = Forwarder(inbox, self.ledger, sink, self.owner, self.lease_seconds, clock,
                                   self.reconciler.failed, self._report, timeline_beside(inbox))
        self._forwarding: threading.Thread | None = None
        self._hand_lock = threading.Lock()  # _in_hand: added to by the loop, settled by the forwarder
        self._last_peek = self._next_claim = self._last_heartbeat = 0.0
        # Events the sink took before a crash kept them from being marked: not again.
        self.ledger.record_forwarded(sorted(sink.recover_forwarded_ids()), clock())

    def run_forever(self) -> None:
        self._start_threads()
        self._forwarding = threading.Thread(target=self._forward_until_stopped, name="forwarder", daemon=True)
        self._forwarding.start()
        log.info("worker %s started", self.owner)
        if self.scheduler is None:
            self._report("tencentcloud", "failing", "no TENCENTCLOUD_SECRET_ID / _KEY: callbacks wait in the inbox")
        while not self.stopping.is_set():
            try:
                self.run_round()
            except Exception:  # noqa: BLE001 - the loop outlives one bad round; leases expire
                log.exception("worker round failed; the records it held will be claimed again")
                self.stopping.wait(IDLE_POLL_SECONDS)
        self.stop()
        log.info("worker %s stopped", self.owner)

    def _start_threads(self) -> None:
        """Every thread of the pool, before any call: started later, hundreds at once would hold the GIL
        just when the first calls leave, and make them reach Tencent late."""
        barrier = threading.Barrier(self._thread_count + 1)
        for _ in range(self._thread_count):
            self._threads.submit(barrier.wait, 10)
        barrier.wait(10)

    def run_round(self) -> None:
        """Claim → plan → start → (units judge on their threads) → hand over to forwarding → extend leases."""
        now = time.monotonic()
        self._claim(now)
        self._start_units()
        self._collect(BUSY_POLL_SECONDS if self._busy else IDLE_POLL_SECONDS)
        self._outbox.expect(self._running_total + sum(len(waiting) for waiting in self._waiting.values()),
                            idle=not self._busy)
        self._extend_leases(time.monotonic())

    def run_once(self) -> int:
        """Claim one batch and settle every record of it; how many were claimed (for tests and tools)."""
        claimed = self.inbox.claim(self.owner, CLAIM_SIZE, self.lease_seconds, self.clock())
        self._take(claimed)
        self._start_units(ignore_room=True)
        while self._running_total:
            self._collect(1.0)
        self._forward_and_settle(self._outbox.take_all())
        return len(claimed)

    def stop(self) -> None:
        """Finish what is in flight, put back what was not started, forward and settle it all."""
        if self.scheduler is not None:
            self.scheduler.close()  # queued calls are not made: their units come back deferred
        for waiting in self._waiting.values():
            for _, _, _, unit in waiting:
                self._hand_over([(item, Defer()) for item in unit.items])
        self._waiting.clear()
        self.planner.clear()
        deadline = time.monotonic() + STOP_SECONDS
        while self._running_total and time.monotonic() < deadline:
            self._collect(0.1)
        self._outbox.close()
        if self._forwarding is not None:
            self._forwarding.join(STOP_SECONDS)  # it stops once the outbox is empty and the loop stopped
        else:
            self._forward_and_settle(self._outbox.take_all())
        self._threads.shutdown(wait=False, cancel_futures=True)

    @property
    def _busy(self) -> bool:
        return bool(self._running_total or any(self._waiting.values()))

    @property
    def _running_total(self) -> int:
        return sum(self._running.values())

    # --- 1. claiming --------------------------------------------------------------------

    def _claim(self, now: float) -> None:
        """Claim when an action at work has less than a second of work waiting; peek every half second.

        The peek claims the inbox's best records however busy the worker is,
        so a new callback's first call joins its queue ahead of the look-agains
        and swept tasks in hand.
        """
        with self._hand_lock:
            room = IN_HAND_MAX - len(self._in_hand)
        if room > 0 and now >= self._next_claim and self._hungry():
            size = min(CLAIM_SIZE, room)
        elif now - self._last_peek >= PEEK_SECONDS and room > -IN_HAND_MAX // 10:
            size = PEEK_SIZE
        else:
            return
        self._last_peek = now
        # Only an idle worker may wait for the first record: a busy one has verdicts to settle.
        idle = not self._busy
        claimed = self.inbox.claim(self.owner, size, self.lease_seconds, self.clock(), wait=idle)
        # An inbox with fewer due records than asked for is not asked again right away.
        self._next_claim = now if len(claimed) == size else now + IDLE_POLL_SECONDS
        self._take(claimed)

    def _hungry(self) -> bool:
        """Nothing at work, or an action at work has less than a second of its rate waiting."""
        assert self.scheduler is not None or not any(self._waiting.values())
        at_work = {action for action, count in self._running.items() if count}
        at_work.update(action for action, waiting in self._waiting.items() if waiting)
        if not at_work:
            return True
        return any(len(self._waiting.get(action, ())) < self.scheduler.rate(*action) for action in at_work)

    def _take(self, claimed: list[ClaimedRecord]) -> None:
        with self._hand_lock:
            for item in claimed:
                self._in_hand[item.record.id] = item
        for unit in self.planner.plan(claimed):
            if unit.action == NO_CALL or self.scheduler is None:
                self._hand_over(self.reconciler.work(unit))
            else:
                heapq.heappush(self._waiting.setdefault(unit.action, []),
                               (unit.priority, unit.items[0].record.id, next(self._order), unit))

    # --- 3. starting ----------------------------------------------------------------------

    def _start_units(self, ignore_room: bool = False) -> None:
        """Each action's best waiting units go to threads while its queue at the scheduler has room."""
        assert self.scheduler is not None or not any(self._waiting.values())
        for action, waiting in self._waiting.items():
            while waiting and (ignore_room or self._has_room(action)):
                unit = heapq.heappop(waiting)[3]
                if unit.kind == "task" and unit.call is not None:
                    self.planner.started(unit.call)
                self._running[action] = self._running.get(action, 0) + 1
                self._threads.submit(self._run_unit, unit)

    def _has_room(self, action: tuple[str, str]) -> bool:
        assert self.scheduler is not None
        return (self._running.get(action, 0) < self.scheduler.capacity(*action)
                and self._running_total < self._thread_count)

    def _run_unit(self, unit: Unit) -> None:
        try:
            judged = self.reconciler.work(unit)
        except BaseException as error:  # noqa: BLE001 - never lose a unit's records: they retry
            log.exception("a unit of %d record(s) failed", len(unit.items))
            judged = [(item, self.reconciler.failed(item, Failure.OTHER, error)) for item in unit.items]
        self._done.put((unit.action, judged))

    def _collect(self, timeout: float) -> None:
        """Verdicts of the units that finished, waiting up to `timeout` for the first."""
        if not self._running_total:
            if timeout:
                self.stopping.wait(timeout)
            return
        try:
            done = self._done.get(timeout=timeout)
        except queue.Empty:
            return
        while done is not None:
            action, judged = done
            self._running[action] -= 1
            self._hand_over(judged)
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                done = None

    # --- 4 and 5. handing over to forwarding (receiver.worker.forwarding) ---------------

    def _hand_over(self, judged: Judged) -> None:
        self._outbox.put(judged)

    def _forward_until_stopped(self) -> None:
        """The forwarding thread."""
        while (judged := self._outbox.next_batch()) is not None:
            try:
                self._forward_and_settle(judged)
            except Exception:  # noqa: BLE001 - their leases run out and they are claimed again
                log.exception("forwarding and settling %d record(s) failed", len(judged))

    def _forward_and_settle(self, judged: Judged) -> None:
        if not judged:
            return
        try:
            self.forwarder.forward_and_settle(judged)
        finally:
            # Settled, or not: either way no longer held. Records left unsettled by a failure keep their
            # lease until it runs out and are claimed again (what was sent is known forwarded by then).
            with self._hand_lock:
                for item, _ in judged:
                    self._in_hand.pop(item.record.id, None)

    # --- 6. leases ----------------------------------------------------------------------

    def _extend_leases(self, now: float) -> None:
        """Every third of a lease, the records still in hand get a whole lease again."""
        if now - self._last_heartbeat < self.lease_seconds / 3:
            return
        self._last_heartbeat = now
        with self._hand_lock:
            held = list(self._in_hand)
        if held:
            self.inbox.extend_leases(self.owner, held, self.lease_seconds, self.clock())
