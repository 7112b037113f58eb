"""The host's SQLite file: connections, the writers' lock every process takes turns through, one resource per process.

The inbox, the forwarded-events ledger and the health board of a one-host
deployment share one file (`INBOX_URL=sqlite:///...`), opened by every web and
worker process of the host.

Writers of all processes take turns through an flock on ``<file>.lock``
before SQLite's own write lock. SQLite's busy handler polls with sleeps of
growing length, so two busy processes starve each other and leave the CPU
idle; a blocked flock wakes the moment the holder lets go, and the kernel
drops it when a process dies, even by kill -9.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_SECONDS = 5.0


def _text(value: bytes) -> str:
    # A row written before the door was strict may hold invalid UTF-8 (a lone
    # surrogate once went through json_extract): read it anyway, so that one
    # bad row can never stop every claim; the worker rejects or buries it alone.
    return value.decode("utf-8", "replace")


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the durability setting every user of the file relies on.

    WAL mode is a property of the file, set once under the writers' lock
    (`Writer.locked`): switching a new file to WAL needs an exclusive lock that
    SQLite refuses at once, without waiting, when two processes start together.
    """
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    conn.text_factory = _text
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class Writer:
    """A connection and its own handle on the host-wide writers' lock."""

    def __init__(self, path: Path):
        self.conn = connect(path)
        # One open file description per writer: flock excludes threads of one process too.
        self._lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)

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
                    raise TimeoutError("the SQLite file's write lock is held too long") from None
                time.sleep(0.002)

    @contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """The writers' lock without a transaction: for creating tables, once per process start."""
        self._lock(None)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            yield self.conn
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

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


def create_tables(path: Path, schema: str) -> None:
    """Create what `schema` creates (IF NOT EXISTS), under the writers' lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = Writer(path)
    try:
        with writer.locked() as conn:
            conn.executescript(schema)
    finally:
        writer.close()


class PerProcess:
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


class SqliteFile:
    """A process's writer and reader of the host's file: never one per thread or greenlet."""

    def __init__(self, path: Path):
        self.path = path
        self._writer = PerProcess(lambda: Writer(path), Writer.close)
        self._reader = PerProcess(lambda: connect(path), sqlite3.Connection.close)

    @contextmanager
    def transaction(self, lock_timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        with self._writer.use() as writer, writer.transaction(lock_timeout) as conn:
            yield conn

    def read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._reader.use() as conn:
            return conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self._writer.close()
        self._reader.close()
