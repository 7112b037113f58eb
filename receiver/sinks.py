"""Sinks: where forwarded events go. The log sink writes one JSON line per event."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from receiver.config import Settings

# How much of the end of LOG_SINK_PATH a starting worker reads back.
RECOVERY_TAIL_BYTES = 4 * 1024 * 1024

# Characters SQS accepts in a body or attribute value: #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF.
# Outside them (a lone surrogate, U+FFFE, control characters) a body is written with JSON escapes.
NOT_ALLOWED_BY_SQS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class UnencodableEvent(ValueError):
    """The event cannot be written as standard JSON (NaN or Infinity, nesting past the encoder's limit)."""


def encode_event(event: dict[str, Any]) -> str:
    """The event as compact, standard JSON that every sink can carry.

    UTF-8 is kept as is (smaller than \\u escapes, which matters against SQS's
    size limit), unless the text holds a character that UTF-8 or SQS refuses:
    then the whole text is ASCII with JSON escapes, which decodes to the very
    same event. NaN and Infinity, which JSON has no words for, raise
    UnencodableEvent: the worker then retries and buries that event's record
    alone.
    """
    try:
        text = json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        if NOT_ALLOWED_BY_SQS.search(text):
            text = json.dumps(event, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (ValueError, RecursionError) as error:
        raise UnencodableEvent(f"event {event.get('event_id')} is not standard JSON: {error}") from None
    return text


class Sink(Protocol):
    def send(self, events: list[dict[str, Any]]) -> None:
        """Deliver every event or raise; a raise keeps them all in the inbox."""

    def recover_forwarded_ids(self) -> set[str]:
        """Event ids the sink holds already, where it can tell (after a crash between send and mark)."""


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


def open_sink(settings: Settings) -> Sink:
    """The sink SINK names."""
    if settings.sink == "sqs":
        from receiver.sqs import SqsSink  # boto3 only where SQS is used

        return SqsSink.from_settings(settings)
    return LogSink(settings.log_sink_path)


