"""What the worker's steps hand each other: units of records, verdicts, bounded memories, backoff."""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver.inbox import ClaimedRecord
from receiver.reconcile import Forward, Reject
from receiver.tencentcloud import DescribeCall

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 15.0
MEMORY_ENTRIES = 10_000


def backoff(attempts: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter in its upper half, capped."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return ceiling * (0.5 + rng() / 2)


class Bounded(OrderedDict):
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
    """Not worked on: back to the inbox as it was."""


Verdict = Forward | Reject | Retry | Bury | Defer
Judged = list[tuple[ClaimedRecord, Verdict]]

NO_CALL = ("", "")  # the action of a unit that needs no Describe call


@dataclass
class Unit:
    """Records answered by the same Describe call(s): one task, a set of files, or nothing to call."""

    kind: str  # "task", "files", "session", "unreconcilable", "broken"
    items: list[ClaimedRecord] = field(default_factory=list)
    call: DescribeCall | None = None
    error: Exception | None = None  # why a "broken" unit could not be planned

    @property
    def priority(self) -> int:
        return min(item.priority for item in self.items)

    @property
    def action(self) -> tuple[str, str]:
        """The action of the unit's first call, whose queue it waits in."""
        if self.kind == "task" and self.call is not None:
            return (self.call.service, self.call.action)
        if self.kind == "files":
            return ("vod", "DescribeMediaInfos")
        if self.kind == "session":
            return ("mps", "DescribeBatchTaskDetail")
        return NO_CALL


def call_key(call: DescribeCall) -> str:
    return json.dumps([call.service, call.action, call.params], sort_keys=True)


def describe_error(error: BaseException | None) -> str:
    if error is None:
        return "task not found"
    if isinstance(error, TencentCloudSDKException):
        return f"{error.get_code()}: {error.get_message()}"
    return f"{type(error).__name__}: {error}"
