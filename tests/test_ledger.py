"""The forwarded-events ledger and the health board, the same algorithm over both backends.

SQLite: two stores on one file play two worker processes of one host.
DynamoDB (moto_server over real HTTP): two stores on one table play two hosts.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from receiver.health import DynamoHealthBoard, HealthBoard, SqliteHealthBoard
from receiver.idempotency import IdempotencyStore
from receiver.inbox.sqlite import SqliteInbox
from receiver.ledger import Claims, EventStillInProgress, ForwardedLedger
from receiver.ledger.dynamodb import DynamoLedgerStore
from receiver.ledger.sqlite import SqliteLedgerStore
from receiver.stores import health_board_beside, ledger_beside
from tests.moto_fixtures import MotoServer, create_table
from tests.servers import wait_until

HOLD = 30.0


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def new_ledger(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., ForwardedLedger]:
    """Opens the deployment's ledger once more, as another worker process or host would."""
    if backend == "sqlite":
        path = tmp_path / "inbox.db"
        return lambda **kw: ForwardedLedger(SqliteLedgerStore(path), **kw)
    moto: MotoServer = request.getfixturevalue("moto_server")
    table = create_table(moto, f"idempotency-{uuid.uuid4().hex[:8]}")
    return lambda **kw: ForwardedLedger(DynamoLedgerStore(IdempotencyStore(table)), **kw)


@pytest.fixture
def new_board(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], HealthBoard]:
    if backend == "sqlite":
        return lambda: SqliteHealthBoard(tmp_path / "inbox.db")
    moto: MotoServer = request.getfixturevalue("moto_server")
    table = create_table(moto, f"idempotency-{uuid.uuid4().hex[:8]}")
    return lambda: DynamoHealthBoard(IdempotencyStore(table))


def test_an_event_claimed_by_one_worker_is_not_sent_by_another(new_ledger):
    worker_a, worker_b = new_ledger(), new_ledger()
    claims_a = worker_a.claim(["e1", "e2"], HOLD, time.time())
    assert claims_a.forwarded == set() and set(claims_a.held) == {"e1", "e2"}
    answer: dict[str, Claims] = {}
    waiting = threading.Thread(target=lambda: answer.setdefault("b", worker_b.claim(["e2", "e3"], HOLD, time.time())))
    waiting.start()
    # b waits for a's claim of e2: its answer must not come before a settles
    assert not wait_until_or_false(lambda: "b" in answer, 0.5)
    worker_a.settle(claims_a, ["e1", "e2"], time.time())
    waiting.join(timeout=10)
    assert answer["b"].forwarded == {"e2"} and set(answer["b"].held) == {"e3"}  # e3 is b's to send
    worker_b.settle(answer["b"], ["e3"], time.time())
    again = worker_a.claim(["e1", "e2", "e3"], HOLD, time.time())
    assert again.forwarded == {"e1", "e2", "e3"} and again.held == {}


def test_what_the_sink_did_not_take_is_free_at_once(new_ledger):
    worker_a, worker_b = new_ledger(wait_seconds=0.5), new_ledger(wait_seconds=0.5)
    claims = worker_a.claim(["e-sent", "e-refused"], HOLD, time.time())
    worker_a.settle(claims, ["e-sent"], time.time())  # the sink took one of the two
    retry = worker_b.claim(["e-sent", "e-refused"], HOLD, time.time())  # no wait: would raise past 0.5 s
    assert retry.forwarded == {"e-sent"} and set(retry.held) == {"e-refused"}


def test_the_claim_of_a_worker_that_died_runs_out(new_ledger):
    dying, successor = new_ledger(), new_ledger()
    now = time.time()
    dying.claim(["e-dead"], 0.5, now)  # then it dies before sending
    wait_until(lambda: bool(successor.claim(["e-dead"], HOLD, time.time()).held), 10, "the claim to run out")


def test_a_claim_that_outlives_the_wait_fails_the_pass_and_frees_what_it_took(new_ledger):
    holder, other = new_ledger(), new_ledger(wait_seconds=0.3)
    holder.claim(["e-slow"], HOLD, time.time())
    with pytest.raises(EventStillInProgress):
        other.claim(["e-free", "e-slow"], HOLD, time.time())
    assert set(holder.claim(["e-free"], HOLD, time.time()).held) == {"e-free"}  # released by the failed pass


def test_a_sent_event_is_never_released_even_if_the_pass_fails_later(new_ledger):
    worker, other = new_ledger(), new_ledger(wait_seconds=0.3)
    claims = worker.claim(["e-out", "e-kept"], HOLD, time.time())
    worker.settle(claims, ["e-out"], time.time())
    worker.release(claims)  # a second release of the same pass changes nothing
    assert other.claim(["e-out"], HOLD, time.time()).forwarded == {"e-out"}


def test_events_recorded_forwarded_after_a_crash_are_not_sent_again(new_ledger, backend):
    ledger = new_ledger()
    ledger.record_forwarded(["e-recovered"], time.time())
    assert ledger.claim(["e-recovered"], HOLD, time.time()).forwarded == {"e-recovered"}
    # The sweeper's cheap read: SQLite answers it, the DynamoDB table cannot without a read per id.
    assert ledger.known_forwarded(["e-recovered", "e-other"]) == ({"e-recovered"} if backend == "sqlite" else set())


def test_the_health_board_shows_each_components_latest_status(new_board):
    board = new_board()
    assert board.statuses() == {}
    board.post("sink", "failing", "ClientError", time.time())
    board.post("tencentcloud", "ok", "", time.time())
    board.post("sink", "ok", "", time.time())
    assert new_board().statuses() == {"sink": "ok", "tencentcloud": "ok"}  # read by another process


def test_the_ledger_and_board_beside_a_sqlite_inbox_share_its_file(tmp_path):
    inbox = SqliteInbox(tmp_path / "inbox.db")
    ledger_beside(inbox).record_forwarded(["e1"], time.time())
    health_board_beside(inbox).post("sink", "ok", "", time.time())
    assert ForwardedLedger(SqliteLedgerStore(tmp_path / "inbox.db")).known_forwarded(["e1"]) == {"e1"}
    assert SqliteHealthBoard(tmp_path / "inbox.db").statuses() == {"sink": "ok"}


def wait_until_or_false(condition: Callable[[], bool], seconds: float) -> bool:
    """True as soon as `condition` holds, False if it did not within `seconds` (a bound, not a sleep)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
