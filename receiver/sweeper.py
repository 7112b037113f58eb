"""The missed-callback sweeper (SPEC 9): finished tasks never called back still give their event.

Every `SWEEP_INTERVAL_SECONDS` it lists the tasks of the last
`SWEEP_LOOKBACK_SECONDS` that are finished, following every page until the
token is empty:

- MPS `DescribeTasks` (`Status` FINISH, `StartTime`/`EndTime`, `ScrollToken`);
- VOD `DescribeTasks` (the `VOD_SUBAPP_ID` application, `Status` FINISH,
  `FinishTime`, `ScrollToken`);
- AMS `DescribeTasks` (`Filter.TaskStatus` FINISH, then ERROR - a failed
  moderation is final too - with `Filter.BizType` for each of `AMS_BIZTYPES`
  when set, `StartTime`/`EndTime`, `PageToken`).

Each task whose final event is not known forwarded becomes an inbox record
(`receiver.records.swept_record`, origin "sweeper"), put in with
`inbox.accept()` like a callback: its dedup key is the same for every sweep,
so overlapping windows, restarts and one sweeper per host add each task once.
The worker reconciles it like a callback (Describe*TaskDetail, the notify
configuration check that says an MPS task is ours, no session check) and
forwards the event its callback would have produced: same `event_id`, so a
callback arriving later is a duplicate and no consumer sees the state twice.

Which tasks are ours: for MPS, the worker rejects a swept task whose
`TaskNotifyConfig` is not URL mode pointing at this receiver
(`notify_config_mismatch`), as it would its callback. VOD notifies per
application, so every task of `VOD_SUBAPP_ID` is ours. AMS's `DescribeTasks`
and `DescribeTaskDetail` do not return a task's `CallbackUrl`, so every AMS
task is ours, or those of `AMS_BIZTYPES` when set. MPS image tasks notify
through their orchestration, which their Describe does not return: every
finished image task is ours.

The sweeper calls only `DescribeTasks` (the workers make every
Describe*TaskDetail call, where the SQLite inbox gives live callbacks three
quarters of every batch). `DescribeTasks` is split: the sweeper has one half
of its limit and the workers the other (`receiver.ratelimit`), so together
they never exceed it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver.config import Settings
from receiver.events import (
    event_id,
)
from receiver.inbox import Inbox, open_configured_inbox
from receiver.logs import configure_logging
from receiver.ratelimit import RateLimits, sweeper_limits
from receiver.reconcile import (
    vod_event_type_for,
)
from receiver.records import CallbackRecord, swept_record
from receiver.tencentcloud import DescribeCall, Failure, TencentCloud, classify

log = logging.getLogger("receiver.sweeper")

# A page that fails for a reason worth waiting out (throttling, server trouble) is asked again this many times.
PAGE_RETRIES = 3
PAGE_RETRY_BASE_SECONDS = 1.0
# MPS TaskSimpleInfo.TaskType -> the EventType of its callback (ParseNotification).
MPS_EVENT_TYPES = {
    "WorkflowTask": "WorkflowTask",  # image tasks too: their id shape routes them (receiver.reconcile)
    "EditMediaTask": "EditMediaTask",
    "ScheduleTask": "ScheduleTask",
    "BatchTask": "BatchTask",
    "ExtractBlindWatermark": "ExtractBlindWatermark",
    "ExtractBlindWatermarkTask": "ExtractBlindWatermark",
}
AMS_FINAL_LISTED = ("FINISH", "ERROR")


def mps_event_type(task_type: str | None) -> str | None:
    """The callback event type of an MPS task type; None for tasks that never call back to a NotifyUrl."""
    return MPS_EVENT_TYPES.get(task_type or "")


def vod_event_type(task_type: str | None) -> str | None:
    """The callback event type of a VOD task type, the one the event type check expects."""
    return vod_event_type_for(task_type) if task_type else None


def iso_seconds(epoch: float) -> str:
    """ISO 8601 in UTC to the second, as the DescribeTasks pages show their times."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ProductReport:
    examined: int = 0  # finished tasks listed
    forwarded: int = 0  # their final event known forwarded already: skipped
    missing: int = 0  # enqueued: never called back (or not yet)
    pages: int = 0
    error: str | None = None


@dataclass
class SweepReport:
    started_at: float
    seconds: float = 0.0
    products: dict[str, ProductReport] = field(default_factory=dict)

    @property
    def examined(self) -> int:
        return sum(p.examined for p in self.products.values())

    @property
    def missing(self) -> int:
        return sum(p.missing for p in self.products.values())

    @property
    def ok(self) -> bool:
        return all(p.error is None for p in self.products.values())

    def as_dict(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "seconds": round(self.seconds, 3), "examined": self.examined,
                "missing": self.missing, "products": {k: asdict(v) for k, v in self.products.items()}}


# A listed task: (event type, task id, the status it was listed with).
_Listed = tuple[str, str, str]


def _finished_tasks(
    page: dict[str, Any], event_type_of: Callable[[str | None], str | None], product: ProductReport
) -> list[_Listed]:
    """The tasks of one MPS or VOD `DescribeTasks` page (all FINISH) that have a callback event type."""
    listed = []
    for task in page.get("TaskSet") or []:
        product.examined += 1
        event_type = event_type_of(task.get("TaskType"))
        if event_type and task.get("TaskId"):
            listed.append((event_type, task["TaskId"], "FINISH"))
    return listed


class Sweeper:
    def __init__(self, settings: Settings, inbox: Inbox, tencentcloud: TencentCloud,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.inbox = inbox
        self.tencentcloud = tencentcloud
        self.clock = clock
        self.stopping = threading.Event()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.totals = {"sweeps": 0, "examined": 0, "missing": 0}

    # --- the loop ---------------------------------------------------------------------

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
        listings: dict[str, Callable[[tuple[float, float], ProductReport], Iterator[list[_Listed]]]] = {
            "mps": self._list_mps, "vod": self._list_vod, "ams": self._list_ams,
        }
        for source, listing in listings.items():
            product = report.products[source] = ProductReport()
            try:
                for page in listing(window, product):
                    self._enqueue(source, page, product)
                    if self.stopping.is_set():
                        break
            except Exception as error:  # noqa: BLE001 - one product's trouble does not stop the others
                product.error = _describe_error(error)
                log.warning("sweep %s failed after %d page(s): %s", source, product.pages, product.error)
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

    # --- listing ----------------------------------------------------------------------

    def _pages(self, service: str, params: dict[str, Any], token_param: str,
               product: ProductReport) -> Iterator[dict[str, Any]]:
        """Every page of one DescribeTasks listing, until its token is empty."""
        token = ""
        while True:
            page_params = {**params, token_param: token} if token else dict(params)
            page = self._call(DescribeCall(service, "DescribeTasks", page_params))
            product.pages += 1
            yield page
            token = page.get(token_param) or ""
            if not token or self.stopping.is_set():
                return

    def _call(self, call: DescribeCall) -> dict[str, Any]:
        for attempt in range(PAGE_RETRIES + 1):
            try:
                return self.tencentcloud.call(call)
            except TencentCloudSDKException as error:
                if classify(error) is not Failure.RETRY or attempt == PAGE_RETRIES:
                    raise
                if self.stopping.wait(PAGE_RETRY_BASE_SECONDS * 2 ** attempt):
                    raise
        raise AssertionError("unreachable")

    def _list_mps(self, window: tuple[float, float], product: ProductReport) -> Iterator[list[_Listed]]:
        params = {"Status": "FINISH", "StartTime": iso_seconds(window[0]), "EndTime": iso_seconds(window[1] + 1),
                  "Limit": self.settings.sweep_page_size}
        for page in self._pages("mps", params, "ScrollToken", product):
            yield _finished_tasks(page, mps_event_type, product)

    def _list_vod(self, window: tuple[float, float], product: ProductReport) -> Iterator[list[_Listed]]:
        params: dict[str, Any] = {
            "Status": "FINISH", "Limit": self.settings.sweep_page_size,
            "FinishTime": {"After": iso_seconds(window[0]), "Before": iso_seconds(window[1] + 1)},
        }
        if self.settings.vod_subapp_id is not None:
            params["SubAppId"] = self.settings.vod_subapp_id
        for page in self._pages("vod", params, "ScrollToken", product):
            yield _finished_tasks(page, vod_event_type, product)

    def _list_ams(self, window: tuple[float, float], product: ProductReport) -> Iterator[list[_Listed]]:
        for biztype in self.settings.ams_biztypes or (None,):
            for status in AMS_FINAL_LISTED:
                flt = {"TaskStatus": status, **({"BizType": biztype} if biztype else {})}
                params = {"Filter": flt, "StartTime": iso_seconds(window[0]), "EndTime": iso_seconds(window[1] + 1),
                          "Limit": self.settings.sweep_page_size}
                for page in self._pages("ams", params, "PageToken", product):
                    listed = []
                    for task in page.get("Data") or []:
                        product.examined += 1
                        if task.get("TaskId"):
                            listed.append(("AudioModeration", task["TaskId"], task.get("Status") or status))
                    yield listed

    # --- enqueueing -------------------------------------------------------------------

    def _enqueue(self, source: str, listed: list[_Listed], product: ProductReport) -> None:
        """Put in the inbox each listed task whose final event is not known forwarded."""
        if not listed:
            return
        ids = {task_id: event_id(source, event_type, task_id, status) for event_type, task_id, status in listed}
        forwarded = self.inbox.known_forwarded(sorted(set(ids.values())))
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
            self.inbox.set_health("sweeper", "ok" if report.ok else "failing", detail, self.clock())
        except Exception:  # noqa: BLE001 - health is advisory
            log.warning("could not record the sweeper's health")


def _describe_error(error: BaseException) -> str:
    if isinstance(error, TencentCloudSDKException):
        return f"{error.get_code()}: {error.get_message()}"
    return f"{type(error).__name__}: {error}"


# --- processes --------------------------------------------------------------------------


def build_sweeper(settings: Settings, inbox: Inbox) -> Sweeper | None:
    if not settings.has_tencentcloud_credentials:
        return None
    return Sweeper(settings, inbox, TencentCloud(settings, RateLimits(sweeper_limits(settings.rate_limits))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m receiver.sweeper", description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true", help="sweep once, print the report as JSON, and exit")
    args = parser.parse_args(argv)
    configure_logging()
    settings, inbox = open_configured_inbox()
    sweeper = build_sweeper(settings, inbox)
    stopping = sweeper.stopping if sweeper else threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    if sweeper is None:
        log.warning("no Tencent Cloud credentials: the sweeper has nothing to list and waits to be stopped")
        if not args.once:
            stopping.wait()
        inbox.close()
        return 0 if not args.once else 2
    if args.once:
        report = sweeper.sweep_once()
        print(json.dumps(report.as_dict()), flush=True)
        inbox.close()
        return 0 if report.ok else 1
    # A stop lets the page in hand be enqueued, then the process exits.
    sweeper.run_forever()
    inbox.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
