"""One loaded phase of the intake benchmark: wrk's load on one server, the latency probe beside it, the CPU used."""

from __future__ import annotations

import http.client
import os
import re
import resource
import secrets
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import BenchError, percentile
from bench.intake_body import CALLBACK_PATH, JSON_HEADERS, TASK_ID_PLACEHOLDER
from bench.processes import ROOT, Server, proc_stat_fields
from bench.wrk import WrkResult, parse_wrk

LUA_SCRIPT = Path(__file__).resolve().with_name("mps_callbacks.lua")


# --- what a server used ---------------------------------------------------------------


def inbox_rows(path: Path) -> int:
    """Rows in the receiver's inbox: each is a callback it answered "accepted" for."""
    conn = sqlite3.connect(str(path), timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
    finally:
        conn.close()


def group_cpu_seconds(pgid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each live process of a process group.

    Tells whether a server is short of CPU or waiting (on fsync, a lock), and
    whether its workers share the load: req/s alone cannot. Read from /proc; a
    process that exits meanwhile is skipped.
    """
    ticks = {
        pid: int(fields[11]) + int(fields[12])
        for pid, fields in proc_stat_fields().items()
        if int(fields[2]) == pgid
    }
    per_second = os.sysconf("SC_CLK_TCK")
    return {pid: t / per_second for pid, t in ticks.items()}


def children_cpu_seconds() -> float:
    """CPU seconds of this process's reaped children (here: the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- latency probe ------------------------------------------------------------------


@dataclass
class ProbeResult:
    samples: list[float] = field(default_factory=list)  # seconds, "accepted" answers only
    failures: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0  # the probe thread's own CPU time

    @property
    def accepted(self) -> int:
        return len(self.samples)

    def percentile_ms(self, q: float) -> float:
        return percentile(self.samples, q) * 1000


class LatencyProbe:
    """Times paced requests on its own keep-alive connection while wrk loads the server.

    wrk's percentiles are wrong against keep-alive workers (gevent, gthread); this thread
    measures what a single sender sees, request by request, with perf_counter.
    """

    def __init__(self, port: int, template: str, nonce: str, interval_s: float):
        self._port = port
        self._template = template
        self._nonce = nonce
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-probe", daemon=True)
        self.result = ProbeResult()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> ProbeResult:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.result

    def _fail(self, what: str) -> None:
        self.result.failures[what] = self.result.failures.get(what, 0) + 1

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        sequence = 0
        next_at = time.perf_counter()
        while not self._stop.is_set():
            sequence += 1
            task_id = f"probe-{sequence}-{self._nonce}"
            body = self._template.replace(TASK_ID_PLACEHOLDER, task_id).encode()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
                    conn.connect()  # outside the timed span: only requests are timed
                started = time.perf_counter()
                conn.request("POST", CALLBACK_PATH, body=body, headers=JSON_HEADERS)
                response = conn.getresponse()
                answer = response.read()
                elapsed = time.perf_counter() - started
            except (OSError, http.client.HTTPException) as error:
                self._fail(type(error).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(self._interval_s)  # no busy loop against a dead server
                continue
            if response.status == 200 and b'"accepted"' in answer:
                self.result.samples.append(elapsed)
            else:
                status = re.search(rb'"status":\s*"(\w+)"', answer)
                self._fail(f"HTTP {response.status}" + (f" {status.group(1).decode()}" if status else ""))
            next_at += self._interval_s
            pause = next_at - time.perf_counter()
            if pause > 0:
                self._stop.wait(pause)
            else:
                next_at = time.perf_counter()
        if conn is not None:
            conn.close()
        self.result.cpu_s = time.thread_time()


# --- one loaded phase ---------------------------------------------------------------


@dataclass
class Phase:
    server: str
    round: int  # 0: warm-up
    wrk: WrkResult
    probe: ProbeResult
    inbox_delta: int | None  # receiver only
    wall_s: float
    worker_cpu_s: list[float]  # each worker's CPU seconds in this phase, busiest first
    server_cpu_s: float  # workers and master
    wrk_cpu_s: float

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.wall_s

    @property
    def server_cpu_us_per_request(self) -> float:
        """Server CPU per answered request: the cost of one callback, whatever the waits."""
        return self.server_cpu_s / max(self.wrk.requests + self.probe.accepted, 1) * 1e6

    @property
    def accepted(self) -> int:
        """Requests answered 200 "accepted", wrk's and the probe's."""
        return self.wrk.responses - self.wrk.non200 - self.wrk.not_accepted + self.probe.accepted

    def problems(self) -> list[str]:
        """Everything that makes this phase's figures untrustworthy."""
        where = f"round {self.round} {self.server}" if self.round else f"warm-up {self.server}"
        found = []
        if self.wrk.non2xx or self.wrk.non200:
            found.append(
                f"{where}: {max(self.wrk.non2xx, self.wrk.non200)} non-2xx answers to wrk "
                f"(statuses {self.wrk.statuses or '?'})"
            )
        if self.wrk.not_accepted:
            found.append(f"{where}: {self.wrk.not_accepted} answers to wrk were 200 but not \"accepted\"")
        if self.wrk.responses != self.wrk.requests:
            found.append(f"{where}: wrk counted {self.wrk.requests} requests, its Lua hook {self.wrk.responses}")
        if any(self.wrk.socket_errors.values()):
            found.append(f"{where}: wrk socket errors {self.wrk.socket_errors}")
        if self.probe.failures:
            found.append(f"{where}: probe failures {self.probe.failures}")
        if self.inbox_delta is not None and self.inbox_delta < self.accepted:
            found.append(
                f"{where}: the inbox gained {self.inbox_delta} rows but {self.accepted} "
                "requests were answered \"accepted\""
            )
        return found


@dataclass
class Load:
    """How every phase loads its server (the same for both)."""

    wrk: str
    wrk_threads: int
    connections: int
    template_path: Path
    template: str
    probe_interval_s: float

    def command(self, port: int, seconds: float) -> list[str]:
        return [
            self.wrk, f"-t{self.wrk_threads}", f"-c{self.connections}", f"-d{seconds:g}s",
            "--timeout", "10s", "-s", str(LUA_SCRIPT), f"http://127.0.0.1:{port}{CALLBACK_PATH}",
        ]


def run_phase(server: Server, round_no: int, seconds: float, load: Load, inbox: Path | None) -> Phase:
    """Load one server with wrk for `seconds` while the probe times its own requests."""
    server.check_alive()
    nonce = f"{'w' if round_no == 0 else 'r'}{round_no}{secrets.token_hex(4)}"
    before = inbox_rows(inbox) if inbox is not None else None
    env = {**os.environ, "BENCH_BODY_TEMPLATE": str(load.template_path), "BENCH_RUN_NONCE": nonce}
    wrk = subprocess.Popen(
        load.command(server.port, seconds), env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    probe = LatencyProbe(server.port, load.template, nonce, load.probe_interval_s)
    cpu_before, wrk_cpu_before = group_cpu_seconds(server.pid), children_cpu_seconds()
    started = time.perf_counter()
    probe.start()
    try:
        output, _ = wrk.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        wrk.kill()
        wrk.communicate()
        raise BenchError(f"wrk did not finish loading {server.name}") from None
    finally:
        probe_result = probe.stop()
    wall_s = time.perf_counter() - started
    cpu_after = group_cpu_seconds(server.pid)
    used = {pid: cpu - cpu_before.get(pid, 0.0) for pid, cpu in cpu_after.items()}
    workers_cpu = sorted((cpu for pid, cpu in used.items() if pid != server.pid), reverse=True)
    wrk_cpu_s = children_cpu_seconds() - wrk_cpu_before
    if wrk.returncode != 0:
        raise BenchError(f"wrk exited with {wrk.returncode}:\n{output}")
    server.check_alive()
    delta = inbox_rows(inbox) - before if inbox is not None and before is not None else None
    return Phase(server.name, round_no, parse_wrk(output), probe_result, delta,
                 wall_s, workers_cpu, sum(used.values()), wrk_cpu_s)
