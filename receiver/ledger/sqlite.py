"""The forwarded-events ledger of one host, in the inbox's SQLite file.

`forwarded` holds the ids sent (the table the inbox kept before the ledger
was its own); `forwarding` the live claims of the host's worker processes,
each with its token and when it runs out. A claim step is one transaction.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from pathlib import Path

from receiver.ledger import ClaimStep, LedgerStore
from receiver.sqlite_file import SqliteFile, create_tables

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS forwarded (
    event_id     TEXT PRIMARY KEY,
    forwarded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS forwarding (
    event_id   TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

_IDS = "(SELECT value FROM json_each(?))"


class SqliteLedgerStore(LedgerStore):
    def __init__(self, path: Path):
        create_tables(path, SCHEMA)
        self._file = SqliteFile(path)

    def claim_in_order(self, event_ids: list[str], hold_seconds: float, now: float) -> ClaimStep:
        ids = json.dumps(event_ids)
        with self._file.transaction() as conn:
            forwarded = {row[0] for row in conn.execute(f"SELECT event_id FROM forwarded WHERE event_id IN {_IDS}",
                                                        (ids,))}
            held = {row[0] for row in conn.execute(
                f"SELECT event_id FROM forwarding WHERE event_id IN {_IDS} AND expires_at > ?", (ids, now))}
            claimed: dict[str, str] = {}
            blocked_at = None
            for event_id in event_ids:
                if event_id in forwarded:
                    continue
                if event_id in held:
                    blocked_at = event_id
                    break
                claimed[event_id] = uuid.uuid4().hex
            conn.executemany(
                "INSERT INTO forwarding (event_id, token, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (event_id) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at",
                [(event_id, token, now + hold_seconds) for event_id, token in claimed.items()],
            )
        stop = event_ids.index(blocked_at) if blocked_at is not None else len(event_ids)
        return ClaimStep(forwarded & set(event_ids[:stop]), claimed, blocked_at)

    def complete(self, event_ids: list[str], now: float) -> None:
        with self._file.transaction() as conn:
            conn.executemany("INSERT INTO forwarded (event_id, forwarded_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                             [(event_id, now) for event_id in event_ids])
            conn.execute(f"DELETE FROM forwarding WHERE event_id IN {_IDS}", (json.dumps(event_ids),))

    def release(self, held: dict[str, str]) -> None:
        try:
            with self._file.transaction() as conn:
                conn.executemany("DELETE FROM forwarding WHERE event_id = ? AND token = ?", list(held.items()))
        except (sqlite3.Error, OSError) as error:
            log.warning("could not release %d event claim(s) (they will run out): %s", len(held), error)

    def known_forwarded(self, event_ids: list[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = self._file.read(f"SELECT event_id FROM forwarded WHERE event_id IN {_IDS}", (json.dumps(event_ids),))
        return {row[0] for row in rows}

    def close(self) -> None:
        self._file.close()
