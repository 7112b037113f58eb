"""SQLite inbox for one host: WAL, synchronous=FULL, group commit.

Every gunicorn worker process and every worker process on the host opens the
same file. Within a process, one committer thread writes the callbacks of all
request threads: it takes every record waiting, inserts them in one
transaction and commits once, so a burst costs one fsync rather than one per
callback. A request thread is answered only after that commit returned.
Under gunicorn's gevent worker the committer and the request "threads" are
greenlets; the transaction itself then runs on a real thread (`run_blocking`)
so that waiting for the disk or the lock never stops the event loop.

Writers of all processes take turns through an flock on ``<inbox>.lock``
before SQLite's own write lock. SQLite's busy handler polls with sleeps of
growing length, so two busy processes starve each other and leave the CPU
idle; a blocked flock wakes the moment the holder lets go, and the kernel
drops it when a process dies, even by kill -9.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from receiver.blocking import run_blocking
from receiver.callbacks import ORIGIN_CALLBACK, ORIGIN_SWEEPER, CallbackRecord
from receiver.inbox import AcceptResult, ClaimedRecord, Inbox, InboxUnavailable

BUSY_TIMEOUT_SECONDS = 5.0
ACCEPT_TIMEOUT_SECONDS = 10.0
MAX_GROUP = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id               TEXT PRIMARY KEY,
    dedup_key        TEXT NOT NULL UNIQUE,
    source           TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    task_id          TEXT,
    resolve_by       TEXT NOT NULL,
    session_id       TEXT,
    session_context  TEXT,
    claimed_status   TEXT,
    body             TEXT NOT NULL,
    received_at      REAL NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'leased', 'done', 'rejected', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    lease_owner      TEXT,
    lease_expires_at REAL,
    last_error       TEXT,
    reason           TEXT,
    updated_at       REAL NOT NULL,
    origin           TEXT NOT NULL DEFAULT 'callback'
);
CREATE INDEX IF NOT EXISTS inbox_due ON inbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS inbox_task ON inbox (source, task_id);
CREATE TABLE IF NOT EXISTS forwarded (
    event_id     TEXT PRIMARY KEY,
    forwarded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    component  TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""

_RECORD_COLUMNS = (
    "id, dedup_key, source, event_type, task_id, resolve_by, session_id, "
    "session_context, claimed_status, body, received_at, origin"
)

# One statement per group, whatever its size: each SQLite call lets request
# threads take the GIL, and the committer then waits to get it back while it
# holds the host's write lock. The group travels as one JSON array.
_INSERT_GROUP = f"""
INSERT INTO inbox ({_RECORD_COLUMNS}, next_attempt_at, updated_at)
SELECT {", ".join(f"json_extract(value, '$[{i}]')" for i in range(14))}
FROM json_each(?)
WHERE true
ON CONFLICT (dedup_key) DO NOTHING
"""

_CLAIM = f"""
UPDATE inbox
SET state = 'leased', lease_owner = ?, lease_expires_at = ?,
    attempts = attempts + 1, updated_at = ?
WHERE id IN (
    SELECT id FROM inbox
    WHERE origin = ?
      AND ((state = 'pending' AND next_attempt_at <= ?)
           OR (state = 'leased' AND lease_expires_at <= ?))
    ORDER BY next_attempt_at
    LIMIT ?
)
RETURNING {_RECORD_COLUMNS}, attempts
"""

_IDS_OF_KEYS = """
SELECT json_group_object(dedup_key, id) FROM inbox
WHERE dedup_key IN (SELECT value FROM json_each(?))
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the durability setting every user of the file relies on.

    WAL mode is a property of the file, set once by `SqliteInbox` under the
    writers' lock: switching a new file to WAL needs an exclusive lock that
    SQLite refuses at once, without waiting, when two processes start together.
    """
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class _Writer:
    """A connection and its own handle on the host-wide writers' lock."""

    def __init__(self, path: Path):
        self.conn = connect(path)
        # One open file description per writer: flock excludes threads of one process too.
        self._lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def initialize(self) -> None:
        """Put the file in WAL mode and create the table, once per process start."""
        self._lock(None)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.executescript(SCHEMA)
            # Files created before the sweeper (issue 6) have no origin column yet.
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(inbox)")}
            if "origin" not in columns:
                self.conn.execute("ALTER TABLE inbox ADD COLUMN origin TEXT NOT NULL DEFAULT 'callback'")
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _lock(self, timeout: float | None) -> None:
        if timeout is None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InboxUnavailable("the inbox's write lock is held too long") from None
                time.sleep(0.002)

    @contextmanager
    def transaction(self, lock_timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the host-wide lock (waited for at most `lock_timeout`)."""
        self._lock(lock_timeout)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.conn.close()
        os.close(self._lock_fd)


class _PendingAccept:
    __slots__ = ("record", "done", "result", "error")

    def __init__(self, record: CallbackRecord):
        self.record = record
        self.done = threading.Event()
        self.result: AcceptResult | None = None
        self.error: BaseException | None = None


class _GroupCommitter:
    """One thread per process that turns waiting accepts into one transaction."""

    def __init__(self, path: Path):
        self._path = path
        self._queue: queue.SimpleQueue[_PendingAccept] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._owner_pid: int | None = None
        self._start_lock = threading.Lock()

    def accept(self, record: CallbackRecord) -> AcceptResult:
        self._ensure_running()
        pending = _PendingAccept(record)
        self._queue.put(pending)
        if not pending.done.wait(ACCEPT_TIMEOUT_SECONDS):
            raise InboxUnavailable("timed out waiting for the inbox commit")
        if pending.error is not None:
            raise InboxUnavailable(str(pending.error)) from pending.error
        assert pending.result is not None
        return pending.result

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
        writer: _Writer | None = None
        while True:
            group = [self._queue.get()]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if writer is None:
                    writer = _Writer(self._path)
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


def _insert_group(writer: _Writer, records: list[CallbackRecord]) -> list[AcceptResult]:
    """Insert what is new in one transaction; a record whose key was there is a duplicate."""
    now = time.time()
    rows = json.dumps([
        (
            r.id, r.dedup_key, r.source, r.event_type, r.task_id, r.resolve_by, r.session_id,
            r.session_context, r.claimed_status, r.body, r.received_at, r.origin, r.received_at, now,
        )
        for r in records
    ])
    with writer.transaction() as conn:
        before = conn.total_changes
        conn.execute(_INSERT_GROUP, (rows,))
        inserted = conn.total_changes - before
    if inserted == len(records):
        return [AcceptResult(r.id, duplicate=False) for r in records]
    # Some keys were there already. Read outside the write lock: committed rows
    # are never removed while their callbacks can still repeat.
    (ids_json,) = writer.conn.execute(
        _IDS_OF_KEYS, (json.dumps([r.dedup_key for r in records]),)
    ).fetchone()
    stored = json.loads(ids_json)
    # Ids are random: the record whose own id was stored is the one accepted.
    return [AcceptResult(stored[r.dedup_key], duplicate=stored[r.dedup_key] != r.id) for r in records]


def _row_to_record(row: sqlite3.Row | tuple) -> CallbackRecord:
    return CallbackRecord(*row)


class SqliteInbox(Inbox):
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = _Writer(path)
        try:
            writer.initialize()
        finally:
            writer.close()
        self._committer = _GroupCommitter(path)
        self._local = threading.local()

    def _writer(self) -> _Writer:
        writer = getattr(self._local, "writer", None)
        if writer is None or getattr(self._local, "pid", None) != os.getpid():
            writer = _Writer(self.path)
            self._local.writer, self._local.pid = writer, os.getpid()
        return writer

    def accept(self, record: CallbackRecord) -> AcceptResult:
        return self._committer.accept(record)

    def check_writable(self) -> None:
        try:
            with self._writer().transaction(lock_timeout=BUSY_TIMEOUT_SECONDS):
                pass
        except (sqlite3.Error, OSError) as error:
            self.close()
            raise InboxUnavailable(str(error)) from error

    def claim(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[ClaimedRecord]:
        """Live callbacks first; records of the sweeper fill at most a quarter of a batch.

        So a sweep that finds many tasks never called back cannot take the
        Describe calls that live callbacks need: they keep at least three
        quarters of every batch, and all of it while the sweeper has nothing.
        """
        expires = now + lease_seconds
        with self._writer().transaction() as conn:
            rows = conn.execute(_CLAIM, (owner, expires, now, ORIGIN_CALLBACK, now, now, limit)).fetchall()
            swept = min(limit - len(rows), max(1, limit // 4))
            if swept > 0:
                rows += conn.execute(_CLAIM, (owner, expires, now, ORIGIN_SWEEPER, now, now, swept)).fetchall()
        return [ClaimedRecord(_row_to_record(r[:-1]), r[-1], expires) for r in rows]

    def lease_owners(self) -> set[str]:
        rows = self._writer().conn.execute("SELECT DISTINCT lease_owner FROM inbox WHERE state = 'leased'")
        return {row[0] for row in rows.fetchall() if row[0]}

    def release_leases(self, owner: str, now: float) -> int:
        with self._writer().transaction() as conn:
            cursor = conn.execute(
                "UPDATE inbox SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, "
                "next_attempt_at = ?, updated_at = ? WHERE state = 'leased' AND lease_owner = ?",
                (now, now, owner),
            )
        return cursor.rowcount

    def _settle(self, owner: str, ids: list[str], assignments: str, params: tuple) -> None:
        """Update records still leased by `owner`; a lost lease leaves them alone."""
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self._writer().transaction() as conn:
            conn.execute(
                f"UPDATE inbox SET {assignments}, lease_owner = NULL, lease_expires_at = NULL "
                f"WHERE lease_owner = ? AND state = 'leased' AND id IN ({marks})",
                (*params, owner, *ids),
            )

    def mark_done(self, owner: str, ids: list[str], now: float) -> None:
        self._settle(owner, ids, "state = 'done', updated_at = ?", (now,))

    def retry_later(self, owner: str, record_id: str, error: str, next_attempt_at: float, now: float) -> None:
        self._settle(
            owner, [record_id],
            "state = 'pending', last_error = ?, next_attempt_at = ?, updated_at = ?",
            (error, next_attempt_at, now),
        )

    def reject(self, owner: str, record_id: str, reason: str, now: float) -> None:
        self._settle(
            owner, [record_id], "state = 'rejected', reason = ?, updated_at = ?", (reason, now)
        )

    def bury(self, owner: str, record_id: str, error: str, now: float) -> None:
        self._settle(
            owner, [record_id], "state = 'dead', last_error = ?, updated_at = ?", (error, now)
        )

    def counts_by_state(self) -> dict[str, int]:
        rows = self._writer().conn.execute("SELECT state, COUNT(*) FROM inbox GROUP BY state")
        return dict(rows.fetchall())

    def rejections_by_reason(self) -> dict[str, int]:
        rows = self._writer().conn.execute(
            "SELECT reason, COUNT(*) FROM inbox WHERE state = 'rejected' GROUP BY reason"
        )
        return dict(rows.fetchall())

    def already_forwarded(self, event_ids: list[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = self._writer().conn.execute(
            "SELECT event_id FROM forwarded WHERE event_id IN (SELECT value FROM json_each(?))",
            (json.dumps(event_ids),),
        )
        return {row[0] for row in rows.fetchall()}

    def known_forwarded(self, event_ids: list[str]) -> set[str]:
        return self.already_forwarded(event_ids)

    def mark_forwarded(self, event_ids: list[str], now: float) -> None:
        if not event_ids:
            return
        with self._writer().transaction() as conn:
            conn.executemany(
                "INSERT INTO forwarded (event_id, forwarded_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(event_id, now) for event_id in event_ids],
            )

    def set_health(self, component: str, status: str, detail: str, now: float) -> None:
        with self._writer().transaction() as conn:
            conn.execute(
                "INSERT INTO health (component, status, detail, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (component) DO UPDATE SET status = excluded.status, "
                "detail = excluded.detail, updated_at = excluded.updated_at",
                (component, status, detail, now),
            )

    def health(self) -> dict[str, str]:
        rows = self._writer().conn.execute("SELECT component, status FROM health")
        return dict(rows.fetchall())

    def dead_letters(self, limit: int) -> list[tuple[CallbackRecord, int, str]]:
        rows = self._writer().conn.execute(
            f"SELECT {_RECORD_COLUMNS}, attempts, last_error FROM inbox WHERE state = 'dead' "
            "ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        )
        return [(_row_to_record(r[:-2]), r[-2], r[-1] or "") for r in rows.fetchall()]

    def replay_dead(self, ids: list[str] | None, now: float) -> int:
        only = "" if ids is None else "AND id IN (SELECT value FROM json_each(?))"
        params: tuple = (now, now) if ids is None else (now, now, json.dumps(ids))
        with self._writer().transaction() as conn:
            cursor = conn.execute(
                "UPDATE inbox SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
                f"WHERE state = 'dead' {only}",
                params,
            )
        return cursor.rowcount

    def close(self) -> None:
        writer = getattr(self._local, "writer", None)
        if writer is not None:
            writer.close()
            self._local.writer = None
