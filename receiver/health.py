"""The health board: workers and the sweeper post how Tencent Cloud and the sink answer; every web
process's /readyz reads it.

Beside the inbox: in its SQLite file on one host, in the idempotency table
(one `health` item) for several.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from receiver.inbox import Inbox, InboxUnavailable
from receiver.sqlite_file import SqliteFile, create_tables

if TYPE_CHECKING:
    from receiver.idempotency import IdempotencyStore

log = logging.getLogger(__name__)


class HealthUnavailable(Exception):
    """The board cannot be read now."""


class HealthBoard(ABC):
    @abstractmethod
    def post(self, component: str, status: str, detail: str, now: float) -> None:
        """`component` ("sink", "tencentcloud", "sweeper") is `status` ("ok", "failing"), for `detail`."""

    @abstractmethod
    def statuses(self) -> dict[str, str]:
        """The latest status of each component posted; raises HealthUnavailable."""

    @abstractmethod
    def close(self) -> None: ...


def readiness(inbox: Inbox, board: HealthBoard) -> dict[str, str]:
    """The /readyz checks: `inbox` ok or unavailable; `sink` and `tencentcloud` ok, failing or unknown, as the
    workers last posted them ("unknown" until one has: the web process itself calls neither)."""
    try:
        inbox.check_writable()
        reported = board.statuses()
    except (InboxUnavailable, HealthUnavailable):
        return {"inbox": "unavailable", "sink": "unknown", "tencentcloud": "unknown"}
    return {"inbox": "ok", "sink": reported.get("sink", "unknown"),
            "tencentcloud": reported.get("tencentcloud", "unknown")}


class HealthReporter:
    """Posts a component's status when it changes, not on every call; never fails its caller."""

    def __init__(self, board: HealthBoard, clock: Callable[[], float]):
        self._board = board
        self._clock = clock
        self._posted: dict[str, str] = {}

    def report(self, component: str, status: str, detail: str) -> None:
        if self._posted.get(component) == status:
            return
        self._posted[component] = status
        try:
            self._board.post(component, status, detail, self._clock())
        except Exception:  # noqa: BLE001 - health is advisory; never fail a round for it
            log.warning("could not record %s health", component)


SCHEMA = """
CREATE TABLE IF NOT EXISTS health (
    component  TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


class SqliteHealthBoard(HealthBoard):
    def __init__(self, path: Path):
        create_tables(path, SCHEMA)
        self._file = SqliteFile(path)

    def post(self, component: str, status: str, detail: str, now: float) -> None:
        with self._file.transaction() as conn:
            conn.execute(
                "INSERT INTO health (component, status, detail, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (component) DO UPDATE SET status = excluded.status, "
                "detail = excluded.detail, updated_at = excluded.updated_at",
                (component, status, detail, now),
            )

    def statuses(self) -> dict[str, str]:
        try:
            return dict(self._file.read("SELECT component, status FROM health"))
        except Exception as error:  # noqa: BLE001 - sqlite3 and OS errors alike: /readyz answers 503
            raise HealthUnavailable(str(error)) from error

    def close(self) -> None:
        self._file.close()


HEALTH_KEY = "health"


class DynamoHealthBoard(HealthBoard):
    def __init__(self, store: IdempotencyStore):
        self.store = store

    def post(self, component: str, status: str, detail: str, now: float) -> None:
        self.store.set_attribute(HEALTH_KEY, component, {"status": status, "detail": detail, "updated_at": repr(now)})

    def statuses(self) -> dict[str, str]:
        try:
            reported = self.store.get(HEALTH_KEY)
        except (ClientError, BotoCoreError) as error:
            raise HealthUnavailable(f"idempotency table: {error}") from error
        return {name: value["status"] for name, value in reported.items() if isinstance(value, dict)}

    def close(self) -> None:
        pass  # the idempotency store's client needs no closing
