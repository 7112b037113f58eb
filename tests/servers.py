"""Real processes for tests: the receiver under gunicorn, reached over a socket."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def query_inbox(path: str | Path, **where: object) -> list[sqlite3.Row]:
    """Rows of a SQLite inbox matching column = value conditions, read as another process would."""
    conn = sqlite3.connect(str(path), timeout=10)
    conn.row_factory = sqlite3.Row
    clause = " AND ".join(f"{column} = ?" for column in where) or "1"
    try:
        return conn.execute(f"SELECT * FROM inbox WHERE {clause}", tuple(where.values())).fetchall()
    finally:
        conn.close()


def proc_stat_fields() -> dict[int, list[str]]:
    """For every process, the fields of /proc/PID/stat after its name.

    Index 0 is the state, 1 the parent pid, 2 the process group, 11 and 12
    the user and system CPU ticks. A process that exits meanwhile is skipped.
    """
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                table[int(entry)] = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
    return table


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`."""
    return [child for child, fields in proc_stat_fields().items() if int(fields[1]) == pid]


class GunicornServer:
    """`gunicorn -c gunicorn.conf.py app:app` with a test environment, on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 2, threads: int = 4,
                 app: str = "app:app"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
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
        self.process: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> GunicornServer:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                return requests.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, timeout, f"gunicorn on {self.url}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

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

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _alive(pid: int) -> bool:
    fields = proc_stat_fields().get(pid)
    return fields is not None and fields[0] != "Z"
