"""Sinks: where forwarded events go. The log sink writes one JSON line per event."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any, Protocol, TextIO

from receiver.config import Settings


class Sink(Protocol):
    def send(self, events: list[dict[str, Any]]) -> None:
        """Deliver every event or raise; a raise keeps them all in the inbox."""


class LogSink:
    """JSON lines to stdout, or appended to LOG_SINK_PATH and fsynced before returning."""

    def __init__(self, path: str | None = None):
        self._path = path
        self._lock = threading.Lock()

    def send(self, events: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events)
        if not lines:
            return
        with self._lock:
            if self._path is None:
                sys.stdout.write(lines)
                sys.stdout.flush()
                return
            with open(self._path, "a", encoding="utf-8") as out:
                _write_durably(out, lines)


def open_sink(settings: Settings) -> Sink:
    """The sink SINK names."""
    if settings.sink == "log":
        return LogSink(settings.log_sink_path)
    raise NotImplementedError("SINK=sqs arrives with the SQS work (issue 5)")


def _write_durably(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()
    os.fsync(out.fileno())
