"""Real processes for tests: the receiver under gunicorn, reached over a socket."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import requests

from bench.processes import free_port, proc_stat_fields  # one copy, in bench/: bench imports nothing of tests/

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns a truthy value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def sink_events(path: Path) -> list[dict]:
    """The events of a log sink file; its last line counts once its newline is there (a batch being
    written may be read half-way; a line cut by a crash and followed by others still fails the parse)."""
    if not path.exists():
        return []
    *complete, _being_written = path.read_text().split("\n")
    return [json.loads(line) for line in complete if line.strip()]


def query_inbox(path: str | Path, **where: object) -> list[sqlite3.Row]:
    """Rows of a SQLite inbox matching column = value conditions, read as another process would."""
    conn = sqlite3.connect(str(path), timeout=10)
    conn.row_factory = sqlite3.Row
    clause = " AND ".join(f"{column} = ?" for column in where) or "1"
    try:
        return conn.execute(f"SELECT * FROM inbox WHERE {clause}", tuple(where.values())).fetchall()
    finally:
        conn.close()


def inbox_rows(server: GunicornServer, **where: object) -> list[sqlite3.Row]:
    """Rows of a receiver's SQLite inbox (its INBOX_URL) matching column = value conditions."""
    return query_inbox(server.env["INBOX_URL"][len("sqlite:///"):], **where)


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`."""
    return [child for child, fields in proc_stat_fields().items() if int(fields[1]) == pid]


class ServerProcess:
    """A server of the tests in its own process and session, on 127.0.0.1, logging to a file.

    Subclasses say what to run (`command`, `environment`) and which path
    answers 200 once it serves (`health_path`); starting, waiting for that
    answer with a deadline, reading the log and stopping are the same for all.
    """

    name = "server"
    health_path = "/"
    stop_timeout = 10.0

    def __init__(self, log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None  # this process's own environment

    def start(self, wait: bool = True, timeout: float = 30.0) -> Self:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=ROOT, env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until(self._ready, timeout, f"{self.name} on {self.url}")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
        try:
            return requests.get(self.url + self.health_path, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class GunicornServer(ServerProcess):
    """`gunicorn -c gunicorn.conf.py app:app` with a test environment, on a free port."""

    name = "gunicorn"
    health_path = "/healthz"
    stop_timeout = 20.0

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 2, threads: int = 4,
                 app: str = "app:app"):
        super().__init__(log_path)
        self.env = {
            **os.environ,
            **env,
            "PORT": str(self.port),
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.app = app

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app]

    def environment(self) -> dict[str, str]:
        return self.env

    def all_pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid, *children_of(self.process.pid)]

    def kill9(self) -> None:
        """SIGKILL the master and every worker at once: nothing gets to clean up."""
        pids = self.all_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert self.process is not None
        self.process.wait(timeout=10)
        wait_until(lambda: not any(_alive(p) for p in pids), 10, "killed workers to disappear")


def _alive(pid: int) -> bool:
    fields = proc_stat_fields().get(pid)
    return fields is not None and fields[0] != "Z"
