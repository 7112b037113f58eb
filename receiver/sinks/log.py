"""The log sink: one JSON line per event, to stdout or appended to LOG_SINK_PATH."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any

from receiver.sinks.encoding import encode_event

# How much of the end of LOG_SINK_PATH a starting worker reads back.
RECOVERY_TAIL_BYTES = 4 * 1024 * 1024


class LogSink:
    """JSON lines to stdout, or appended to LOG_SINK_PATH and fsynced before returning."""

    def __init__(self, path: str | None = None):
        self._path = path
        self._lock = threading.Lock()

    def send(self, events: Iterable[dict[str, Any]]) -> None:
        lines = "".join(encode_event(e) + "\n" for e in events)
        if not lines:
            return
        with self._lock:
            if self._path is None:
                sys.stdout.write(lines)
                sys.stdout.flush()
                return
            data = lines.encode("utf-8")
            if os.path.exists(self._path) and not _ends_cleanly(self._path):
                data = b"\n" + data
            with open(self._path, "ab") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())

    def recover_forwarded_ids(self) -> set[str]:
        """The event ids at the end of LOG_SINK_PATH (stdout cannot be read back)."""
        if self._path is None or not os.path.exists(self._path):
            return set()
        with open(self._path, "rb") as log:
            log.seek(max(0, os.path.getsize(self._path) - RECOVERY_TAIL_BYTES))
            tail = log.read().decode("utf-8", errors="replace").splitlines()
        found = set()
        for line in tail:
            try:
                found.add(json.loads(line)["event_id"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by the tail's start, or not ours
        return found


def _ends_cleanly(path: str) -> bool:
    """False when the file's last line was cut short (a crash mid-write): the next event starts a new line."""
    with open(path, "rb") as existing:
        if existing.seek(0, os.SEEK_END) == 0:
            return True
        existing.seek(-1, os.SEEK_END)
        return existing.read(1) == b"\n"
