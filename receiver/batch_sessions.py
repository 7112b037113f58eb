"""Which MPS BatchTask has a given SessionId (SPEC 6: BatchTask callbacks without a task id).

The SDK's `BatchSubTaskResult` carries no task id, so such a callback names
its task only through its `SessionId`. The index lists recent tasks with MPS
`DescribeTasks` and reads each new BatchTask's SessionId once with
`DescribeBatchTaskDetail`. A listing is refreshed at most every
`REFRESH_SECONDS`, and then only from where the last complete one ended, so
callbacks with made-up SessionIds (anyone holding one captured MPS signature
can send them) cost no calls of their own: they share the periodic refresh.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from receiver.tencentcloud import DescribeCall

REFRESH_SECONDS = 5.0
# Tasks created this long before the last listing are listed again (clock skew, late visibility).
OVERLAP_SECONDS = 120.0
MAX_PAGES = 10  # per status and refresh: the newest tasks come first
PAGE_SIZE = 100
LISTED_STATUSES = ("FINISH", "PROCESSING", "WAITING")
MAX_KNOWN = 10_000

Caller = Callable[[DescribeCall], dict[str, Any]]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BatchSessionIndex:
    """SessionId -> BatchTask id, learnt from listings; one per worker process."""

    def __init__(self, lookback_seconds: float, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.lookback_seconds = lookback_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._sessions: OrderedDict[str, str] = OrderedDict()  # BatchTask id -> its SessionId ("" for none)
        self._by_session: dict[str, str] = {}
        self._listed_until: float | None = None  # tasks created before this were all listed
        self._refreshed_at: float | None = None

    def find(self, session_id: str, call: Caller) -> str | None:
        """The BatchTask with `session_id`, listing new tasks first unless that was done a moment ago.

        `call` makes one rate-limited Describe call; whatever it raises
        (throttling, a pass out of time) leaves the index as far as it got.
        """
        if session_id in self._by_session:
            return self._by_session[session_id]
        now = self._monotonic()
        if self._refreshed_at is None or now - self._refreshed_at >= REFRESH_SECONDS:
            self._refreshed_at = now
            self._refresh(call)
        return self._by_session.get(session_id)

    def _refresh(self, call: Caller) -> None:
        started = self._clock()
        since = started - self.lookback_seconds
        if self._listed_until is not None:
            since = max(since, self._listed_until - OVERLAP_SECONDS)
        window = {"StartTime": _iso(since), "EndTime": _iso(started + 60)}
        complete = True
        for status in LISTED_STATUSES:
            complete &= self._list(status, window, call)
        if complete:
            self._listed_until = started

    def _list(self, status: str, window: dict[str, str], call: Caller) -> bool:
        """Learn the BatchTasks of one status; False when the page cap cut the listing short."""
        token = ""
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"Status": status, "Limit": PAGE_SIZE, **window}
            if token:
                params["ScrollToken"] = token
            page = call(DescribeCall("mps", "DescribeTasks", params))
            for task in page.get("TaskSet") or []:
                if not isinstance(task, dict) or task.get("TaskType") != "BatchTask":
                    continue
                task_id = task.get("TaskId")
                if isinstance(task_id, str) and task_id not in self._sessions:
                    detail = call(DescribeCall("mps", "DescribeBatchTaskDetail", {"TaskId": task_id}))
                    self._learn(task_id, detail.get("SessionId") or "")
            token = page.get("ScrollToken") or ""
            if not token:
                return True
        return False

    def _learn(self, task_id: str, session_id: str) -> None:
        self._sessions[task_id] = session_id
        if session_id:
            self._by_session[session_id] = task_id
        if len(self._sessions) > MAX_KNOWN:
            old_task, old_session = self._sessions.popitem(last=False)
            if self._by_session.get(old_session) == old_task:
                del self._by_session[old_session]
