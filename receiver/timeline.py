"""What happened to each task after the door: every verdict the worker settled, kept for `inspect`.

The inbox keeps each callback as a record (when it came, what it claimed,
its door answer and copies, its state and reason). The worker adds, when it
settles a batch, one entry per record and verdict: forwarded (the event id,
the authoritative status, the Describe call, the sink and its message id),
rejected (the reason), looked at again or retried (why), buried (the last
error). `inspect TASK_ID` reads both, oldest first.

One host: a table in the inbox's SQLite file, entries older than
`KEEP_SECONDS` pruned as new ones come. An SQS deployment keeps no timeline
(its records live in a queue; see `receiver.inspection`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from receiver.sqlite_file import SqliteFile, create_tables

log = logging.getLogger(__name__)

KEEP_SECONDS = 30 * 86400.0
PRUNE_EVERY = 1000  # entries appended between two prunings

SCHEMA = """
CREATE TABLE IF NOT EXISTS task_timeline (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id   TEXT NOT NULL,
    source    TEXT NOT NULL,
    record_id TEXT NOT NULL,
    at        REAL NOT NULL,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS task_timeline_task ON task_timeline (task_id, seq);
"""


@dataclass(frozen=True)
class Entry:
    task_id: str
    source: str
    record_id: str
    at: float
    kind: str  # forwarded | already_forwarded | rejected | retry | dead
    detail: dict[str, Any]


class Timeline:
    """No timeline (an SQS deployment): nothing kept, nothing to show."""

    def append(self, entries: list[Entry]) -> None:
        pass

    def of_task(self, task_id: str) -> list[Entry]:
        return []

    def close(self) -> None:
        pass


class SqliteTimeline(Timeline):
    def __init__(self, path: Path):
        create_tables(path, SCHEMA)
        self._file = SqliteFile(path)
        self._appended = 0

    def append(self, entries: list[Entry]) -> None:
        """Best-effort: the timeline is for people; a failure to write it never fails a settlement."""
        if not entries:
            return
        try:
            with self._file.transaction() as conn:
                conn.executemany(
                    "INSERT INTO task_timeline (task_id, source, record_id, at, kind, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(e.task_id, e.source, e.record_id, e.at, e.kind, json.dumps(e.detail)) for e in entries],
                )
                self._appended += len(entries)
                if self._appended >= PRUNE_EVERY:
                    self._appended = 0
                    conn.execute("DELETE FROM task_timeline WHERE at < ?", (entries[-1].at - KEEP_SECONDS,))
        except (sqlite3.Error, OSError) as error:
            log.warning("could not add %d timeline entries: %s", len(entries), error)

    def of_task(self, task_id: str) -> list[Entry]:
        rows = self._file.read(
            "SELECT task_id, source, record_id, at, kind, detail FROM task_timeline WHERE task_id = ? ORDER BY seq",
            (task_id,))
        return [Entry(*row[:5], json.loads(row[5])) for row in rows]

    def close(self) -> None:
        self._file.close()
