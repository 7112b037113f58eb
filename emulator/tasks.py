"""Emulated tasks and their state machine: WAITING -> PROCESSING -> FINISH.

A single scheduler thread moves every task along at the configured delays
after its creation and tells a listener (the callback sender) about each
change, so API answers never wait for a transition or a callback.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WAITING, PROCESSING, FINISH = "WAITING", "PROCESSING", "FINISH"
FAIL_MARKER = "emulator:fail"
SILENT_MARKER = "emulator:no-callback"
SESSION_ID_TTL_SECONDS = 7 * 24 * 3600
FAILED_ERR_CODE = 30010
FAILED_MESSAGE = "emulator: injected task failure"


@dataclass
class Task:
    """One task of any product; `kind` is WorkflowTask, BatchTask, ImageTask, LiveStreamProcessTask, Procedure or
    AudioModeration."""

    service: str
    kind: str
    task_id: str
    params: dict[str, Any]
    created_at: float
    status: str = WAITING
    began_at: float | None = None
    finished_at: float | None = None
    fail: bool = False
    silent: bool = False
    notify: dict[str, Any] | None = None
    session_id: str = ""
    session_context: str = ""
    sub_app_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def err_code(self) -> int:
        return FAILED_ERR_CODE if self.fail and self.status == FINISH else 0

    @property
    def message(self) -> str:
        return FAILED_MESSAGE if self.fail and self.status == FINISH else ""


def _hex32() -> str:
    return secrets.token_hex(16)


def _alnum(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_task_id(kind: str) -> str:
    """Ids in the formats the real services use (see the seeds)."""
    if kind == "WorkflowTask":
        return f"2500000000-WorkflowTask-{_hex32()}"
    if kind == "BatchTask":
        return f"2500000000-BatchTask-{_hex32()}"
    if kind == "LiveStreamProcessTask":
        return f"2500000000-LiveStreamProcessTask-{_hex32()}"
    if kind == "ImageTask":
        return _alnum(64)
    if kind == "Procedure":
        return f"1500000000-procedurev2-{_hex32()}tt0"
    if kind == "AudioModeration":
        return f"task-audio-{_alnum(16)}"
    raise ValueError(f"unknown task kind {kind!r}")


Listener = Callable[[Task, str], None]


class TaskStore:
    """All tasks, the SessionId deduplication table, and the scheduler that advances tasks."""

    def __init__(self, processing_after: float, finish_after: float) -> None:
        self.processing_after = processing_after
        self.finish_after = max(finish_after, processing_after)
        self._tasks: dict[str, Task] = {}
        self._sessions: dict[tuple[str, int, str], float] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: list[tuple[float, int, str, str]] = []
        self._sequence = itertools.count()
        self._listeners: list[Listener] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="emulator-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wakeup:
            self._stopped = True
            self._wakeup.notify_all()
        self._thread.join(timeout=5)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def claim_session(self, service: str, sub_app_id: int, session_id: str, now: float) -> bool:
        """Reserve a SessionId for 7 days; False when it was used within that time (the real dedup rule)."""
        if not session_id:
            return True
        key = (service, sub_app_id, session_id)
        with self._lock:
            used = self._sessions.get(key)
            if used is not None and now - used < SESSION_ID_TTL_SECONDS:
                return False
            self._sessions[key] = now
            return True

    def add(self, task: Task) -> Task:
        """Store a new task and schedule its transitions."""
        with self._wakeup:
            self._tasks[task.task_id] = task
            created = time.monotonic()
            heapq.heappush(self._queue, (created + self.processing_after, next(self._sequence), task.task_id,
                                         PROCESSING))
            heapq.heappush(self._queue, (created + self.finish_after, next(self._sequence), task.task_id, FINISH))
            self._wakeup.notify_all()
        return task

    def get(self, service: str, task_id: str) -> Task | None:
        with self._lock:
            task = self._tasks.get(task_id)
            return task if task is not None and task.service == service else None

    def list(self, service: str, kinds: tuple[str, ...] | None = None) -> list[Task]:
        """Tasks of a service, newest first."""
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.service == service and (kinds is None or t.kind in kinds)]
        return sorted(tasks, key=lambda t: (t.created_at, t.task_id), reverse=True)

    def reset(self) -> None:
        with self._wakeup:
            self._tasks.clear()
            self._sessions.clear()
            self._queue.clear()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopped and (not self._queue or self._queue[0][0] > time.monotonic()):
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._wakeup.wait(timeout)
                if self._stopped:
                    return
                _, _, task_id, status = heapq.heappop(self._queue)
                task = self._tasks.get(task_id)
                if task is None or task.status == FINISH:
                    continue
                # Times first, status last: Describe answers read tasks without the lock and must never show
                # FINISH without a FinishTime.
                now = time.time()
                task.began_at = task.began_at or now
                if status == FINISH:
                    task.finished_at = now
                task.status = status
            for listener in self._listeners:
                listener(task, status)
