from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import GunicornServer

# Fixtures shared by several modules and kept in helper modules: pytest finds them by name.
pytest_plugins = ["tests.moto_fixtures"]

MPS_KEYS = ("mps-key-old", "mps-key-new")
VOD_KEY = "vod-sign-key"
AMS_SEED = "ams-seed"
TOKENS = ("token-old", "token-new")


def receiver_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "INBOX_URL": f"sqlite:///{tmp_path}/inbox.db",
        "MPS_NOTIFY_KEYS": ",".join(MPS_KEYS),
        "VOD_SIGN_KEYS": VOD_KEY,
        "AMS_SEEDS": AMS_SEED,
        "CALLBACK_TOKENS": ",".join(TOKENS),
    }
    env.update(overrides)
    return env


# The default (gunicorn.conf.py) and the threaded alternative: the inbox's group
# commit has to hold under greenlets and under real threads alike.
WORKER_CLASSES = pytest.mark.parametrize("worker_class", ["gevent", "gthread"])


@pytest.fixture
def start_receiver(tmp_path: Path):
    """Start receivers with extra environment; all are stopped after the test."""
    started: list[GunicornServer] = []

    def start(workers: int = 2, threads: int = 4, **env: str) -> GunicornServer:
        server = GunicornServer(
            receiver_env(tmp_path, **env), tmp_path / f"gunicorn-{len(started)}.log",
            workers=workers, threads=threads,
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory):
    """One receiver shared by a module's tests that do not mind each other's records."""
    tmp_path = tmp_path_factory.mktemp("receiver")
    server = GunicornServer(receiver_env(tmp_path), tmp_path / "gunicorn.log").start()
    yield server
    server.stop()
