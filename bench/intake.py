"""Intake benchmark: the receiver against a bare Flask app, under identical gunicorn settings.

Run from the project root: ``.venv/bin/python -m bench.intake`` (``make bench``).

Why a bare app: an absolute requests/s figure says little on a shared 2-core
machine. Serving the same route from a Flask app that does nothing, under the
same gunicorn settings, on the same machine, in the same minute, isolates what
the intake itself costs (signature, JSON, schema, group-committed SQLite
insert, metrics). Both servers run side by side and are loaded in ALTERNATING
rounds (receiver, bare, receiver, bare, ...), so drift in the machine's speed
hits both alike.

Why wrk plus a probe: wrk (C) generates the load and counts requests
correctly, but its latency percentiles are wrong against gunicorn's keep-alive
workers (gevent, gthread). Latency therefore comes from a probe in this process: one
thread, one keep-alive connection, paced requests timed with perf_counter.

Why distinct, signed callbacks: the receiver answers a repeated task id with a
cheap "duplicate"; every request here (wrk's and the probe's) carries a new
task id and a valid MPS signature, and every answer must be 200 "accepted".
The run fails (exit 1) on any other answer, or when the inbox holds fewer rows
than the requests that were answered "accepted".
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from receiver.auth import sign_mps_notification
from tests.servers import free_port, proc_stat_fields

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = Path(__file__).resolve().with_name("mps_callbacks.lua")
GUNICORN = Path(sys.executable).parent / "gunicorn"

NOTIFY_KEY = "bench-key"
CALLBACK_PATH = "/callbacks/mps"
TASK_ID_PLACEHOLDER = "@@TASK_ID@@"  # also in mps_callbacks.lua
TYPICAL_TASK_ID = "bench-1-12345-r1a1b2c3d4"  # what mps_callbacks.lua sends: bench-<thread>-<n>-<nonce>
TARGET_BODY_BYTES = 3000
JSON_HEADERS = {"Content-Type": "application/json"}

RECEIVER_APP = "app:app"
BARE_APP = "bench.bare_app:app"

# Variables that would make the two servers differ from what this run says it measures.
_SCRUBBED_ENV = (
    "BIND",
    "GUNICORN_CMD_ARGS",
    "PROMETHEUS_MULTIPROC_DIR",
    "CALLBACK_TOKENS",
    "MPS_ALLOW_UNSIGNED",
    "LOG_LEVEL",
    "WORKER_IN_WEB",
)


# gunicorn.conf.py's access_log_format: '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
_ACCESS_LOG_LINE = re.compile(r'^\S+ "[A-Z]+ \S+ HTTP/[\d.]+" \d{3} ')


class BenchError(Exception):
    """The benchmark cannot go on (a server died, wrk failed); the message says why."""


# --- the callback body ---------------------------------------------------------


def _transcode_result(definition: int, height: int, width: int, bitrate: int, size: int) -> dict[str, Any]:
    """One MediaProcessResultSet entry, shaped like MPS's TranscodeTask result."""
    path = f"/outputs/2024/05/17/a7c3e9/transcode_{definition}.mp4"
    storage = {"Type": "COS", "CosOutputStorage": {"Bucket": "media-out-1250000000", "Region": "ap-guangzhou"}}
    return {
        "Type": "Transcode",
        "TranscodeTask": {
            "Status": "SUCCESS",
            "ErrCodeExt": "",
            "ErrCode": 0,
            "Message": "SUCCESS",
            "Output": {
                "OutputStorage": storage,
                "Path": path,
                "Definition": definition,
                "Bitrate": bitrate,
                "Height": height,
                "Width": width,
                "Size": size,
                "Duration": 63.5,
                "Container": "mov,mp4,m4a,3gp,3g2,mj2",
                "Md5": secrets.token_hex(16),
                "VideoStreamSet": [
                    {"Bitrate": bitrate - 128000, "Height": height, "Width": width,
                     "Codec": "h264", "Fps": 25, "CodecTag": "avc1"},
                ],
                "AudioStreamSet": [
                    {"Bitrate": 128000, "SamplingRate": 44100, "Codec": "aac", "Channel": 2},
                ],
            },
            "Progress": 100,
            "BeginProcessTime": "2024-05-17T08:12:03Z",
            "FinishTime": "2024-05-17T08:13:41Z",
        },
        "AnimatedGraphicTask": None,
        "SnapshotByTimeOffsetTask": None,
    }


def build_body_template(notify_key: str = NOTIFY_KEY, now: float | None = None) -> str:
    """A signed ~3 KB WorkflowTask callback, as JSON, with TASK_ID_PLACEHOLDER as its task id.

    Real MPS callbacks of a finished transcode are about this size; a tiny body
    would understate parsing and validation. The signature covers only the
    expiry, so this one Timestamp/Sign stays valid for every task id.
    """
    event: dict[str, Any] = {
        "TaskId": TASK_ID_PLACEHOLDER,
        "Status": "FINISH",
        "ErrCode": 0,
        "Message": "",
        "InputInfo": {
            "Type": "COS",
            "CosInputInfo": {
                "Bucket": "media-in-1250000000",
                "Region": "ap-guangzhou",
                "Object": "/uploads/2024/05/17/a7c3e9/product-launch-keynote.mp4",
            },
            "UrlInputInfo": None,
        },
        "MetaData": {
            "Size": 187_654_321,
            "Container": "mov,mp4,m4a,3gp,3g2,mj2",
            "Bitrate": 23_645_000,
            "Height": 2160,
            "Width": 3840,
            "Duration": 63.5,
            "Rotate": 0,
            "VideoStreamSet": [
                {"Bitrate": 23_445_000, "Height": 2160, "Width": 3840, "Codec": "h264", "Fps": 25},
            ],
            "AudioStreamSet": [{"Bitrate": 192_000, "SamplingRate": 48000, "Codec": "aac"}],
            "VideoDuration": 63.5,
            "AudioDuration": 63.49,
        },
        "MediaProcessResultSet": [
            _transcode_result(100030, 720, 1280, 1_928_000, 15_302_114),
            _transcode_result(100040, 1080, 1920, 3_128_000, 24_830_927),
        ],
        "AiContentReviewResultSet": [],
        "AiAnalysisResultSet": [],
        "AiRecognitionResultSet": [],
        "AiQualityControlTaskResult": None,
    }
    body: dict[str, Any] = {
        "EventType": "WorkflowTask",
        "WorkflowTaskEvent": event,
        "EditMediaTaskEvent": None,
        "ScheduleTaskEvent": None,
        "BatchTaskEvent": None,
        "ExtractBlindWatermarkTask": None,
        "SessionId": "bench-session-" + secrets.token_hex(8),
        "SessionContext": "",
    }
    signed = sign_mps_notification(body, notify_key, now=now)
    # The business context a caller attaches to its task (SessionContext, at most
    # 1000 characters) brings the body to the target size.
    base = len(json.dumps(signed).replace(TASK_ID_PLACEHOLDER, TYPICAL_TASK_ID).encode())
    context = {"tenant": "bench", "asset": "a7c3e9", "pipeline": "vod-standard", "note": ""}
    padding = TARGET_BODY_BYTES - base - len(json.dumps(json.dumps(context)))
    context["note"] = ("transcode for web and mobile renditions; " * 40)[: max(padding, 0)]
    signed["SessionContext"] = json.dumps(context)
    return json.dumps(signed)


# --- servers ------------------------------------------------------------------------


@dataclass
class Server:
    """One gunicorn (master and workers) in its own process group, logging to a file."""

    name: str
    app: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [str(GUNICORN), "-c", "gunicorn.conf.py", self.app]

    def start(self, env: dict[str, str]) -> None:
        """Start gunicorn in a new session, so that stopping it reaches every worker."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env={**env, "PORT": str(self.port)},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def check_alive(self) -> None:
        """Raise BenchError with the log's tail if gunicorn has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} gunicorn exited with {self.process.returncode}; "
                f"log tail ({self.log_path}):\n{self.log_tail()}"
            )

    def wait_ready(self, timeout: float) -> float:
        """Poll GET /healthz until it answers 200; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            self.check_alive()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return time.monotonic() - started
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name} not ready after {timeout:.0f}s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass

    def wait_stopped(self, timeout: float) -> None:
        """Wait for the master; SIGKILL the whole group if it does not stop in time."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        # Workers normally die with their master; make sure of it.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, lines: int = 30) -> str:
        """The log's last lines, access-log lines left out: they would hide why it stopped."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        kept = [line for line in text.splitlines() if not _ACCESS_LOG_LINE.match(line)]
        return "\n".join(kept[-lines:])


def stop_servers(servers: list[Server], timeout: float = 25.0) -> None:
    """SIGTERM every group at once (gunicorn's graceful stop), then wait for each."""
    for server in servers:
        server.signal(signal.SIGTERM)
    for server in servers:
        server.wait_stopped(timeout)


def server_env(worker_class: str, workers: int, threads: int, inbox_path: Path) -> dict[str, str]:
    """The one environment both servers get (each adds its own PORT)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(
        GUNICORN_WORKER_CLASS=worker_class,
        WEB_CONCURRENCY=str(workers),
        GUNICORN_THREADS=str(threads),
        INBOX_URL=f"sqlite:///{inbox_path}",
        MPS_NOTIFY_KEYS=NOTIFY_KEY,
    )
    return env


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


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


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


# --- wrk ----------------------------------------------------------------------------


def ensure_wrk() -> str:
    """wrk's path; installs it with apt-get when running as root, else exits saying how."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit(
            "bench: wrk is not installed and this is not root; install it "
            "(e.g. `sudo apt-get install wrk`) and run again"
        )
    print("wrk not found; installing it: apt-get update -qq && apt-get install -y -qq wrk", flush=True)
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        if subprocess.run(command, env=apt_env).returncode != 0:
            sys.exit(f"bench: `{' '.join(command)}` failed; install wrk and run again")
    found = shutil.which("wrk")
    if not found:
        sys.exit("bench: wrk is still not on PATH after apt-get install")
    return found


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].split(" Copyright")[0] if lines else "unknown"


@dataclass
class WrkResult:
    requests: int
    requests_per_s: float
    responses: int  # counted by the Lua response hook
    non2xx: int  # wrk's own "Non-2xx or 3xx responses"
    non200: int
    not_accepted: int
    statuses: str
    socket_errors: dict[str, int]
    output: str


def _match_int(pattern: str, text: str, default: int | None = None) -> int:
    found = re.search(pattern, text)
    if found is None:
        if default is None:
            raise BenchError(f"wrk output has no match for {pattern!r}:\n{text}")
        return default
    return int(found.group(1))


def parse_wrk(output: str) -> WrkResult:
    """wrk's counts and our Lua script's "bench-lua:" lines; its latency is ignored on purpose."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    lua = re.search(r"bench-lua: responses=(\d+) non200=(\d+) not_accepted=(\d+) statuses=(\S*)", output)
    errors = re.search(
        r"bench-lua: errors connect=(\d+) read=(\d+) write=(\d+) status=(\d+) timeout=(\d+)", output
    )
    if rps is None or lua is None or errors is None:
        raise BenchError(f"cannot parse wrk's output:\n{output}")
    names = ("connect", "read", "write", "status", "timeout")
    return WrkResult(
        requests=_match_int(r"(\d+) requests in ", output),
        requests_per_s=float(rps.group(1)),
        responses=int(lua.group(1)),
        non2xx=_match_int(r"Non-2xx or 3xx responses:\s+(\d+)", output, default=0),
        non200=int(lua.group(2)),
        not_accepted=int(lua.group(3)),
        statuses=lua.group(4),
        socket_errors={n: int(v) for n, v in zip(names, errors.groups(), strict=True) if n != "status"},
        output=output,
    )


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
    assert server.process is not None
    cpu_before, wrk_cpu_before = group_cpu_seconds(server.process.pid), children_cpu_seconds()
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
    cpu_after = group_cpu_seconds(server.process.pid)
    used = {pid: cpu - cpu_before.get(pid, 0.0) for pid, cpu in cpu_after.items()}
    workers_cpu = sorted((cpu for pid, cpu in used.items() if pid != server.process.pid), reverse=True)
    wrk_cpu_s = children_cpu_seconds() - wrk_cpu_before
    if wrk.returncode != 0:
        raise BenchError(f"wrk exited with {wrk.returncode}:\n{output}")
    server.check_alive()
    delta = inbox_rows(inbox) - before if inbox is not None and before is not None else None
    return Phase(server.name, round_no, parse_wrk(output), probe_result, delta,
                 wall_s, workers_cpu, sum(used.values()), wrk_cpu_s)


# --- report -------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{value:6.2f}"


def print_round(phases: list[Phase]) -> None:
    """One line per server; CPU columns in cores (CPU seconds per wall second)."""
    print(
        f"  {'server':<9} {'req/s':>8} {'requests':>8} {'inbox +':>7} {'probe n':>7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'srv cpu':>7} {'per worker':>10} {'us/req':>6} {'wrk cpu':>7} {'probe cpu':>9}"
    )
    for p in phases:
        inbox = "-" if p.inbox_delta is None else str(p.inbox_delta)
        print(
            f"  {p.server:<9} {p.wrk.requests_per_s:8.1f} {p.wrk.requests:8d} {inbox:>7} {p.probe.accepted:7d} "
            f"{_ms(p.probe.percentile_ms(50)):>7} {_ms(p.probe.percentile_ms(99)):>7} "
            f"{p.server_cores:7.2f} {'+'.join(f'{c / p.wall_s:.2f}' for c in p.worker_cpu_s):>10} "
            f"{p.server_cpu_us_per_request:6.0f} {p.wrk_cpu_s / p.wall_s:7.2f} "
            f"{p.probe.cpu_s / p.wall_s:9.2f}"
        )
    by_name = {p.server: p for p in phases}
    if "receiver" in by_name and "bare" in by_name:
        ratio = by_name["receiver"].wrk.requests_per_s / by_name["bare"].wrk.requests_per_s
        print(f"  receiver/bare req/s: {ratio:.3f}")


def summarize(phases: list[Phase]) -> dict[str, dict[str, Any]]:
    """Per server: req/s of each round and their mean, and p50/p99 of all probe samples pooled."""
    summary: dict[str, dict[str, Any]] = {}
    for name in ("receiver", "bare"):
        mine = [p for p in phases if p.server == name and p.round > 0]
        samples = [s for p in mine for s in p.probe.samples]
        rates = [p.wrk.requests_per_s for p in mine]
        summary[name] = {
            "rates": rates,
            "mean": statistics.fmean(rates),
            "p50": percentile(samples, 50) * 1000,
            "p99": percentile(samples, 99) * 1000,
            "samples": len(samples),
            "cores": statistics.fmean(p.server_cores for p in mine),
            "us_per_request": statistics.fmean(p.server_cpu_us_per_request for p in mine),
        }
    return summary


def print_summary(summary: dict[str, dict[str, Any]]) -> None:
    print("\nSummary (req/s: mean of rounds; latency: all probe samples of all rounds)")
    print(
        f"  {'server':<9} {'mean req/s':>10}  {'per round':<26} {'probe n':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'srv cpu':>7} {'us/req':>6}"
    )
    for name, s in summary.items():
        rounds = ", ".join(f"{r:.1f}" for r in s["rates"])
        print(
            f"  {name:<9} {s['mean']:10.1f}  {rounds:<26} {s['samples']:7d} "
            f"{_ms(s['p50']):>7} {_ms(s['p99']):>7} {s['cores']:7.2f} {s['us_per_request']:6.0f}"
        )
    receiver, bare = summary["receiver"], summary["bare"]
    per_round = [r / b for r, b in zip(receiver["rates"], bare["rates"], strict=True)]
    print(
        f"\n  ratio receiver/bare, req/s: {receiver['mean'] / bare['mean']:.3f}"
        f"  (rounds: {', '.join(f'{r:.3f}' for r in per_round)})"
    )
    print(f"  ratio receiver/bare, probe p50: {receiver['p50'] / bare['p50']:.2f}x"
          f"  p99: {receiver['p99'] / bare['p99']:.2f}x")
    print(f"  ratio receiver/bare, server CPU per request: "
          f"{receiver['us_per_request'] / bare['us_per_request']:.2f}x")
    print("  (srv cpu: server cores busy, CPU s per wall s, of 2 workers + master; us/req: server CPU"
          " per answered request)")


def filesystem_of(path: Path) -> str:
    """The filesystem type holding `path`: fsync costs differ wildly (tmpfs vs disk)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                mount_point = parts[1]
                inside = str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, kind = mount_point, parts[2]
    except OSError:
        pass
    return kind


def print_header(args: argparse.Namespace, load: Load, servers: list[Server], body_bytes: int,
                 tmp: Path) -> None:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("Intake benchmark: receiver vs bare Flask, identical gunicorn settings, alternating rounds")
    print(f"  command:   {shlex.quote(sys.executable)} -m bench.intake {shlex.join(sys.argv[1:])}".rstrip())
    print(f"  machine:   nproc={affinity} ({platform.machine()}, {platform.platform()}), "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  software:  Python {platform.python_version()}, gunicorn {metadata.version('gunicorn')}, "
          f"Flask {metadata.version('flask')}, {wrk_version(load.wrk)}")
    per_worker = f" x GUNICORN_THREADS={args.threads} threads" if args.worker_class == "gthread" else ""
    print(f"  gunicorn:  gunicorn.conf.py, GUNICORN_WORKER_CLASS={args.worker_class}, "
          f"WEB_CONCURRENCY={args.workers} workers{per_worker} (both servers)")
    for server in servers:
        print(f"  {server.name + ':':<10} PORT={server.port} {shlex.join(server.command)}")
    print(f"  inbox:     {tmp / 'inbox.db'} ({filesystem_of(tmp)})")
    print(f"  body:      {body_bytes} bytes, signed MPS WorkflowTask callback, distinct TaskId per request")
    print(f"  load:      {shlex.join(load.command(0, args.duration)).replace(':0/', ':PORT/')}")
    print("             (wrk's requests/s only: its latency percentiles are wrong against keep-alive workers)")
    print(f"  probe:     1 keep-alive connection, one request every {args.probe_interval_ms:g} ms "
          "(back-to-back when slower), timed in Python")
    loaded = 2 * (args.warmup + args.rounds * args.duration)
    print(f"  schedule:  warm-up {args.warmup:g}s each, then {args.rounds} rounds x "
          f"{args.duration:g}s per server, receiver first ({loaded:g}s of load in all)")
    print(flush=True)


# --- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.intake",
        description=(
            "Compare the receiver's intake (POST /callbacks/mps with distinct, signed ~3 KB "
            "MPS callbacks) with a bare Flask app under identical gunicorn settings. Both run "
            "at once on free ports and are loaded with wrk in alternating rounds; a probe "
            "thread measures latency. Exits 1 if any request was not answered 200 \"accepted\" "
            "or the inbox holds fewer rows than accepted requests."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (WEB_CONCURRENCY)")
    parser.add_argument("--worker-class", default="gevent", choices=["gevent", "gthread", "sync"],
                        help="gunicorn worker class (GUNICORN_WORKER_CLASS); gevent is gunicorn.conf.py's default")
    parser.add_argument("--threads", type=int, default=8, help="threads per gthread worker (GUNICORN_THREADS)")
    parser.add_argument("--duration", type=float, default=8, help="seconds of load per server per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (receiver, then bare)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (-c)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (-t)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unreported load per server first")
    parser.add_argument("--probe-interval-ms", type=float, default=5, help="probe pacing")
    parser.add_argument("--startup-timeout", type=float, default=30, help="seconds to wait for /healthz")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, inbox)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.threads < 1 or args.rounds < 1 or args.duration <= 0:
        parser.error("--workers, --threads, --rounds and --duration must be positive")
    if args.connections < args.wrk_threads:
        parser.error("--connections must be at least --wrk-threads")
    return args


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace, tmp: Path) -> int:
    """Start both servers, run the alternating rounds, report; return the exit status."""
    load_wrk = ensure_wrk()
    template = build_body_template()
    template_path = tmp / "body-template.json"
    template_path.write_text(template)
    body_bytes = len(template.replace(TASK_ID_PLACEHOLDER, TYPICAL_TASK_ID).encode())
    load = Load(load_wrk, args.wrk_threads, args.connections, template_path, template,
                args.probe_interval_ms / 1000)

    inbox = tmp / "inbox.db"
    env = server_env(args.worker_class, args.workers, args.threads, inbox)
    receiver = Server("receiver", RECEIVER_APP, free_port(), tmp / "receiver.log")
    bare = Server("bare", BARE_APP, free_port(), tmp / "bare.log")
    servers = [receiver, bare]
    print_header(args, load, servers, body_bytes, tmp)
    try:
        for server in servers:
            server.start(env)
        for server in servers:
            took = server.wait_ready(args.startup_timeout)
            print(f"{server.name} ready on port {server.port} after {took:.2f}s", flush=True)

        phases: list[Phase] = []
        if args.warmup > 0:
            for server in servers:
                phases.append(run_phase(server, 0, args.warmup, load, inbox if server is receiver else None))
            rates = ", ".join(f"{p.server} {p.wrk.requests_per_s:.0f} req/s" for p in phases)
            print(f"warm-up done, not reported ({rates})")
        for round_no in range(1, args.rounds + 1):
            this_round = [
                run_phase(server, round_no, args.duration, load, inbox if server is receiver else None)
                for server in servers
            ]
            phases.extend(this_round)
            print(f"\nRound {round_no}/{args.rounds}")
            print_round(this_round)
            sys.stdout.flush()
    finally:
        stop_servers(servers)

    print_summary(summarize(phases))
    accepted = sum(p.accepted for p in phases if p.server == "receiver")
    rows = inbox_rows(inbox)
    print(f"\n  inbox: {rows} rows; {accepted} receiver requests answered \"accepted\" "
          f"(wrk and probe, warm-up included)")
    problems = [problem for p in phases for problem in p.problems()]
    if rows < accepted:
        problems.append(f"the inbox holds {rows} rows, fewer than the {accepted} accepted requests")
    if problems:
        print("\nFAILED: these results cannot be trusted:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        print(f"  server logs: {tmp}" + ("" if args.keep else " (rerun with --keep to keep them)"),
              file=sys.stderr)
        return 1
    print("  checks: every request answered 200 \"accepted\"; inbox rows >= accepted requests")
    return 0


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(argv), run, "bench-intake-")


def bench_main(args: argparse.Namespace, run: Callable[[argparse.Namespace, Path], int], prefix: str) -> int:
    """Run a benchmark in a temporary directory (kept with --keep); a SIGTERM still cleans up."""
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        status = run(args, tmp)
    except BenchError as error:
        print(f"\nbench: {error}", file=sys.stderr)
        status = 2
    finally:
        if args.keep:
            print(f"  kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"  wall time: {time.monotonic() - started:.1f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
