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

Besides the committer, each process holds one more writer (claims,
settlements, health) and one reader (counts, health, the forwarded ledger),
whatever its worker class: never one per thread or greenlet, which leaked a
connection and a lock file per health check under gevent.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from receiver.blocking import run_blocking
from receiver.inbox import (
    PRIORITY_FIRST_CALL,
    PRIORITY_LOOK_AGAIN,
    PRIORITY_SWEPT,
    AcceptResult,
    ClaimedRecord,
    Inbox,
    InboxUnavailable,
    Outcome,
    Settlement,
)
from receiver.records import ORIGIN_SWEEPER, CallbackRecord

BUSY_TIMEOUT_SECONDS = 5.0
ACCEPT_TIMEOUT_SECONDS = 10.0
MAX_GROUP = 256
# PRAGMA user_version of the current layout: 2 added copy-aware keys and priorities (issue 9).
SCHEMA_VERSION = 2

_INBOX_TABLE = """
CREATE TABLE IF NOT EXISTS inbox (
    id               TEXT PRIMARY KEY,
    dedup_key        TEXT NOT NULL,
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
    origin           TEXT NOT NULL DEFAULT 'callback',
    holds_key        INTEGER NOT NULL DEFAULT 1,
    copies           INTEGER NOT NULL DEFAULT 0,
    patience_from    REAL,
    priority         INTEGER NOT NULL DEFAULT 0
)
"""

SCHEMA = _INBOX_TABLE + """;
CREATE UNIQUE INDEX IF NOT EXISTS inbox_held_key ON inbox (dedup_key) WHERE holds_key = 1;
CREATE INDEX IF NOT EXISTS inbox_due ON inbox (state, priority, next_attempt_at);
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
_V1_COLUMNS = f"{_RECORD_COLUMNS}, state, attempts, next_attempt_at, lease_owner, lease_expires_at, last_error, " \
    "reason, updated_at"

# One statement per group, whatever its size: each SQLite call lets request
# threads take the GIL, and the committer then waits to get it back while it
# holds the host's write lock. The group travels as one JSON array. A copy of
# a record that holds its key updates that record instead (counted while the
# record is pending or leased), and RETURNING says which id each key has now.
_INSERT_GROUP = f"""
INSERT INTO inbox ({_RECORD_COLUMNS}, next_attempt_at, updated_at, patience_from, priority)
SELECT {", ".join(f"json_extract(value, '$[{i}]')" for i in range(16))}
FROM json_each(?)
WHERE true
ON CONFLICT (dedup_key) WHERE holds_key = 1 DO UPDATE SET
    copies = copies + (state IN ('pending', 'leased')),
    patience_from = CASE WHEN state IN ('pending', 'leased') THEN excluded.received_at ELSE patience_from END
RETURNING dedup_key, id
"""

_CLAIM = f"""
UPDATE inbox
SET state = 'leased', lease_owner = ?, lease_expires_at = ?,
    attempts = attempts + 1, updated_at = ?
WHERE id IN (
    SELECT id FROM inbox
    WHERE (state = 'pending' AND next_attempt_at <= ?)
       OR (state = 'leased' AND lease_expires_at <= ?)
    ORDER BY priority, next_attempt_at
    LIMIT ?
)
RETURNING {_RECORD_COLUMNS}, attempts, priority, patience_from
"""

# Settling, one statement per outcome; each binds (..., owner, id). A record
# that lets go of its key but had copies answered duplicate meanwhile is
# reconciled once more instead (module docstring of receiver.inbox).
_LEASED_BY = "lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ? AND state = 'leased' AND id = ?"
_AGAIN_IF_COPIES = """
    state = CASE WHEN copies > 0 THEN 'pending' ELSE {final} END,
    holds_key = CASE WHEN copies > 0 OR origin = 'sweeper' THEN 1 ELSE 0 END,
    attempts = CASE WHEN copies > 0 THEN 0 ELSE attempts END,
    next_attempt_at = CASE WHEN copies > 0 THEN ? ELSE next_attempt_at END,
    priority = CASE WHEN copies > 0 THEN 0 ELSE priority END,
    copies = 0"""
_SETTLE = {
    Outcome.DONE: (f"UPDATE inbox SET state = 'done', updated_at = ?, {_LEASED_BY}", ("now",)),
    Outcome.UNCONFIRMED: (
        f"UPDATE inbox SET {_AGAIN_IF_COPIES.format(final=repr('done'))}, updated_at = ?, {_LEASED_BY}",
        ("now", "now"),
    ),
    Outcome.REJECTED: (
        f"UPDATE inbox SET {_AGAIN_IF_COPIES.format(final=repr('rejected'))}, reason = ?, updated_at = ?, "
        f"{_LEASED_BY}",
        ("now", "detail", "now"),
    ),
    Outcome.RETRY: (
        "UPDATE inbox SET state = 'pending', last_error = ?, next_attempt_at = ?, updated_at = ?, "
        f"priority = CASE WHEN origin = 'sweeper' THEN {PRIORITY_SWEPT} ELSE {PRIORITY_LOOK_AGAIN} END, "
        f"{_LEASED_BY}",
        ("detail", "next_attempt_at", "now"),
    ),
    Outcome.DEAD: (f"UPDATE inbox SET state = 'dead', last_error = ?, updated_at = ?, {_LEASED_BY}",
                   ("detail", "now")),
    # Not worked on: the claim did not count.
    Outcome.DEFERRED: (f"UPDATE inbox SET state = 'pending', attempts = attempts - 1, {_LEASED_BY}", ()),
}


def _text(value: bytes) -> str:
    # A row written before the door was strict may hold invalid UTF-8 (a lone
    # surrogate once went through json_extract): read it anyway, so that one
    # bad row can never stop every claim; the worker rejects or buries it alone.
    return value.decode("utf-8", "replace")


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the durability setting every user of the file relies on.

    WAL mode is a property of the file, set once by `SqliteInbox` under the
    writers' lock: switching a new file to WAL needs an exclusive lock that
    SQLite refuses at once, without waiting, when two processes start together.
    """
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    conn.text_factory = _text
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class _Writer:
    """A connection and its own handle on the host-wide writers' lock."""

    def __init__(self, path: Path):
        self.conn = connect(path)
        # One open file description per writer: flock excludes threads of one process too.
        self._lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def initialize(self) -> None:
        """Put the file in WAL mode and create or upgrade the tables, once per process start."""
        self._lock(None)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            (version,) = self.conn.execute("PRAGMA user_version").fetchone()
            exists = self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'inbox'").fetchone()
            if exists and version < SCHEMA_VERSION:
                self._upgrade()
            self.conn.executescript(SCHEMA)
            if version != SCHEMA_VERSION:
                # Only then: a write here needs the database lock, and a process booting
                # while another holds it (a long transaction) must still come up.
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _upgrade(self) -> None:
        """From layout 1 (a plain unique key, no priorities): rebuild the table, keeping every row."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(inbox)")}
        if "origin" not in columns:  # files from before the sweeper (issue 6)
            self.conn.execute("ALTER TABLE inbox ADD COLUMN origin TEXT NOT NULL DEFAULT 'callback'")
        self.conn.executescript(f"""
            BEGIN;
            ALTER TABLE inbox RENAME TO inbox_v1;
            DROP INDEX IF EXISTS inbox_due;
            DROP INDEX IF EXISTS inbox_task;
            {_INBOX_TABLE};
            INSERT INTO inbox ({_V1_COLUMNS}, patience_from, priority)
            SELECT {_V1_COLUMNS}, received_at, CASE WHEN origin = 'sweeper' THEN {PRIORITY_SWEPT} ELSE 0 END
            FROM inbox_v1;
            DROP TABLE inbox_v1;
            COMMIT;
        """)

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


class _PerProcess:
    """One resource per process, used by one thread or greenlet at a time.

    Not per thread: under gevent every request is a greenlet of its own, and a
    `threading.local` connection per health check once used up the process's
    file descriptors. A fork (gunicorn's workers) opens its own.
    """

    def __init__(self, open_resource: Callable[[], Any], close_resource: Callable[[Any], None]):
        self._open = open_resource
        self._close = close_resource
        self._lock = threading.Lock()
        self._resource: Any = None
        self._pid: int | None = None

    @contextmanager
    def use(self) -> Iterator[Any]:
        with self._lock:
            if self._resource is None or self._pid != os.getpid():
                self._resource, self._pid = self._open(), os.getpid()
            try:
                yield self._resource
            except (sqlite3.Error, OSError):
                self._discard()  # reopened on next use: a broken connection is not kept
                raise

    def _discard(self) -> None:
        resource, self._resource = self._resource, None
        if resource is not None and self._pid == os.getpid():
            try:
                self._close(resource)
            except (sqlite3.Error, OSError):
                pass

    def close(self) -> None:
        with self._lock:
            self._discard()


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
    """Insert what is new in one transaction; a record whose key is held already is a duplicate."""
    now = time.time()
    rows = json.dumps([
        (
            r.id, r.dedup_key, r.source, r.event_type, r.task_id, r.resolve_by, r.session_id,
            r.session_context, r.claimed_status, r.body, r.received_at, r.origin, r.received_at, now,
            r.received_at, PRIORITY_SWEPT if r.origin == ORIGIN_SWEEPER else PRIORITY_FIRST_CALL,
        )
        for r in records
    ])
    with writer.transaction() as conn:
        stored = dict(conn.execute(_INSERT_GROUP, (rows,)).fetchall())
    # Ids are random: the record whose own id was stored is the one accepted.
    return [AcceptResult(stored[r.dedup_key], duplicate=stored[r.dedup_key] != r.id) for r in records]


def _claimed(row: tuple, lease_expires_at: float) -> ClaimedRecord:
    *record, attempts, priority, patience_from = row
    return ClaimedRecord(CallbackRecord(*record), attempts, lease_expires_at, priority, patience_from)


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
        # Claims, settlements and health writes; reads apart, so a scrape never waits for a write.
        self._writer = _PerProcess(lambda: _Writer(path), _Writer.close)
        self._reader = _PerProcess(lambda: connect(path), sqlite3.Connection.close)

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._reader.use() as conn:
            return conn.execute(sql, params).fetchall()

    def accept(self, record: CallbackRecord) -> AcceptResult:
        return self._committer.accept(record)

    def accept_many(self, records: list[CallbackRecord]) -> list[AcceptResult]:
        return self._committer.accept_many(records)

    def check_writable(self) -> None:
        try:
            with self._writer.use() as writer, writer.transaction(lock_timeout=BUSY_TIMEOUT_SECONDS):
                pass
        except (sqlite3.Error, OSError) as error:
            raise InboxUnavailable(str(error)) from error

    def claim(self, owner: str, limit: int, lease_seconds: float, now: float, wait: bool = True) -> list[ClaimedRecord]:
        """Due records by priority: first calls, then look-agains, then swept tasks (SPEC 6)."""
        expires = now + lease_seconds
        with self._writer.use() as writer, writer.transaction() as conn:
            rows = conn.execute(_CLAIM, (owner, expires, now, now, now, limit)).fetchall()
        claimed = [_claimed(row, expires) for row in rows]
        return sorted(claimed, key=lambda c: (c.priority, c.record.id))

    def lease_owners(self) -> set[str]:
        rows = self._read("SELECT DISTINCT lease_owner FROM inbox WHERE state = 'leased'")
        return {row[0] for row in rows if row[0]}

    def release_leases(self, owner: str, now: float) -> int:
        with self._writer.use() as writer, writer.transaction() as conn:
            cursor = conn.execute(
                "UPDATE inbox SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, "
                "next_attempt_at = ?, updated_at = ? WHERE state = 'leased' AND lease_owner = ?",
                (now, now, owner),
            )
        return cursor.rowcount

    def extend_leases(self, owner: str, ids: list[str], lease_seconds: float, now: float) -> None:
        if not ids:
            return
        with self._writer.use() as writer, writer.transaction() as conn:
            conn.execute(
                "UPDATE inbox SET lease_expires_at = ? WHERE state = 'leased' AND lease_owner = ? "
                "AND id IN (SELECT value FROM json_each(?))",
                (now + lease_seconds, owner, json.dumps(ids)),
            )

    def settle(self, owner: str, settlements: list[Settlement], now: float) -> None:
        if not settlements:
            return
        values = {"now": now}
        with self._writer.use() as writer, writer.transaction() as conn:
            for settlement in settlements:
                sql, names = _SETTLE[settlement.outcome]
                values.update(detail=settlement.detail, next_attempt_at=settlement.next_attempt_at)
                conn.execute(sql, (*(values[name] for name in names), owner, settlement.record_id))

    def counts_by_state(self) -> dict[str, int]:
        return dict(self._read("SELECT state, COUNT(*) FROM inbox GROUP BY state"))

    def rejections_by_reason(self) -> dict[str, int]:
        return dict(self._read("SELECT reason, COUNT(*) FROM inbox WHERE state = 'rejected' GROUP BY reason"))

    def already_forwarded(self, event_ids: list[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = self._read(
            "SELECT event_id FROM forwarded WHERE event_id IN (SELECT value FROM json_each(?))",
            (json.dumps(event_ids),),
        )
        return {row[0] for row in rows}

    def known_forwarded(self, event_ids: list[str]) -> set[str]:
        return self.already_forwarded(event_ids)

    def mark_forwarded(self, event_ids: list[str], now: float) -> None:
        if not event_ids:
            return
        with self._writer.use() as writer, writer.transaction() as conn:
            conn.executemany(
                "INSERT INTO forwarded (event_id, forwarded_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(event_id, now) for event_id in event_ids],
            )

    def set_health(self, component: str, status: str, detail: str, now: float) -> None:
        with self._writer.use() as writer, writer.transaction() as conn:
            conn.execute(
                "INSERT INTO health (component, status, detail, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (component) DO UPDATE SET status = excluded.status, "
                "detail = excluded.detail, updated_at = excluded.updated_at",
                (component, status, detail, now),
            )

    def health(self) -> dict[str, str]:
        return dict(self._read("SELECT component, status FROM health"))

    def dead_letters(self, limit: int) -> list[tuple[CallbackRecord, int, str]]:
        rows = self._read(
            f"SELECT {_RECORD_COLUMNS}, attempts, last_error FROM inbox WHERE state = 'dead' "
            "ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        )
        return [(CallbackRecord(*r[:-2]), r[-2], r[-1] or "") for r in rows]

    def replay_dead(self, ids: list[str] | None, now: float) -> int:
        only = "" if ids is None else "AND id IN (SELECT value FROM json_each(?))"
        params: tuple = (now, now) if ids is None else (now, now, json.dumps(ids))
        with self._writer.use() as writer, writer.transaction() as conn:
            cursor = conn.execute(
                "UPDATE inbox SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
                f"WHERE state = 'dead' {only}",
                params,
            )
        return cursor.rowcount

    def close(self) -> None:
        self._writer.close()
        self._reader.close()
