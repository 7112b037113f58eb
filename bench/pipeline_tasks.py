"""Tasks of the pipeline benchmark: created in the emulator, with the receiver as their NotifyUrl / CallbackUrl."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.pipeline_stack import AMS_SEED, MPS_KEY, Emulator, Stack
from bench.processes import poll_until
from emulator.tasks import FINISH, SILENT_MARKER, Task
from receiver.events import (
    event_id,
)

# The event type of each task kind's callbacks; every task here ends with one FINISH event.
EVENT_TYPES = {"WorkflowTask": "WorkflowTask", "BatchTask": "BatchTask", "Procedure": "ProcedureStateChanged",
               "AudioModeration": "AudioModeration"}
AMS_TASKS_PER_CALL = 10  # CreateAudioModerationTask takes up to 10 tasks
SETUP_THREADS = 8  # threads creating tasks and posting callbacks


@dataclass(frozen=True)
class BenchTask:
    """A task created in the emulator, and the emulator's own Task mirrored here to render its callbacks."""

    mirror: Task

    @property
    def product(self) -> str:
        return self.mirror.service

    @property
    def task_id(self) -> str:
        return self.mirror.task_id

    @property
    def event_type(self) -> str:
        return EVENT_TYPES[self.mirror.kind]

    @property
    def event_id(self) -> str:
        """The id of the one event this task gives: its FINISH state."""
        return event_id(self.product, self.event_type, self.task_id, FINISH)


class TaskFactory:
    """Creates tasks in the emulator that notify the receiver; `silent` ones carry the no-callback marker."""

    def __init__(self, stack: Stack, silent: bool = True, notify_mode: str = "Change"):
        self.stack = stack
        self.silent = silent
        self.mode = notify_mode
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def _number(self) -> int:
        with self._lock:
            return next(self._numbers)

    def _input_url(self, n: int, extension: str) -> str:
        marker = f"{SILENT_MARKER}/" if self.silent else ""
        return f"https://media-in-1250000000.cos.ap-guangzhou.myqcloud.com/bench/{marker}{n}.{extension}"

    def _session(self, product: str, n: int) -> tuple[str, str]:
        context = json.dumps({"tenant": "bench", "order": n, "pipeline": "web-and-mobile"})
        return f"bench-{self.stack.name}-{product}-{n}", context

    def _mps_notify(self) -> dict[str, str]:
        return {"NotifyType": "URL", "NotifyMode": self.mode, "NotifyUrl": self.stack.notify_url("mps"),
                "NotifyKey": MPS_KEY}

    def mps(self, kind: str = "WorkflowTask") -> list[BenchTask]:
        n = self._number()
        session_id, context = self._session("mps", n)
        source = {"Type": "URL", "UrlInputInfo": {"Url": self._input_url(n, "mp4")}}
        params: dict[str, Any] = {
            "InputInfo": [source] if kind == "BatchTask" else source,
            "MediaProcessTask": {"TranscodeTaskSet": [{"Definition": 100030}, {"Definition": 100040}]},
            "TaskNotifyConfig": self._mps_notify(), "SessionId": session_id, "SessionContext": context,
        }
        action = "BatchProcessMedia" if kind == "BatchTask" else "ProcessMedia"
        task_id = self.stack.emulator.call("mps", action, params)["TaskId"]
        return [BenchTask(Task("mps", kind, task_id, params, time.time(), notify=dict(params["TaskNotifyConfig"]),
                               session_id=session_id, session_context=context))]

    def mps_batch(self) -> list[BenchTask]:
        return self.mps("BatchTask")

    def vod(self) -> list[BenchTask]:
        n = self._number()
        session_id, context = self._session("vod", n)
        params = {"FileId": f"528589078{n:010d}", "Procedure": "bench-procedure", "TasksNotifyMode": self.mode,
                  "SessionId": session_id, "SessionContext": context,
                  "ExtInfo": SILENT_MARKER if self.silent else ""}
        task_id = self.stack.emulator.call("vod", "ProcessMedia", params)["TaskId"]
        return [BenchTask(Task("vod", "Procedure", task_id, params, time.time(), session_id=session_id,
                               session_context=context))]

    def ams(self, count: int = AMS_TASKS_PER_CALL) -> list[BenchTask]:
        numbers = [self._number() for _ in range(count)]
        items = [{"DataId": f"bench-{self.stack.name}-{n}", "Name": f"episode-{n}",
                  "Input": {"Type": "URL", "Url": self._input_url(n, "mp3")}} for n in numbers]
        params = {"Tasks": items, "BizType": "bench", "Type": "AUDIO", "Seed": AMS_SEED,
                  "CallbackUrl": self.stack.notify_url("ams")}
        results = self.stack.emulator.call("ams", "CreateAudioModerationTask", params)["Results"]
        shared = {"BizType": "bench", "Type": "AUDIO", "Seed": AMS_SEED, "CallbackUrl": params["CallbackUrl"]}
        return [BenchTask(Task("ams", "AudioModeration", result["TaskId"], {**params, "Tasks": [item]}, time.time(),
                               extra={**shared, "DataId": item["DataId"], "Name": item["Name"],
                                      "Input": item["Input"]}))
                for item, result in zip(items, results, strict=True)]


def task_plan(count: int, products: tuple[str, ...] = ("mps", "vod", "ams")) -> list[tuple[str, int]]:
    """(product, how many) creating calls for `count` tasks mixed evenly over `products`, AMS 10 a call."""
    share = Counter(products[i % len(products)] for i in range(count))
    plan: list[tuple[str, int]] = []
    for product in products:
        if product == "ams":
            whole, rest = divmod(share[product], AMS_TASKS_PER_CALL)
            plan += [("ams", AMS_TASKS_PER_CALL)] * whole + ([("ams", rest)] if rest else [])
        else:
            plan += [(product, 1)] * share[product]
    return plan


def create_tasks(factory: TaskFactory, plan: list[tuple[str, int]], threads: int = SETUP_THREADS) -> list[BenchTask]:
    """Create the planned tasks concurrently; returned interleaved by product, as real traffic mixes them."""

    def create(step: tuple[str, int]) -> list[BenchTask]:
        product, count = step
        if product == "ams":
            return factory.ams(count)
        return factory.mps_batch() if product == "mps_batch" else getattr(factory, product)()

    with ThreadPoolExecutor(threads) as pool:
        created = [task for tasks in pool.map(create, plan) for task in tasks]
    by_product: dict[str, list[BenchTask]] = {}
    for task in created:
        by_product.setdefault(task.product, []).append(task)
    mixed = itertools.zip_longest(*by_product.values())
    return [task for group in mixed for task in group if task is not None]


def finished_counts(emulator: Emulator) -> Counter[str]:
    """Finished tasks per product, as DescribeTasks lists them (the Describe*Detail actions are left untouched)."""
    counts: Counter[str] = Counter()
    counts["mps"] = emulator.call("mps", "DescribeTasks", {"Status": FINISH, "Limit": 1})["TotalCount"]
    counts["ams"] = int(emulator.call("ams", "DescribeTasks", {"Filter": {"TaskStatus": FINISH}, "Limit": 1})["Total"])
    token = ""
    while True:
        page = emulator.call("vod", "DescribeTasks", {"Status": FINISH, "Limit": 100, "ScrollToken": token})
        counts["vod"] += len(page["TaskSet"])
        token = page["ScrollToken"]
        if not token:
            return counts


def wait_finished(stack: Stack, tasks: list[BenchTask], timeout: float = 60) -> None:
    """Poll until the emulator lists every task as finished."""
    wanted = Counter(task.product for task in tasks)
    poll_until(lambda: all(finished_counts(stack.emulator)[p] >= n for p, n in wanted.items()), timeout,
               f"{len(tasks)} tasks to finish", stack.children, interval=0.2)
