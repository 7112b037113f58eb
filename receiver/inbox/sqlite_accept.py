"""Storing callbacks in the SQLite inbox: one committer thread per process, one transaction per group.

Within a process, one committer thread writes the callbacks of all request
threads: it takes every record waiting, inserts them in one transaction and
commits once, so a burst costs one fsync rather than one per callback. A
request thread is answered only after that commit returned. Under
gunicorn's gevent worker the committer and the request "threads" are
greenlets; the transaction itself then runs on a real thread
(`run_blocking`) so that waiting for the disk or the lock never stops the
event loop.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path

from receiver.blocking import run_blocking
from receiver.inbox import AcceptResult, InboxUnavailable, arrival_priority
from receiver.records import CallbackRecord
from receiver.sqlite_file import Writer

ACCEPT_TIMEOUT_SECONDS = 10.0
MAX_GROUP = 256
# The columns of a record as the inbox table stores them (receiver.inbox.sqlite).
RECORD_COLUMNS = (
    "id, dedup_key, source, event_type, task_id, resolve_by, session_id, "
    "session_context, claimed_status, body, received_at, origin"
)

# One statement per group, whatever its size: each SQLite call lets request
# threads take the GIL, and the committer then waits to get it back while it
# holds the host's write lock. The group travels as one JSON array. A copy of
# a record that holds its key updates that record instead (counted while the
# record is pending or leased), and RETURNING says which id each key has now.
_INSERT_GROUP = f"""
INSERT INTO inbox ({RECORD_COLUMNS}, next_attempt_at, updated_at, patience_from, priority)
SELECT {", ".join(f"json_extract(value, '$[{i}]')" for i in range(16))}
FROM json_each(?)
WHERE true
ON CONFLICT (dedup_key) WHERE holds_key = 1 DO UPDATE SET
    copies = copies + (state IN ('pending', 'leased')),
    duplicates = duplicates + 1,
    patience_from = CASE WHEN state IN ('pending', 'leased') THEN excluded.received_at ELSE patience_from END
RETURNING dedup_key, id
"""


class _PendingAccept:
    __slots__ = ("record", "done", "result", "error")

    def __init__(self, record: CallbackRecord):
        self.record = record
        self.done = threading.Event()
        self.result: AcceptResult | None = None
        self.error: BaseException | None = None


class GroupCommitter:
    """One thread per process that turns waiting accepts into one transaction."""

    def __init__(self, path: Path):
        self._path = path
        self._queue: queue.SimpleQueue[_PendingAccept] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._owner_pid: int | None = None
        self._start_lock = threading.Lock()

    def accept(self, record: CallbackRecord) -> AcceptResult:
        return self.accept_many([record])[0]

    def accept_many(self, records: list[CallbackRecord]) -> list[AcceptResult]:
        """Queued at once, so that they share commits (up to MAX_GROUP records each)."""
        self._ensure_running()
        pendings = [_PendingAccept(record) for record in records]
        for pending in pendings:
            self._queue.put(pending)
        deadline = time.monotonic() + ACCEPT_TIMEOUT_SECONDS
        results = []
        for pending in pendings:
            if not pending.done.wait(max(0.0, deadline - time.monotonic())):
                raise InboxUnavailable("timed out waiting for the inbox commit")
            if pending.error is not None:
                raise InboxUnavailable(str(pending.error)) from pending.error
            assert pending.result is not None
            results.append(pending.result)
        return results

    def _ensure_running(self) -> None:
        # A fork (gunicorn --preload) copies no threads: start one per process.
        if self._owner_pid == os.getpid() and self._thread is not None:
            return
        with self._start_lock:
            if self._owner_pid != os.getpid() or self._thread is None:
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._run, name="inbox-committer", daemon=True
                )
                self._owner_pid = os.getpid()
                self._thread.start()

    def _run(self) -> None:
        writer: Writer | None = None
        while True:
            group = [self._queue.get()]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if writer is None:
                    writer = Writer(self._path)
                results = run_blocking(_insert_group, writer, [p.record for p in group])
            except Exception as error:  # noqa: BLE001 - every waiter must be answered
                if writer is not None:
                    writer.close()
                    writer = None
                for pending in group:
                    pending.error = error
                    pending.done.set()
                continue
            for pending, result in zip(group, results, strict=True):
                pending.result = result
                pending.done.set()


def _insert_group(writer: Writer, records: list[CallbackRecord]) -> list[AcceptResult]:
    """Insert what is new in one transaction; a record whose key is held already is a duplicate."""
    now = time.time()
    rows = json.dumps([
        (
            r.id, r.dedup_key, r.source, r.event_type, r.task_id, r.resolve_by, r.session_id,
            r.session_context, r.claimed_status, r.body, r.received_at, r.origin, r.received_at, now,
            r.received_at, arrival_priority(r),
        )
        for r in records
    ])
    with writer.transaction() as conn:
        stored = dict(conn.execute(_INSERT_GROUP, (rows,)).fetchall())
    # Ids are random: the record whose own id was stored is the one accepted.
    return [AcceptResult(stored[r.dedup_key], duplicate=stored[r.dedup_key] != r.id) for r in records]
