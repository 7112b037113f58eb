"""The sweeper's `DescribeTasks` listings: every finished task of a time window, page after page, per product.

What each product is asked (the parameters) and what a page yields (the
listed tasks) are pure functions; `TaskLister` makes the calls, following
each listing's token and asking a page again when its failure can pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver.config import Settings
from receiver.reconcile.event_types import vod_event_type_for
from receiver.sweeper.report import ProductReport
from receiver.tencentcloud import DescribeCall, Failure, TencentCloud, classify

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

# A listed task: (event type, task id, the status it was listed with).
Listed = tuple[str, str, str]
# (from, to) in epoch seconds.
Window = tuple[float, float]


def mps_event_type(task_type: str | None) -> str | None:
    """The callback event type of an MPS task type; None for tasks that never call back to a NotifyUrl."""
    return MPS_EVENT_TYPES.get(task_type or "")


def vod_event_type(task_type: str | None) -> str | None:
    """The callback event type of a VOD task type, the one the event type check expects."""
    return vod_event_type_for(task_type) if task_type else None


def iso_seconds(epoch: float) -> str:
    """ISO 8601 in UTC to the second, as the DescribeTasks pages show their times."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what each product is asked --------------------------------------------------------
# The window's end is rounded up a second: iso_seconds drops the fraction, and a task that finished
# in the window's last second is still listed.


def mps_params(window: Window, page_size: int) -> dict[str, Any]:
    return {"Status": "FINISH", "StartTime": iso_seconds(window[0]), "EndTime": iso_seconds(window[1] + 1),
            "Limit": page_size}


def vod_params(window: Window, page_size: int, subapp_id: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "Status": "FINISH", "Limit": page_size,
        "FinishTime": {"After": iso_seconds(window[0]), "Before": iso_seconds(window[1] + 1)},
    }
    if subapp_id is not None:
        params["SubAppId"] = subapp_id
    return params


def ams_params(window: Window, page_size: int, status: str, biztype: str | None) -> dict[str, Any]:
    flt = {"TaskStatus": status, **({"BizType": biztype} if biztype else {})}
    return {"Filter": flt, "StartTime": iso_seconds(window[0]), "EndTime": iso_seconds(window[1] + 1),
            "Limit": page_size}


# --- what a page yields ----------------------------------------------------------------


def finished_tasks(
    page: dict[str, Any], event_type_of: Callable[[str | None], str | None], product: ProductReport
) -> list[Listed]:
    """The tasks of one MPS or VOD `DescribeTasks` page (all FINISH) that have a callback event type."""
    listed = []
    for task in page.get("TaskSet") or []:
        product.examined += 1
        event_type = event_type_of(task.get("TaskType"))
        if event_type and task.get("TaskId"):
            listed.append((event_type, task["TaskId"], "FINISH"))
    return listed


def ams_tasks(page: dict[str, Any], status: str, product: ProductReport) -> list[Listed]:
    """The tasks of one AMS `DescribeTasks` page, each with its own status (else the one listed for)."""
    listed = []
    for task in page.get("Data") or []:
        product.examined += 1
        if task.get("TaskId"):
            listed.append(("AudioModeration", task["TaskId"], task.get("Status") or status))
    return listed


# --- the calls -------------------------------------------------------------------------


class TaskLister:
    """Lists the finished tasks of a window, one page at a time, until the listing ends or `stopping` is set."""

    def __init__(self, settings: Settings, tencentcloud: TencentCloud, stopping: threading.Event):
        self.settings = settings
        self.tencentcloud = tencentcloud
        self.stopping = stopping

    def listings(self) -> dict[str, Callable[[Window, ProductReport], Iterator[list[Listed]]]]:
        """Each product's listing, in the order a sweep goes through them."""
        return {"mps": self.mps, "vod": self.vod, "ams": self.ams}

    def mps(self, window: Window, product: ProductReport) -> Iterator[list[Listed]]:
        params = mps_params(window, self.settings.sweep_page_size)
        for page in self._pages("mps", params, "ScrollToken", product):
            yield finished_tasks(page, mps_event_type, product)

    def vod(self, window: Window, product: ProductReport) -> Iterator[list[Listed]]:
        params = vod_params(window, self.settings.sweep_page_size, self.settings.vod_subapp_id)
        for page in self._pages("vod", params, "ScrollToken", product):
            yield finished_tasks(page, vod_event_type, product)

    def ams(self, window: Window, product: ProductReport) -> Iterator[list[Listed]]:
        # A failed moderation is final too: ERROR is listed after FINISH, for each biztype asked about.
        for biztype in self.settings.ams_biztypes or (None,):
            for status in AMS_FINAL_LISTED:
                params = ams_params(window, self.settings.sweep_page_size, status, biztype)
                for page in self._pages("ams", params, "PageToken", product):
                    yield ams_tasks(page, status, product)

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
