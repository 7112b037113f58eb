"""The benchmarks' child processes: gunicorn, the emulator, moto_server, the worker.

Each runs in its own session (so that a signal to its group reaches a master
and all its workers), from the project root, logging to a file. A server is
on 127.0.0.1 and answers 200 on a health path once it serves.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Self, TypeVar

import requests

from bench.common import BenchError, BenchTimeout

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = Path(sys.executable).parent / "gunicorn"

# gunicorn.conf.py's access_log_format: '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
_ACCESS_LOG_LINE = re.compile(r'^\S+ "[A-Z]+ \S+ HTTP/[\d.]+" \d{3} ')

T = TypeVar("T")


LOWEST_PORT = 10_000


def free_port() -> int:
    """A port free now that no outgoing connection can take before its server binds it.

    A port the kernel hands out for `bind(0)` comes from the ephemeral range,
    which is also where every client connection's source port comes from: one
    opened meanwhile (a health poll, a keep-alive pool) can take it, and the
    server then fails with "Address already in use". Below that range only
    servers bind.
    """
    ephemeral_low = _ephemeral_range()[0]
    if ephemeral_low - LOWEST_PORT >= 1_000:
        for _ in range(200):
            port = random.randrange(LOWEST_PORT, ephemeral_low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            low, high = (int(part) for part in ports.read().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


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


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB (/proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


class Child:
    """One child process in its own session, logging to a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        """Raise BenchError with the log's tail if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.process.returncode}; log tail ({self.log_path}):\n"
                             f"{self.log_tail()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The log's last lines, access-log lines left out: they would hide why it stopped."""
        kept = [line for line in self.log_text().splitlines() if not _ACCESS_LOG_LINE.match(line)]
        return "\n".join(kept[-lines:]) or "(empty log)"

    def signal(self, signum: int) -> None:
        """Signal the whole group: the workers of a master that is gone too."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def wait_stopped(self, timeout: float) -> None:
        """Wait for the process; SIGKILL the whole group if it does not stop in time, and what is left of it."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.signal(signal.SIGKILL)  # workers normally die with their master; make sure of it

    def stop(self, timeout: float = 25.0) -> None:
        """SIGTERM the group (a graceful stop), then SIGKILL whatever of it is left."""
        self.signal(signal.SIGTERM)
        self.wait_stopped(timeout)


def stop_all(children: Iterable[Child], timeout: float = 25.0) -> None:
    """SIGTERM every group at once, then wait for each: they stop side by side."""
    children = list(children)
    for child in children:
        child.signal(signal.SIGTERM)
    for child in children:
        child.wait_stopped(timeout)


def poll_until(predicate: Callable[[], T | None], timeout: float, what: str, children: Iterable[Child] = (),
               interval: float = 0.05) -> T:
    """Poll `predicate` until it returns a truthy value; BenchTimeout past the deadline, BenchError when a child
    died."""
    deadline = time.monotonic() + timeout
    watched = list(children)
    while True:
        for child in watched:
            child.check_alive()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Server(Child):
    """A child serving HTTP on 127.0.0.1:`port`, ready once `health_path` answers 200."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path, port: int,
                 health_path: str):
        super().__init__(name, command, env, log_path)
        self.port = port
        self.health_path = health_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Poll the health path until it answers 200; the seconds it took. BenchError with the log's tail when
        the server exits or is not ready in time."""
        started = time.monotonic()
        try:
            poll_until(lambda: http_ok(self.url + self.health_path), timeout, f"{self.name} on {self.url}", [self])
        except BenchTimeout as error:
            raise BenchError(f"{error}; log tail ({self.log_path}):\n{self.log_tail()}") from None
        return time.monotonic() - started

    def start_ready(self, timeout: float = 30.0) -> Self:
        """Start, and wait until ready; stopped again if it is not."""
        self.start()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self


def gunicorn(name: str, app: str, port: int, env: dict[str, str], log_path: Path, *options: str) -> Server:
    """`gunicorn -c gunicorn.conf.py [options] app` on `port` (gunicorn.conf.py reads PORT)."""
    command = [str(GUNICORN), "-c", "gunicorn.conf.py", *options, app]
    return Server(name, command, {**env, "PORT": str(port)}, log_path, port, "/healthz")


def emulator(name: str, port: int, env: dict[str, str], log_path: Path, *options: str) -> Server:
    """`python -m emulator --port PORT [options]`: the local Tencent Cloud."""
    command = [PYTHON, "-m", "emulator", "--port", str(port), *options]
    return Server(name, command, env, log_path, port, "/_emulator/health")


def moto_server(port: int, env: dict[str, str], log_path: Path) -> Server:
    """`python -m moto.server`: the local AWS."""
    command = [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return Server("moto_server", command, env, log_path, port, "/moto-api/")


def python_module(name: str, module: str, env: dict[str, str], log_path: Path) -> Child:
    """`python -m module`, with no port: the worker."""
    return Child(name, [PYTHON, "-m", module], env, log_path)
