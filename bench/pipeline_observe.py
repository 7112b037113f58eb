"""What came out of a pipeline run: the sink as it grows, the inbox's times, and when the emulator saw its calls."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from bench.pipeline_stack import Emulator
from bench.pipeline_tasks import BenchTask

POLL_SECONDS = 0.1  # how often /_emulator/stats is read while a backlog drains


class SinkTail:
    """Reads the JSON-lines sink as it grows, counting each event id (a line cut short is left for later)."""

    def __init__(self, path: Path):
        self.path = path
        self.counts: Counter[str] = Counter()
        self.lines = 0  # event lines read so far: an int other threads may read while poll() runs
        self._offset = 0
        self._partial = b""

    def poll(self) -> Counter[str]:
        try:
            with open(self.path, "rb") as sink:
                sink.seek(self._offset)
                data = sink.read()
        except FileNotFoundError:
            return self.counts
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self.counts[json.loads(line)["event_id"]] += 1
                self.lines += 1
        return self.counts


def _query(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def forwarded_times(inbox: Path) -> dict[str, float]:
    """event_id -> forwarded_at: the worker's clock as it handed the event to the sink."""
    return dict(_query(inbox, "SELECT event_id, forwarded_at FROM forwarded"))


def unsettled_records(inbox: Path) -> int:
    return _query(inbox, "SELECT COUNT(*) FROM inbox WHERE state IN ('pending', 'leased')")[0][0]


def accept_to_forward(inbox: Path, tasks: list[BenchTask], forwarded: dict[str, float]) -> list[float]:
    """Seconds from each accepted callback of `tasks` (the inbox's received_at) to its task's event forwarded."""
    wanted = {(t.product, t.task_id): t.event_id for t in tasks}
    rows = _query(inbox, "SELECT source, task_id, received_at FROM inbox")
    return [forwarded[wanted[(source, task_id)]] - received for source, task_id, received in rows
            if (source, task_id) in wanted and wanted[(source, task_id)] in forwarded]


class StatsTimeline:
    """Polls /_emulator/stats every 100 ms; per action, when its call count first and last changed.

    The fallback for an emulator without a call log: a change seen at a poll
    happened since the poll before, so each edge is taken at the midpoint.
    """

    def __init__(self, emulator: Emulator, interval: float = POLL_SECONDS):
        self._emulator = emulator
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-timeline", daemon=True)
        self._last_calls: dict[str, int] | None = None  # None until the baseline poll
        self._last_poll = time.time()
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.error: str | None = None

    def start(self) -> StatsTimeline:
        self._poll()  # the baseline, before the worker's first call
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._poll()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._poll()
            except (requests.RequestException, ValueError) as error:
                self.error = f"{type(error).__name__}: {error}"

    def _poll(self) -> None:
        calls = {action: figures["calls"] for action, figures in self._emulator.stats()["actions"].items()}
        now = time.time()
        if self._last_calls is not None:
            edge = (self._last_poll + now) / 2
            for action, count in calls.items():
                if count > self._last_calls.get(action, 0):
                    self.first.setdefault(action, edge)
                    self.last[action] = edge
        self._last_calls, self._last_poll = calls, now


def call_times(log: Any) -> dict[str, list[float]] | None:
    """Per action, the times of the calls in an emulator call log; None when the log has no recognisable shape.

    Accepted: a list of calls (or ``{"calls": [...]}``), each with its action (``"mps.DescribeTaskDetail"``, or
    ``service`` and ``action``) and a time (``at``, ``admitted_at``, ``time``, ...); or ``{action: [times]}``.
    Only differences of times are used, so any one clock will do.
    """
    entries = log.get("calls", log) if isinstance(log, dict) else log
    if isinstance(entries, dict):
        if all(isinstance(v, list) and all(isinstance(t, int | float) for t in v) for v in entries.values()):
            return {str(action): [float(t) for t in times] for action, times in entries.items()}
        return None
    if not isinstance(entries, list):
        return None
    times: dict[str, list[float]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            return None
        action = entry.get("action")
        if isinstance(action, str) and "." not in action and isinstance(entry.get("service"), str):
            action = f"{entry['service']}.{action}"
        at = next((entry[k] for k in ("at", "admitted_at", "time", "timestamp", "ts", "started_at", "ended_at")
                   if isinstance(entry.get(k), int | float)), None)
        if not isinstance(action, str) or at is None:
            return None
        times.setdefault(action, []).append(float(at))
    return times
