"""SQLite inbox for one host: WAL, synchronous=FULL, group commit.

Every gunicorn worker process and every worker process on the host opens the
same file. Callbacks are stored by a group committer per process
(`receiver.inbox.sqlite_accept`): a burst costs one fsync, not one per
callback.

Writers of all processes take turns through the host-wide lock of
`receiver.sqlite_file`. Besides the committer, each process holds one more
writer (claims, settlements) and one reader (counts, dead letters), whatever
its worker class: never one per thread or greenlet, which leaked a
connection and a lock file per health check under gevent. The
forwarded-events ledger (`receiver.ledger.sqlite`) and the health board
(`receiver.health`) keep their tables in the same file.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from receiver.inbox import (
    PRIORITY_LOOK_AGAIN,
    PRIORITY_SWEPT,
    RETRY_PRIORITY,
    AcceptResult,
    ClaimedRecord,
    Inbox,
    InboxUnavailable,
    Outcome,
    Settlement,
    StoredRecord,
    in_claim_order,
    priority_sql,
)
from receiver.inbox.sqlite_accept import RECORD_COLUMNS, GroupCommitter
from receiver.records import CallbackRecord
from receiver.sqlite_file import BUSY_TIMEOUT_SECONDS, SqliteFile, Writer

# PRAGMA user_version of the current layout: 2 added copy-aware keys and priorities (issue 9),
# 3 the count of copies answered duplicate (for `inspect`).
SCHEMA_VERSION = 3

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
    priority         INTEGER NOT NULL DEFAULT 0,
    duplicates       INTEGER NOT NULL DEFAULT 0
)
"""

SCHEMA = _INBOX_TABLE + """;
CREATE UNIQUE INDEX IF NOT EXISTS inbox_held_key ON inbox (dedup_key) WHERE holds_key = 1;
CREATE INDEX IF NOT EXISTS inbox_due ON inbox (state, priority, next_attempt_at);
CREATE INDEX IF NOT EXISTS inbox_task ON inbox (source, task_id);
"""

_RECORD_COLUMNS = RECORD_COLUMNS
_V1_COLUMNS = f"{_RECORD_COLUMNS}, state, attempts, next_attempt_at, lease_owner, lease_expires_at, last_error, " \
    "reason, updated_at"

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
        f"priority = {priority_sql(RETRY_PRIORITY, PRIORITY_LOOK_AGAIN)}, "
        f"{_LEASED_BY}",
        ("detail", "next_attempt_at", "now"),
    ),
    Outcome.DEAD: (f"UPDATE inbox SET state = 'dead', last_error = ?, updated_at = ?, {_LEASED_BY}",
                   ("detail", "now")),
    # Not worked on: the claim did not count.
    Outcome.DEFERRED: (f"UPDATE inbox SET state = 'pending', attempts = attempts - 1, {_LEASED_BY}", ()),
}


def _initialize(path: Path) -> None:
    """Put the file in WAL mode and create or upgrade the tables, once per process start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = Writer(path)
    try:
        with writer.locked() as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'inbox'").fetchone()
            if exists and version < 2:
                _upgrade(conn)  # rebuilt with the current table
            elif exists and version < 3:
                conn.execute("ALTER TABLE inbox ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0")
            conn.executescript(SCHEMA)
            if version != SCHEMA_VERSION:
                # Only then: a write here needs the database lock, and a process booting
                # while another holds it (a long transaction) must still come up.
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        writer.close()


def _upgrade(conn: sqlite3.Connection) -> None:
    """From layout 1 (a plain unique key, no priorities): rebuild the table, keeping every row."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(inbox)")}
    if "origin" not in columns:  # files from before the sweeper (issue 6)
        conn.execute("ALTER TABLE inbox ADD COLUMN origin TEXT NOT NULL DEFAULT 'callback'")
    conn.executescript(f"""
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


def _claimed(row: tuple, lease_expires_at: float) -> ClaimedRecord:
    *record, attempts, priority, patience_from = row
    return ClaimedRecord(CallbackRecord(*record), attempts, lease_expires_at, priority, patience_from)


class SqliteInbox(Inbox):
    def __init__(self, path: Path):
        self.path = path
        _initialize(path)
        self._committer = GroupCommitter(path)
        # Claims and settlements; reads apart, so a scrape never waits for a write.
        self._file = SqliteFile(path)

    def accept(self, record: CallbackRecord) -> AcceptResult:
        return self._committer.accept(record)

    def accept_many(self, records: list[CallbackRecord]) -> list[AcceptResult]:
        return self._committer.accept_many(records)

    def check_writable(self) -> None:
        try:
            with self._file.transaction(lock_timeout=BUSY_TIMEOUT_SECONDS):
                pass
        except (sqlite3.Error, OSError) as error:
            raise InboxUnavailable(str(error)) from error

    def claim(self, owner: str, limit: int, lease_seconds: float, now: float, wait: bool = True) -> list[ClaimedRecord]:
        """Due records by priority: first calls, then look-agains, then swept tasks (SPEC 6)."""
        expires = now + lease_seconds
        with self._file.transaction() as conn:
            rows = conn.execute(_CLAIM, (owner, expires, now, now, now, limit)).fetchall()
        return in_claim_order([_claimed(row, expires) for row in rows])

    def lease_owners(self) -> set[str]:
        rows = self._file.read("SELECT DISTINCT lease_owner FROM inbox WHERE state = 'leased'")
        return {row[0] for row in rows if row[0]}

    def release_leases(self, owner: str, now: float) -> int:
        with self._file.transaction() as conn:
            cursor = conn.execute(
                "UPDATE inbox SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, "
                "next_attempt_at = ?, updated_at = ? WHERE state = 'leased' AND lease_owner = ?",
                (now, now, owner),
            )
        return cursor.rowcount

    def extend_leases(self, owner: str, ids: list[str], lease_seconds: float, now: float) -> None:
        if not ids:
            return
        with self._file.transaction() as conn:
            conn.execute(
                "UPDATE inbox SET lease_expires_at = ? WHERE state = 'leased' AND lease_owner = ? "
                "AND id IN (SELECT value FROM json_each(?))",
                (now + lease_seconds, owner, json.dumps(ids)),
            )

    def settle(self, owner: str, settlements: list[Settlement], now: float) -> None:
        if not settlements:
            return
        values = {"now": now}
        with self._file.transaction() as conn:
            for settlement in settlements:
                sql, names = _SETTLE[settlement.outcome]
                values.update(detail=settlement.detail, next_attempt_at=settlement.next_attempt_at)
                conn.execute(sql, (*(values[name] for name in names), owner, settlement.record_id))

    # --- InboxStats and DeadLetterStore ----------------------------------------------------

    def counts_by_state(self) -> dict[str, int]:
        return dict(self._file.read("SELECT state, COUNT(*) FROM inbox GROUP BY state"))

    def rejections_by_reason(self) -> dict[str, int]:
        return dict(self._file.read("SELECT reason, COUNT(*) FROM inbox WHERE state = 'rejected' GROUP BY reason"))

    def oldest_pending_age(self, now: float) -> float | None:
        [(oldest,)] = self._file.read("SELECT MIN(received_at) FROM inbox WHERE state IN ('pending', 'leased')")
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def dead_letters(self, limit: int) -> list[tuple[CallbackRecord, int, str]]:
        rows = self._file.read(
            f"SELECT {_RECORD_COLUMNS}, attempts, last_error FROM inbox WHERE state = 'dead' "
            "ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        )
        return [(CallbackRecord(*r[:-2]), r[-2], r[-1] or "") for r in rows]

    def replay_dead(self, ids: list[str] | None, now: float) -> int:
        return self.replay([stored.record.id for stored in self.settled_records(("dead",), ids=ids)], now)

    # --- RecordLookup ----------------------------------------------------------------------

    def records_of_task(self, task_id: str) -> list[StoredRecord]:
        rows = self._file.read(f"SELECT {_STORED_COLUMNS} FROM inbox WHERE task_id = ? ORDER BY received_at, id",
                               (task_id,))
        return [_stored(row) for row in rows]

    def settled_records(self, states: tuple[str, ...], reason: str | None = None, source: str | None = None,
                        since: float | None = None, until: float | None = None,
                        ids: list[str] | None = None) -> list[StoredRecord]:
        where = ["state IN (SELECT value FROM json_each(?))"]
        params: list[Any] = [json.dumps(list(states))]
        for clause, value in (("reason = ?", reason), ("source = ?", source), ("received_at >= ?", since),
                              ("received_at < ?", until)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if ids is not None:
            where.append("id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(ids))
        rows = self._file.read(f"SELECT {_STORED_COLUMNS} FROM inbox WHERE {' AND '.join(where)} "
                               "ORDER BY received_at, id", tuple(params))
        return [_stored(row) for row in rows]

    def replay(self, ids: list[str], now: float) -> int:
        if not ids:
            return 0
        with self._file.transaction() as conn:
            cursor = conn.execute(
                "UPDATE inbox SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?, "
                f"reason = NULL, priority = {priority_sql(RETRY_PRIORITY, PRIORITY_LOOK_AGAIN)} "
                "WHERE state IN ('dead', 'rejected') AND id IN (SELECT value FROM json_each(?))",
                (now, now, json.dumps(ids)),
            )
        return cursor.rowcount

    def close(self) -> None:
        self._file.close()


_STORED_COLUMNS = f"{_RECORD_COLUMNS}, state, attempts, reason, last_error, duplicates, updated_at"


def _stored(row: tuple) -> StoredRecord:
    *record, state, attempts, reason, last_error, duplicates, updated_at = row
    return StoredRecord(CallbackRecord(*record), state, attempts, reason, last_error, duplicates, updated_at)
