"""The sweeper's loop: every interval, list the window's finished tasks and enqueue those never forwarded."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver import metrics
from receiver.config import Settings
from receiver.events import event_id
from receiver.inbox import Inbox
from receiver.ratelimit import RateLimits, sweeper_limits
from receiver.records import CallbackRecord, swept_record
from receiver.stores import health_board_beside, ledger_beside
from receiver.sweeper.listing import Listed, TaskLister
from receiver.sweeper.report import ProductReport, SweepReport
from receiver.tencentcloud import TencentCloud

# One logger name for every line of the sweeper, whichever of its modules writes it.
log = logging.getLogger("receiver.sweeper")


class Sweeper:
    def __init__(self, settings: Settings, inbox: Inbox, tencentcloud: TencentCloud,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.inbox = inbox
        self.ledger = ledger_beside(inbox)  # tasks whose final event is out are not put in the inbox again
        self.health = health_board_beside(inbox)
        self.tencentcloud = tencentcloud
        self.clock = clock
        self.stopping = threading.Event()
        self.lister = TaskLister(settings, tencentcloud, self.stopping)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.totals = {"sweeps": 0, "examined": 0, "missing": 0}

    def run_forever(self) -> None:
        log.info("sweeper %s started: every %ds, looking back %ds", self.owner,
                 self.settings.sweep_interval_seconds, self.settings.sweep_lookback_seconds)
        while not self.stopping.is_set():
            try:
                self.sweep_once()
            except Exception:  # noqa: BLE001 - the next sweep covers the same window again
                log.exception("sweep failed; the next one looks at the same window again")
            self.stopping.wait(self.settings.sweep_interval_seconds)
        log.info("sweeper %s stopped", self.owner)

    def sweep_once(self) -> SweepReport:
        now = self.clock()
        report = SweepReport(started_at=now)
        window = (now - self.settings.sweep_lookback_seconds, now)
        for source, listing in self.lister.listings().items():
            product = report.products[source] = ProductReport()
            metrics.SWEEPS.labels(source)  # at 0 from the first try: an alert on its increase sees a failing one
            try:
                for page in listing(window, product):
                    self._enqueue(source, page, product)
                    if self.stopping.is_set():
                        break
            except Exception as error:  # noqa: BLE001 - one product's trouble does not stop the others
                product.error = _describe_error(error)
                log.warning("sweep %s failed after %d page(s): %s", source, product.pages, product.error)
            # What it found counts even when a later page failed; a sweep counts once it listed every page,
            # so that "no sweep in three intervals" also tells of a sweeper that runs but cannot list.
            metrics.SWEPT_MISSING.labels(source).inc(product.missing)
            if product.error is None and not self.stopping.is_set():
                metrics.SWEEPS.labels(source).inc()
            log.info("sweep %s: examined %d finished task(s) in %d page(s), found %d missing (enqueued), "
                     "%d already forwarded%s", source, product.examined, product.pages, product.missing,
                     product.forwarded, f"; failed: {product.error}" if product.error else "")
        report.seconds = self.clock() - now
        self.totals["sweeps"] += 1
        self.totals["examined"] += report.examined
        self.totals["missing"] += report.missing
        log.info("sweep done in %.1fs: examined %d finished task(s), found %d missing (enqueued)",
                 report.seconds, report.examined, report.missing)
        self._report_health(report)
        return report

    def _enqueue(self, source: str, listed: list[Listed], product: ProductReport) -> None:
        """Put in the inbox each listed task whose final event is not known forwarded."""
        if not listed:
            return
        ids = {task_id: event_id(source, event_type, task_id, status) for event_type, task_id, status in listed}
        forwarded = self.ledger.known_forwarded(sorted(set(ids.values())))
        now = self.clock()
        records: list[CallbackRecord] = []
        for event_type, task_id, status in listed:
            if ids[task_id] in forwarded:
                product.forwarded += 1
            else:
                records.append(swept_record(source, event_type, task_id, now, claimed_status=status))
        for result in self.inbox.accept_many(records):
            if not result.duplicate:
                product.missing += 1

    def _report_health(self, report: SweepReport) -> None:
        detail = json.dumps({**report.as_dict(), "totals": self.totals})
        try:
            self.health.post("sweeper", "ok" if report.ok else "failing", detail, self.clock())
        except Exception:  # noqa: BLE001 - health is advisory
            log.warning("could not record the sweeper's health")


def _describe_error(error: BaseException) -> str:
    if isinstance(error, TencentCloudSDKException):
        return f"{error.get_code()}: {error.get_message()}"
    return f"{type(error).__name__}: {error}"


def build_sweeper(settings: Settings, inbox: Inbox) -> Sweeper | None:
    """The sweeper with its half of the DescribeTasks limits; None without credentials (nothing to list)."""
    if not settings.has_tencentcloud_credentials:
        return None
    return Sweeper(settings, inbox, TencentCloud(settings, RateLimits(sweeper_limits(settings.rate_limits))))
