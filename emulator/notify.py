"""Signed callbacks, sent like the real services send them: in the background, retried with backoff.

Bodies are signed with the receiver's own signers (`receiver.auth`), so the
emulator and production agree on the schemes by construction. Faults (drop,
duplicate, reorder, delay) are applied here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from emulator import livestream, render
from emulator.faults import FaultState
from emulator.tasks import FINISH, Task
from receiver.auth import sign_ams_callback, sign_mps_notification, sign_vod_event

log = logging.getLogger("emulator.notify")
Payload = tuple[bytes, dict[str, str]]


@dataclass
class Delivery:
    """One callback to send; `build` signs at send time, so a delayed callback is not already expired."""

    service: str
    task_id: str
    status: str
    url: str
    build: Callable[[], Payload]


def _json(body: dict[str, Any]) -> Payload:
    return json.dumps(body, ensure_ascii=False).encode(), {"Content-Type": "application/json"}


def _redact(url: str) -> str:
    """Callback URLs carry the receiver's token: keep it out of the admin answers."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class CallbackSender:
    """Turns task transitions into deliveries and sends them from a small thread pool."""

    def __init__(self, faults: FaultState, vod_target: Callable[[int], tuple[str, str] | None],
                 retries: int, backoff: float, timeout: float, workers: int = 8) -> None:
        self._faults = faults
        self._vod_target = vod_target
        self._retries = retries
        self._backoff = backoff
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emulator-callback")
        self._lock = threading.Lock()
        self._held: dict[str, list[Delivery]] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=1000)
        self._counts: Counter = Counter()

    # -- deciding what to send ------------------------------------------------

    def on_transition(self, task: Task, status: str) -> None:
        """Scheduler listener: called in the scheduler thread, so the body is rendered here, at this state."""
        if task.silent:
            return
        delivery = self._delivery(task, status)
        if delivery is not None:
            self._dispatch(delivery, hold_for=task.task_id, final=status == FINISH)

    def send_vod_event(self, sub_app_id: int, subject: str, body: dict[str, Any]) -> None:
        """A VOD event about a file (NewFileUpload, FileDeleted), to the application's event target.

        `subject` (the FileId) stands for the task id in the delivery log. There is no task whose FINISH
        would release held callbacks, so these are never held for ``callback_reorder``.
        """
        target = self._vod_target(sub_app_id)
        if target is None:
            return
        url, key = target
        self._dispatch(Delivery("vod", subject, body["EventType"], url, lambda: _json(sign_vod_event(body, key))))

    def _dispatch(self, delivery: Delivery, hold_for: str = "", final: bool = True) -> None:
        """Apply the delivery faults, then queue the callback; `hold_for` names the task whose callbacks reorder."""
        faults = self._faults.current()
        if self._faults.roll(faults.callback_drop):
            self._count("dropped")
            self._record(delivery, attempts=0, outcome="dropped")
            return
        copies = 2 if self._faults.roll(faults.callback_duplicate) else 1
        if copies == 2:
            self._count("duplicated")
        batch = [delivery] * copies
        if hold_for and faults.callback_reorder:
            with self._lock:
                held = self._held.setdefault(hold_for, [])
                held.extend(batch)
                if not final:
                    return
                batch = list(reversed(self._held.pop(hold_for)))
        # One job per batch sends its callbacks one after another, so duplicates and reordering are observable.
        self._pool.submit(self._send_all, batch, faults.callback_delay)

    def _delivery(self, task: Task, status: str) -> Delivery | None:
        if task.service == "mps":
            notify = task.notify or {}
            url = notify.get("NotifyUrl") or ""
            if notify.get("NotifyType", "URL") != "URL" or not url:
                return None
            if task.kind == "LiveStreamProcessTask":
                return self._live_stream_delivery(task, status, url, notify.get("NotifyKey") or "")
            if (notify.get("NotifyMode") or "Finish") == "Finish" and status != FINISH:
                return None
            body, key = render.mps_callback(task), notify.get("NotifyKey") or ""
            if task.kind == "BatchTask" and self._faults.current().batch_callback_without_task_id:
                body["BatchTaskEvent"].pop("TaskId", None)
            return Delivery("mps", task.task_id, status, url, lambda: _json(sign_mps_notification(body, key)))
        if task.service == "vod":
            target = self._vod_target(task.sub_app_id)
            mode = task.params.get("TasksNotifyMode") or "Finish"
            if target is None or mode == "None" or (mode == "Finish" and status != FINISH):
                return None
            url, key = target
            body = render.vod_callback(task)
            return Delivery("vod", task.task_id, status, url, lambda: _json(sign_vod_event(body, key)))
        url = task.extra.get("CallbackUrl") or ""
        if not url or status != FINISH:
            return None
        body, seed = render.ams_callback(task), task.extra.get("Seed") or ""
        return Delivery("ams", task.task_id, status, url, lambda: sign_ams_callback(body, seed))

    @staticmethod
    def _live_stream_delivery(task: Task, status: str, url: str, key: str) -> Delivery | None:
        """A live-stream task has no NotifyMode: it notifies results as they come; the log's `status` is the
        NotificationType, which tells the notifications of one task apart."""
        kind = livestream.notification_type(task, status)
        if kind is None:
            return None
        body = livestream.notification(task, kind)
        return Delivery("mps", task.task_id, kind, url, lambda: _json(sign_mps_notification(body, key)))

    # -- sending --------------------------------------------------------------

    def _send_all(self, batch: list[Delivery], delay: float) -> None:
        if delay > 0:
            time.sleep(delay)
        for delivery in batch:
            self._send(delivery)

    def _send(self, delivery: Delivery) -> None:
        attempts = 0
        for attempt in range(self._retries + 1):
            attempts += 1
            raw, headers = delivery.build()
            try:
                response = requests.post(delivery.url, data=raw, headers=headers, timeout=self._timeout)
                if 200 <= response.status_code < 300:
                    self._count("delivered")
                    self._record(delivery, attempts, "delivered")
                    return
                log.info("callback for %s answered %s", delivery.task_id, response.status_code)
            except requests.RequestException as exc:
                log.info("callback for %s failed: %s", delivery.task_id, type(exc).__name__)
            if attempt < self._retries:
                self._count("retried")
                time.sleep(self._backoff * 2 ** attempt)
        self._count("failed")
        self._record(delivery, attempts, "failed")

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    def _record(self, delivery: Delivery, attempts: int, outcome: str) -> None:
        with self._lock:
            self._log.append({"service": delivery.service, "task_id": delivery.task_id, "status": delivery.status,
                              "url": _redact(delivery.url), "attempts": attempts, "outcome": outcome,
                              "at": time.time()})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"counts": dict(self._counts), "deliveries": list(self._log)}

    def reset(self) -> None:
        with self._lock:
            self._held.clear()
            self._log.clear()
            self._counts.clear()

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
