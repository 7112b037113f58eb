"""Pipeline benchmark: how fast the worker drains a backlog against the Tencent Cloud emulator, at injected latency.

Run from the project root: ``.venv/bin/python -m bench.pipeline`` (``make bench-pipeline``; ``--help``).

What is measured, and why. SPEC 6 makes the per-action rate limits the target
as well as the bound: while records wait, a host keeps enough Describe calls
in flight to use at least 95% of each action's limit in every second, whatever
the API's latency (0 to 500 ms a call), and never more than the limit. A
serial worker reaches that only when a call costs nothing; at 150 ms it makes
at most ~6 calls a second. This benchmark says where a worker stands:

- **Backlog run**, per latency (0, 50, 150, 500 ms by default): a fresh
  emulator (`python -m emulator`, the API pages' default Describe limits, the
  creating actions' limits raised so set-up is quick), a fresh SQLite inbox
  and the Procfile's `web:` (gunicorn) with `WORKER_IN_WEB=false`. ~667 MPS,
  VOD and AMS tasks are created with the receiver as their NotifyUrl /
  CallbackUrl (so the notify-config check passes) and the
  `emulator:no-callback` marker (so the emulator sends nothing itself), and
  left to finish. The bench then signs each task's callbacks with the
  receiver's own signers and posts them to the door: PROCESSING, FINISH, and
  the FINISH again under a fresh signature (answered `duplicate`): ~2,000
  callbacks, all queued before the Procfile's `worker:` starts. Measured until
  every task's event is in the sink:
  events/s out (first to last forward); per Describe action the share of its
  limit used while its backlog lasted (calls / (limit x seconds from its first
  to its last call)), the busiest one-second window the emulator saw and its
  `RequestLimitExceeded` answers; Describe calls per callback posted (one call
  per task is ideal: 0.33); accept -> forward p50/p99 per accepted callback
  (the inbox's `received_at` to the `forwarded` table's `forwarded_at`, both
  this host's clock); the worker's RSS when it starts and once the backlog is
  done; and every event exactly once in the sink.
- **Idle probe**, per latency, on the same processes once the backlog is done:
  30 callbacks of finished tasks posted one at a time ~200 ms apart, accept ->
  forward p50/p99: what one callback waits when nothing else does.
- **Batch run** (150 ms by default): 200 MPS `BatchTask`s, whose
  `DescribeBatchTaskDetail` is limited to 20/s.
- **SQS run** (150 ms by default): `SINK=sqs` on moto_server behind a small
  counting reverse proxy (moto counts nothing): SQS API calls per event.
- **Soak** (`--soak`, not in the default run): Describe limits raised on both
  sides, latency 0, tasks created in a stream while the worker runs (the
  emulator itself calls back), the worker's RSS at 10% and at 100% of the
  events (10k and 100k by default).

When each action's first and last calls were made comes from the emulator's
call log (`GET /_emulator/calls`) when the emulator has one; otherwise from
polling `GET /_emulator/stats` every 100 ms (each edge is then known to within
one poll: the midpoint is taken, so a span is good to about +-0.1 s).

The run fails (exit 1) when an event is missing or doubled, when the emulator
answered `RequestLimitExceeded` or saw more calls than a limit in one second
(SPEC 6 forbids both), or when the door answered a callback otherwise than
expected. A speed target missed is printed as FAIL but does not fail the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import itertools
import json
import math
import os
import platform
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import boto3
import requests
from botocore.config import Config as BotoConfig
from tencentcloud.ams.v20201229 import ams_client
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import mps_client
from tencentcloud.vod.v20180717 import vod_client

from bench.common import BenchError, bench_main, filesystem_of, percentile
from bench.processes import free_port
from emulator import render
from emulator.tasks import FINISH, PROCESSING, SILENT_MARKER, Task
from receiver.auth import sign_ams_callback, sign_mps_notification, sign_vod_event
from receiver.reconcile import event_id

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = Path(sys.executable).parent / "gunicorn"

SECRET_ID, SECRET_KEY = "AKIDbenchpipeline", "bench-pipeline-secret"
MPS_KEY, VOD_KEY, AMS_SEED, TOKEN = "bench-mps-key", "bench-vod-key", "bench-ams-seed", "bench-token"
JSON_HEADERS = {"Content-Type": "application/json"}

# The emulator's task timing: a task is PROCESSING 0.1 s and FINISH 0.3 s after it was created.
PROCESSING_AFTER, FINISH_AFTER = 0.1, 0.3
# Creating is set-up, not what is measured: these actions' limits are raised (the Describe limits stay the API pages').
CREATING_ACTIONS = ("mps.ProcessMedia", "mps.BatchProcessMedia", "vod.ProcessMedia", "ams.CreateAudioModerationTask")
CREATING_LIMIT = 10_000
# The Describe actions whose limit is the target, and the receiver's variable for each (SPEC 6).
DESCRIBE_ACTIONS = {
    "mps.DescribeTaskDetail": "RATE_LIMIT_MPS_DESCRIBETASKDETAIL",
    "mps.DescribeBatchTaskDetail": "RATE_LIMIT_MPS_DESCRIBEBATCHTASKDETAIL",
    "vod.DescribeTaskDetail": "RATE_LIMIT_VOD_DESCRIBETASKDETAIL",
    "ams.DescribeTaskDetail": "RATE_LIMIT_AMS_DESCRIBETASKDETAIL",
}
# The event type of each task kind's callbacks; every task here ends with one FINISH event.
EVENT_TYPES = {"WorkflowTask": "WorkflowTask", "BatchTask": "BatchTask", "Procedure": "ProcedureStateChanged",
               "AudioModeration": "AudioModeration"}
AMS_TASKS_PER_CALL = 10  # CreateAudioModerationTask takes up to 10 tasks

TARGET_LIMIT_SHARE = 0.95
TARGET_CALLS_PER_CALLBACK = 0.35
TARGET_SQS_CALLS_PER_EVENT = 0.15
TARGET_RSS_GROWTH = 0.10
TARGET_IDLE_P50_S = 0.250

POLL_SECONDS = 0.1  # how often /_emulator/stats is read while a backlog drains
SETUP_THREADS = 8  # threads creating tasks and posting callbacks

# Variables of the calling shell that would make the receiver differ from what this run says it measures.
_SCRUBBED_PREFIXES = (
    "RATE_LIMIT_", "TENCENTCLOUD_", "SQS_", "AWS_", "SWEEP_", "VOD_", "MPS_", "AMS_", "WORKER_", "GUNICORN_",
)
_SCRUBBED_NAMES = frozenset({
    "CALLBACK_TOKENS", "INBOX_URL", "SINK", "LOG_SINK_PATH", "IDEMPOTENCY_TABLE", "RECEIVER_PUBLIC_URL",
    "NOT_FOUND_PATIENCE_SECONDS", "CONSISTENCY_PATIENCE_SECONDS", "MAX_ATTEMPTS", "RUN_SWEEPER",
    "PROMETHEUS_MULTIPROC_DIR", "BIND", "PORT", "WEB_CONCURRENCY", "LOG_LEVEL", "SIGNATURE_LEEWAY_SECONDS",
})

T = TypeVar("T")



@dataclass(frozen=True)
class Setup:
    """What every run shares: where its files go."""

    tmp: Path


# --- child processes ----------------------------------------------------------------


@dataclass
class Child:
    """One child process in its own session (so stopping it reaches its whole group), logging to a file."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
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

    def log_tail(self, lines: int = 25) -> str:
        kept = [line for line in self.log_text().splitlines() if '"POST /callbacks/' not in line]
        return "\n".join(kept[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 25.0) -> None:
        """SIGTERM the group (a graceful stop), then SIGKILL whatever of it is left."""
        if self.process is None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        _signal_group(self.process.pid, signal.SIGKILL)  # workers of a master that is gone


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def poll_until(predicate: Callable[[], T | None], timeout: float, what: str, children: Iterable[Child] = (),
               interval: float = 0.05) -> T:
    """Poll `predicate` until it returns a truthy value; BenchError past the deadline or when a child died."""
    deadline = time.monotonic() + timeout
    watched = list(children)
    while True:
        for child in watched:
            child.check_alive()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB (/proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def base_env() -> dict[str, str]:
    """This process's environment without anything that configures the receiver or gunicorn."""
    return {k: v for k, v in os.environ.items()
            if k not in _SCRUBBED_NAMES and not k.startswith(_SCRUBBED_PREFIXES)}


# --- the emulator ---------------------------------------------------------------------


class Emulator:
    """`python -m emulator` on a free port: its admin routes, and SDK clients (one set per thread)."""

    def __init__(self, setup: Setup, name: str, vod_notify_url: str, *extra_args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            PYTHON, "-m", "emulator", "--port", str(self.port),
            "--secret-id", SECRET_ID, "--secret-key", SECRET_KEY,
            "--processing-after", str(PROCESSING_AFTER), "--finish-after", str(FINISH_AFTER),
            "--vod-notify-url", vod_notify_url, "--vod-sign-key", VOD_KEY, "--log-level", "WARNING",
            *itertools.chain.from_iterable(("--rate-limit", f"{a}={CREATING_LIMIT}") for a in CREATING_ACTIONS),
            *extra_args,
        ]
        self.child = Child(f"emulator ({name})", command, base_env(), setup.tmp / f"emulator-{name}.log")
        self._local = threading.local()

    def start(self, timeout: float = 30) -> Emulator:
        self.child.start()
        poll_until(lambda: http_ok(self.url + "/_emulator/health"), timeout, "the emulator", [self.child])
        return self

    def get(self, path: str) -> Any:
        response = requests.get(f"{self.url}/_emulator/{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return self.get("stats")

    def set_latency(self, seconds: float) -> None:
        response = requests.post(f"{self.url}/_emulator/faults", json={"latency": seconds}, timeout=10)
        response.raise_for_status()

    def call_log(self) -> Any | None:
        """`GET /_emulator/calls` (admitted calls with their times) where this emulator has it, else None."""
        try:
            response = requests.get(f"{self.url}/_emulator/calls", timeout=30)
        except requests.RequestException:
            return None
        if response.status_code != 200 or not response.headers.get("Content-Type", "").startswith("application/json"):
            return None
        answer = response.json()
        return None if isinstance(answer, dict) and "Response" in answer else answer

    def client(self, service: str) -> Any:
        """This thread's SDK client of `service`, as the receiver builds them."""
        clients = getattr(self._local, "clients", None)
        if clients is None:
            profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=f"127.0.0.1:{self.port}"))
            cred = credential.Credential(SECRET_ID, SECRET_KEY)
            clients = self._local.clients = {
                "mps": mps_client.MpsClient(cred, "ap-guangzhou", profile),
                "vod": vod_client.VodClient(cred, "ap-guangzhou", profile),
                "ams": ams_client.AmsClient(cred, "ap-guangzhou", profile),
            }
        return clients[service]

    def call(self, service: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.client(service).call_json(action, params)["Response"]

    def own_call_ms(self, calls: int = 15) -> float:
        """The emulator's own time per API call (median, one keep-alive connection): what latency 0 costs.

        Asked with mps DescribeTasks, which the worker does not use here, before any latency is injected.
        """
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            self.call("mps", "DescribeTasks", {"Limit": 1})
            times.append(time.perf_counter() - started)
        return percentile(times, 50) * 1000


# --- the receiver: its door under gunicorn, and the worker ------------------------------------


@dataclass
class Stack:
    """One run's processes: emulator, the receiver's door, and (once started) the worker."""

    tmp: Path
    name: str
    emulator: Emulator
    door: Child
    port: int
    env: dict[str, str]
    worker: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def inbox(self) -> Path:
        return self.tmp / f"inbox-{self.name}.db"

    @property
    def sink(self) -> Path:
        return self.tmp / f"events-{self.name}.jsonl"

    def notify_url(self, product: str) -> str:
        return f"{self.url}/callbacks/{product}?token={TOKEN}"

    @property
    def children(self) -> list[Child]:
        return [c for c in (self.emulator.child, self.door, self.worker) if c is not None]

    def start_worker(self, timeout: float = 30) -> tuple[Child, int]:
        """The Procfile's `worker:`; its RSS (KiB) at its "started" line, before its first pass is done."""
        self.worker = Child(f"worker ({self.name})", [PYTHON, "-m", "receiver.worker"], self.env,
                            self.tmp / f"worker-{self.name}.log").start()
        marker = f":{self.worker.pid} started"
        poll_until(lambda: marker in self.worker.log_text(), timeout, "the worker to start", [self.worker],
                   interval=0.005)
        return self.worker, rss_kib(self.worker.pid)

    def stop(self) -> None:
        """Worker first (it finishes its batch), then the door, then the emulator."""
        for child in (self.worker, self.door, self.emulator.child):
            if child is not None:
                child.stop()


def receiver_env(tmp: Path, name: str, port: int, emulator_url: str, **extra: str) -> dict[str, str]:
    """The one environment of the door and the worker (SPEC 8, README Configuration)."""
    env = base_env()
    env.update(
        PORT=str(port), BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2", WORKER_IN_WEB="false",
        INBOX_URL=f"sqlite:///{tmp / f'inbox-{name}.db'}", LOG_SINK_PATH=str(tmp / f"events-{name}.jsonl"),
        RECEIVER_PUBLIC_URL=f"http://127.0.0.1:{port}", CALLBACK_TOKENS=TOKEN,
        MPS_NOTIFY_KEYS=MPS_KEY, VOD_SIGN_KEYS=VOD_KEY, AMS_SEEDS=AMS_SEED,
        TENCENTCLOUD_SECRET_ID=SECRET_ID, TENCENTCLOUD_SECRET_KEY=SECRET_KEY,
        TENCENTCLOUD_MPS_ENDPOINT=emulator_url, TENCENTCLOUD_VOD_ENDPOINT=emulator_url,
        TENCENTCLOUD_AMS_ENDPOINT=emulator_url,
    )
    env.update(extra)
    return env


def start_stack(setup: Setup, name: str, emulator_args: Iterable[str] = (), **env: str) -> Stack:
    """A fresh emulator and a fresh door on a fresh inbox; the caller stops it (Stack.stop) in a finally."""
    port, tmp = free_port(), setup.tmp
    emulator = Emulator(setup, name, f"http://127.0.0.1:{port}/callbacks/vod?token={TOKEN}", *emulator_args)
    settings = receiver_env(tmp, name, port, emulator.url, **env)
    door = Child(f"gunicorn ({name})", [str(GUNICORN), "-c", "gunicorn.conf.py", "--no-control-socket", "app:app"],
                 settings, tmp / f"gunicorn-{name}.log")
    stack = Stack(tmp, name, emulator, door, port, settings)
    try:
        emulator.start()
        door.start()
        poll_until(lambda: http_ok(stack.url + "/healthz"), 30, f"gunicorn on {stack.url}", [door])
    except BaseException:
        stack.stop()
        raise
    return stack


@contextmanager
def running_stack(setup: Setup, name: str, emulator_args: Iterable[str] = (), **env: str) -> Iterator[Stack]:
    stack = start_stack(setup, name, emulator_args, **env)
    try:
        yield stack
    finally:
        stack.stop()


# --- tasks in the emulator --------------------------------------------------------------


@dataclass(frozen=True)
class BenchTask:
    """A task created in the emulator, and the emulator's own Task mirrored here to render its callbacks."""

    mirror: Task

    @property
    def product(self) -> str:
        return self.mirror.service

    @property
    def task_id(self) -> str:
        return self.mirror.task_id

    @property
    def event_type(self) -> str:
        return EVENT_TYPES[self.mirror.kind]

    @property
    def event_id(self) -> str:
        """The id of the one event this task gives: its FINISH state."""
        return event_id(self.product, self.event_type, self.task_id, FINISH)


class TaskFactory:
    """Creates tasks in the emulator that notify the receiver; `silent` ones carry the no-callback marker."""

    def __init__(self, stack: Stack, silent: bool = True, notify_mode: str = "Change"):
        self.stack = stack
        self.silent = silent
        self.mode = notify_mode
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def _number(self) -> int:
        with self._lock:
            return next(self._numbers)

    def _input_url(self, n: int, extension: str) -> str:
        marker = f"{SILENT_MARKER}/" if self.silent else ""
        return f"https://media-in-1250000000.cos.ap-guangzhou.myqcloud.com/bench/{marker}{n}.{extension}"

    def _session(self, product: str, n: int) -> tuple[str, str]:
        context = json.dumps({"tenant": "bench", "order": n, "pipeline": "web-and-mobile"})
        return f"bench-{self.stack.name}-{product}-{n}", context

    def _mps_notify(self) -> dict[str, str]:
        return {"NotifyType": "URL", "NotifyMode": self.mode, "NotifyUrl": self.stack.notify_url("mps"),
                "NotifyKey": MPS_KEY}

    def mps(self, kind: str = "WorkflowTask") -> list[BenchTask]:
        n = self._number()
        session_id, context = self._session("mps", n)
        source = {"Type": "URL", "UrlInputInfo": {"Url": self._input_url(n, "mp4")}}
        params: dict[str, Any] = {
            "InputInfo": [source] if kind == "BatchTask" else source,
            "MediaProcessTask": {"TranscodeTaskSet": [{"Definition": 100030}, {"Definition": 100040}]},
            "TaskNotifyConfig": self._mps_notify(), "SessionId": session_id, "SessionContext": context,
        }
        action = "BatchProcessMedia" if kind == "BatchTask" else "ProcessMedia"
        task_id = self.stack.emulator.call("mps", action, params)["TaskId"]
        return [BenchTask(Task("mps", kind, task_id, params, time.time(), notify=dict(params["TaskNotifyConfig"]),
                               session_id=session_id, session_context=context))]

    def mps_batch(self) -> list[BenchTask]:
        return self.mps("BatchTask")

    def vod(self) -> list[BenchTask]:
        n = self._number()
        session_id, context = self._session("vod", n)
        params = {"FileId": f"528589078{n:010d}", "Procedure": "bench-procedure", "TasksNotifyMode": self.mode,
                  "SessionId": session_id, "SessionContext": context,
                  "ExtInfo": SILENT_MARKER if self.silent else ""}
        task_id = self.stack.emulator.call("vod", "ProcessMedia", params)["TaskId"]
        return [BenchTask(Task("vod", "Procedure", task_id, params, time.time(), session_id=session_id,
                               session_context=context))]

    def ams(self, count: int = AMS_TASKS_PER_CALL) -> list[BenchTask]:
        numbers = [self._number() for _ in range(count)]
        items = [{"DataId": f"bench-{self.stack.name}-{n}", "Name": f"episode-{n}",
                  "Input": {"Type": "URL", "Url": self._input_url(n, "mp3")}} for n in numbers]
        params = {"Tasks": items, "BizType": "bench", "Type": "AUDIO", "Seed": AMS_SEED,
                  "CallbackUrl": self.stack.notify_url("ams")}
        results = self.stack.emulator.call("ams", "CreateAudioModerationTask", params)["Results"]
        shared = {"BizType": "bench", "Type": "AUDIO", "Seed": AMS_SEED, "CallbackUrl": params["CallbackUrl"]}
        return [BenchTask(Task("ams", "AudioModeration", result["TaskId"], {**params, "Tasks": [item]}, time.time(),
                               extra={**shared, "DataId": item["DataId"], "Name": item["Name"],
                                      "Input": item["Input"]}))
                for item, result in zip(items, results, strict=True)]


def task_plan(count: int, products: tuple[str, ...] = ("mps", "vod", "ams")) -> list[tuple[str, int]]:
    """(product, how many) creating calls for `count` tasks mixed evenly over `products`, AMS 10 a call."""
    share = Counter(products[i % len(products)] for i in range(count))
    plan: list[tuple[str, int]] = []
    for product in products:
        if product == "ams":
            whole, rest = divmod(share[product], AMS_TASKS_PER_CALL)
            plan += [("ams", AMS_TASKS_PER_CALL)] * whole + ([("ams", rest)] if rest else [])
        else:
            plan += [(product, 1)] * share[product]
    return plan


def create_tasks(factory: TaskFactory, plan: list[tuple[str, int]], threads: int = SETUP_THREADS) -> list[BenchTask]:
    """Create the planned tasks concurrently; returned interleaved by product, as real traffic mixes them."""

    def create(step: tuple[str, int]) -> list[BenchTask]:
        product, count = step
        if product == "ams":
            return factory.ams(count)
        return factory.mps_batch() if product == "mps_batch" else getattr(factory, product)()

    with ThreadPoolExecutor(threads) as pool:
        created = [task for tasks in pool.map(create, plan) for task in tasks]
    by_product: dict[str, list[BenchTask]] = {}
    for task in created:
        by_product.setdefault(task.product, []).append(task)
    mixed = itertools.zip_longest(*by_product.values())
    return [task for group in mixed for task in group if task is not None]


def finished_counts(emulator: Emulator) -> Counter[str]:
    """Finished tasks per product, as DescribeTasks lists them (the Describe*Detail actions are left untouched)."""
    counts: Counter[str] = Counter()
    counts["mps"] = emulator.call("mps", "DescribeTasks", {"Status": FINISH, "Limit": 1})["TotalCount"]
    counts["ams"] = int(emulator.call("ams", "DescribeTasks", {"Filter": {"TaskStatus": FINISH}, "Limit": 1})["Total"])
    token = ""
    while True:
        page = emulator.call("vod", "DescribeTasks", {"Status": FINISH, "Limit": 100, "ScrollToken": token})
        counts["vod"] += len(page["TaskSet"])
        token = page["ScrollToken"]
        if not token:
            return counts


def wait_finished(stack: Stack, tasks: list[BenchTask], timeout: float = 60) -> None:
    """Poll until the emulator lists every task as finished."""
    wanted = Counter(task.product for task in tasks)
    poll_until(lambda: all(finished_counts(stack.emulator)[p] >= n for p, n in wanted.items()), timeout,
               f"{len(tasks)} tasks to finish", stack.children, interval=0.2)


# --- callbacks -------------------------------------------------------------------------------


def callback_body(task: BenchTask, status: str) -> dict[str, Any]:
    """The callback the emulator would send at `status` (before its signature), rendered by the emulator's code.

    Times are fixed per task, so the FINISH body and its retry are the same content.
    """
    created = task.mirror.created_at
    mirror = dataclasses.replace(task.mirror, status=status, began_at=created + PROCESSING_AFTER,
                                 finished_at=created + FINISH_AFTER if status == FINISH else None)
    if task.product == "mps":
        return render.mps_callback(mirror)
    if task.product == "vod":
        return render.vod_callback(mirror)
    return render.ams_callback(mirror)


def signed_callback(task: BenchTask, status: str, now: float) -> tuple[bytes, dict[str, str]]:
    """The body and headers to post, signed as the product signs (`now` picks the MPS/VOD expiry)."""
    body = callback_body(task, status)
    if task.product == "mps":
        return json.dumps(sign_mps_notification(body, MPS_KEY, now=now)).encode(), JSON_HEADERS
    if task.product == "vod":
        return json.dumps(sign_vod_event(body, VOD_KEY, now=now)).encode(), JSON_HEADERS
    return sign_ams_callback(body, AMS_SEED)  # AMS signs the body only: a retry carries the same signature


@dataclass(frozen=True)
class Step:
    """One callback of a task: its name in the report, the status it claims, and the answer expected."""

    name: str
    status: str
    expected: str
    resign_after: float = 0.0  # a retry is signed with a later expiry: a fresh signature


BACKLOG_STEPS = (Step("processing", PROCESSING, "accepted"), Step("finish", FINISH, "accepted"),
                 Step("finish retry", FINISH, "duplicate", resign_after=1.0))
FINISH_ONLY = (Step("finish", FINISH, "accepted"),)


def post_one(session: requests.Session, url: str, task: BenchTask, step: Step) -> str:
    """Post one signed callback; the door's answer as "accepted", "duplicate" or "HTTP <code>"."""
    raw, headers = signed_callback(task, step.status, time.time() + step.resign_after)
    try:
        response = session.post(f"{url}/callbacks/{task.product}", params={"token": TOKEN}, data=raw,
                                headers=headers, timeout=30)
    except requests.RequestException as error:
        return type(error).__name__
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    return str(response.json().get("status"))


def post_callbacks(url: str, tasks: list[BenchTask], steps: tuple[Step, ...] = BACKLOG_STEPS,
                   threads: int = SETUP_THREADS) -> Counter[str]:
    """Every step of every task, each task's steps in order on one thread; answers counted as "<step>: <answer>"."""

    def post_share(share: list[BenchTask]) -> Counter[str]:
        answers: Counter[str] = Counter()
        with requests.Session() as session:
            for task in share:
                for step in steps:
                    answers[f"{step.name}: {post_one(session, url, task, step)}"] += 1
        return answers

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(post_share, [tasks[i::threads] for i in range(threads)]), Counter())


def unexpected_answers(answers: Counter[str], steps: tuple[Step, ...]) -> dict[str, int]:
    expected = {f"{step.name}: {step.expected}" for step in steps}
    return {answer: n for answer, n in answers.items() if answer not in expected}


# --- what came out: sink, inbox, emulator ---------------------------------------------------


class SinkTail:
    """Reads the JSON-lines sink as it grows, counting each event id (a line cut short is left for later)."""

    def __init__(self, path: Path):
        self.path = path
        self.counts: Counter[str] = Counter()
        self.lines = 0  # event lines read so far: an int other threads may read while poll() runs
        self._offset = 0
        self._partial = b""

    def poll(self) -> Counter[str]:
        try:
            with open(self.path, "rb") as sink:
                sink.seek(self._offset)
                data = sink.read()
        except FileNotFoundError:
            return self.counts
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self.counts[json.loads(line)["event_id"]] += 1
                self.lines += 1
        return self.counts


def _query(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def forwarded_times(inbox: Path) -> dict[str, float]:
    """event_id -> forwarded_at: the worker's clock as it handed the event to the sink."""
    return dict(_query(inbox, "SELECT event_id, forwarded_at FROM forwarded"))


def unsettled_records(inbox: Path) -> int:
    return _query(inbox, "SELECT COUNT(*) FROM inbox WHERE state IN ('pending', 'leased')")[0][0]


def accept_to_forward(inbox: Path, tasks: list[BenchTask], forwarded: dict[str, float]) -> list[float]:
    """Seconds from each accepted callback of `tasks` (the inbox's received_at) to its task's event forwarded."""
    wanted = {(t.product, t.task_id): t.event_id for t in tasks}
    rows = _query(inbox, "SELECT source, task_id, received_at FROM inbox")
    return [forwarded[wanted[(source, task_id)]] - received for source, task_id, received in rows
            if (source, task_id) in wanted and wanted[(source, task_id)] in forwarded]


class StatsTimeline:
    """Polls /_emulator/stats every 100 ms; per action, when its call count first and last changed.

    The fallback for an emulator without a call log: a change seen at a poll
    happened since the poll before, so each edge is taken at the midpoint.
    """

    def __init__(self, emulator: Emulator, interval: float = POLL_SECONDS):
        self._emulator = emulator
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-timeline", daemon=True)
        self._last_calls: dict[str, int] | None = None  # None until the baseline poll
        self._last_poll = time.time()
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.error: str | None = None

    def start(self) -> StatsTimeline:
        self._poll()  # the baseline, before the worker's first call
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._poll()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._poll()
            except (requests.RequestException, ValueError) as error:
                self.error = f"{type(error).__name__}: {error}"

    def _poll(self) -> None:
        calls = {action: figures["calls"] for action, figures in self._emulator.stats()["actions"].items()}
        now = time.time()
        if self._last_calls is not None:
            edge = (self._last_poll + now) / 2
            for action, count in calls.items():
                if count > self._last_calls.get(action, 0):
                    self.first.setdefault(action, edge)
                    self.last[action] = edge
        self._last_calls, self._last_poll = calls, now


def call_times(log: Any) -> dict[str, list[float]] | None:
    """Per action, the times of the calls in an emulator call log; None when the log has no recognisable shape.

    Accepted: a list of calls (or ``{"calls": [...]}``), each with its action (``"mps.DescribeTaskDetail"``, or
    ``service`` and ``action``) and a time (``at``, ``admitted_at``, ``time``, ...); or ``{action: [times]}``.
    Only differences of times are used, so any one clock will do.
    """
    entries = log.get("calls", log) if isinstance(log, dict) else log
    if isinstance(entries, dict):
        if all(isinstance(v, list) and all(isinstance(t, int | float) for t in v) for v in entries.values()):
            return {str(action): [float(t) for t in times] for action, times in entries.items()}
        return None
    if not isinstance(entries, list):
        return None
    times: dict[str, list[float]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            return None
        action = entry.get("action")
        if isinstance(action, str) and "." not in action and isinstance(entry.get("service"), str):
            action = f"{entry['service']}.{action}"
        at = next((entry[k] for k in ("at", "admitted_at", "time", "timestamp", "ts", "started_at", "ended_at")
                   if isinstance(entry.get(k), int | float)), None)
        if not isinstance(action, str) or at is None:
            return None
        times.setdefault(action, []).append(float(at))
    return times


# --- one measured run ---------------------------------------------------------------------


@dataclass
class ActionFigures:
    action: str
    limit: int | None
    calls: int
    span_s: float
    max_1s: int
    max_1s_attempted: int
    rate_limited: int
    errors: dict[str, int]
    max_in_flight: int | None
    timed_by: str = "stats polling"  # or "call log": where the first and last call times come from

    @property
    def share(self) -> float:
        """Calls admitted over what the limit allows from the first call to the last.

        A limiter that lets a full window through at once scores a little above 1 on a short backlog
        (100 calls at t=0, 100 at t=1, 22 at t=2: 222 / (100 x 2) = 1.11): the measure is for backlogs of
        many windows.
        """
        admitted = self.calls - self.rate_limited
        if not self.limit or admitted < 2 or self.span_s <= 0:
            return math.nan
        return admitted / (self.limit * self.span_s)


@dataclass
class Probe:
    latencies: list[float]
    answers: Counter[str]
    posted: int


@dataclass
class RunResult:
    kind: str
    latency: float
    tasks: int
    callbacks: int
    answers: Counter[str]
    steps: tuple[Step, ...]
    expected: set[str]
    seen: Counter[str]
    forwarded: dict[str, float]
    actions: list[ActionFigures]
    describe_calls: int
    accept_to_forward: list[float]
    rss_before_kib: int
    rss_after_kib: int
    drain_s: float
    unsettled: int
    emulator_call_ms: float = math.nan
    sqs_calls: Counter[str] | None = None
    probe: Probe | None = None

    @property
    def missing(self) -> int:
        return len(self.expected - set(self.seen))

    @property
    def doubled(self) -> int:
        return sum(n - 1 for n in self.seen.values() if n > 1)

    @property
    def unexpected(self) -> int:
        return len(set(self.seen) - self.expected)

    @property
    def events_per_s(self) -> float:
        times = sorted(t for e, t in self.forwarded.items() if e in self.expected)
        return len(times) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else math.nan

    @property
    def calls_per_callback(self) -> float:
        return self.describe_calls / self.callbacks if self.callbacks else math.nan

    @property
    def sqs_calls_per_event(self) -> float:
        if self.sqs_calls is None or not self.expected:
            return math.nan
        return sum(self.sqs_calls.values()) / len(self.expected)

    def problems(self) -> list[str]:
        """What makes this run fail: events lost or doubled, limits exceeded, the door answering otherwise."""
        where = f"{self.kind} at {self.latency * 1000:g} ms"
        found = []
        if self.missing or self.doubled or self.unexpected:
            found.append(f"{where}: {self.missing} event(s) missing, {self.doubled} doubled, "
                         f"{self.unexpected} unexpected, of {len(self.expected)}")
        for a in self.actions:
            if a.rate_limited:
                found.append(f"{where}: {a.action} answered RequestLimitExceeded {a.rate_limited} time(s)")
            if a.limit is not None and a.max_1s > a.limit:
                found.append(f"{where}: {a.action} admitted {a.max_1s} calls in one second, limit {a.limit}")
        odd = unexpected_answers(self.answers, self.steps)
        if odd:
            found.append(f"{where}: unexpected door answers {odd}")
        if self.probe is not None and unexpected_answers(self.probe.answers, FINISH_ONLY):
            found.append(f"{where}: unexpected door answers to the probe {dict(self.probe.answers)}")
        if self.probe is not None and len(self.probe.latencies) != self.probe.posted:
            found.append(f"{where}: the probe timed {len(self.probe.latencies)} of {self.probe.posted} callbacks")
        return found


def action_figures(before: dict[str, Any], after: dict[str, Any], timeline: StatsTimeline,
                   log_times: dict[str, list[float]] | None) -> list[ActionFigures]:
    """Per Describe action the worker called: its calls in the run, its span, its busiest second, its errors.

    An action's span comes from the emulator's call log when the log holds exactly this run's admitted calls
    of it (not cut short, none of the bench's own); otherwise from polling the stats.
    """
    figures = []
    for action, now in sorted(after.items()):
        if not action.split(".", 1)[1].startswith("Describe"):
            continue
        then = before.get(action, {"calls": 0, "errors": {}})
        calls = now["calls"] - then["calls"]
        if calls <= 0:
            continue
        errors = {code: n - then["errors"].get(code, 0) for code, n in now["errors"].items()
                  if n - then["errors"].get(code, 0) > 0}
        figure = ActionFigures(
            action, now.get("limit"), calls, 0.0, now["max_1s_window"], now.get("max_1s_window_attempted", 0),
            errors.get("RequestLimitExceeded", 0), errors, now.get("max_in_flight"))
        times = (log_times or {}).get(action, [])
        if times and calls - figure.rate_limited <= len(times) <= calls:
            figure.span_s, figure.timed_by = max(times) - min(times), "call log"
        elif action in timeline.first:
            figure.span_s = timeline.last[action] - timeline.first[action]
        figures.append(figure)
    return figures


def describe_calls(figures: list[ActionFigures]) -> int:
    return sum(f.calls for f in figures)


def backlog_timeout(tasks: int, latency: float) -> float:
    """Generous: a serial worker at this latency, twice over, plus a minute."""
    return 60 + 2 * tasks * (latency + 0.02) + tasks / 20


@dataclass
class Drained:
    """What one drain of a queued backlog measured."""

    rss_before_kib: int
    rss_after_kib: int
    drain_s: float
    unsettled: int
    before: dict[str, Any]
    after: dict[str, Any]
    timeline: StatsTimeline
    log_times: dict[str, list[float]] | None


def drain_backlog(stack: Stack, done: Callable[[], bool], timeout: float) -> Drained:
    """Start the worker on the queued callbacks and wait until `done()`, then until the inbox has settled."""
    before = stack.emulator.stats()["actions"]
    timeline = StatsTimeline(stack.emulator).start()
    try:
        worker, rss_before = stack.start_worker()
        started = time.monotonic()  # from the worker's "started" line: its imports are not the backlog's
        poll_until(done, timeout, "every task's event in the sink", stack.children, interval=0.05)
        drain_s = time.monotonic() - started
        unsettled = wait_settled(stack)
    finally:
        timeline.stop()
    log_times = call_times(stack.emulator.call_log())
    return Drained(rss_before, rss_kib(worker.pid), drain_s, unsettled, before, stack.emulator.stats()["actions"],
                   timeline, log_times)


def wait_settled(stack: Stack, timeout: float = 40.0) -> int:
    """Poll until no inbox record is pending or leased, at most `timeout`; how many still are."""
    deadline = time.monotonic() + timeout
    while (unsettled := unsettled_records(stack.inbox)) and time.monotonic() < deadline:
        for child in stack.children:
            child.check_alive()
        time.sleep(0.1)
    return unsettled


def run_backlog(setup: Setup, kind: str, latency: float, task_count: int, products: tuple[str, ...],
                probe_count: int = 0, **env: str) -> RunResult:
    """One backlog run on fresh processes, with an idle probe after it when `probe_count` > 0."""
    name = f"{kind}-{latency * 1000:g}ms"
    with running_stack(setup, name, **env) as stack:
        factory = TaskFactory(stack)
        tasks = create_tasks(factory, task_plan(task_count, products))
        probe_tasks = create_tasks(factory, task_plan(probe_count)) if probe_count else []
        wait_finished(stack, tasks + probe_tasks)
        own_call_ms = stack.emulator.own_call_ms()
        stack.emulator.set_latency(latency)
        answers = post_callbacks(stack.url, tasks)
        expected = {t.event_id for t in tasks}
        sink = SinkTail(stack.sink)
        drained = drain_backlog(stack, lambda: expected <= set(sink.poll()), backlog_timeout(task_count, latency))
        seen = Counter(sink.poll())  # a copy: the probe's events come after
        forwarded = forwarded_times(stack.inbox)
        result = _result(kind, latency, tasks, answers, BACKLOG_STEPS, expected, seen, forwarded, drained, stack)
        result.emulator_call_ms = own_call_ms
        if probe_tasks:
            result.probe = idle_probe(stack, probe_tasks, sink)
        return result


def _result(kind: str, latency: float, tasks: list[BenchTask], answers: Counter[str], steps: tuple[Step, ...],
            expected: set[str], seen: Counter[str], forwarded: dict[str, float], drained: Drained,
            stack: Stack) -> RunResult:
    actions = action_figures(drained.before, drained.after, drained.timeline, drained.log_times)
    return RunResult(
        kind=kind, latency=latency, tasks=len(tasks), callbacks=sum(answers.values()), answers=answers, steps=steps,
        expected=expected, seen=seen, forwarded=forwarded, actions=actions, describe_calls=describe_calls(actions),
        accept_to_forward=accept_to_forward(stack.inbox, tasks, forwarded),
        rss_before_kib=drained.rss_before_kib, rss_after_kib=drained.rss_after_kib, drain_s=drained.drain_s,
        unsettled=drained.unsettled,
    )


def idle_probe(stack: Stack, tasks: list[BenchTask], sink: SinkTail, interval: float = 0.2) -> Probe:
    """With the worker idle: one FINISH callback at a time, `interval` apart; accept -> forward of each."""
    answers: Counter[str] = Counter()
    next_at = time.monotonic()
    with requests.Session() as session:
        for task in tasks:
            answers[f"finish: {post_one(session, stack.url, task, FINISH_ONLY[0])}"] += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))  # pacing, not waiting for anything
    wanted = {t.event_id for t in tasks}

    def all_forwarded() -> dict[str, float] | None:
        """The forwarded times once every probe event is in the sink and marked forwarded in the inbox.

        The worker writes the sink first and marks the inbox after: the sink alone can be a moment early.
        """
        if not wanted <= set(sink.poll()):
            return None
        forwarded = forwarded_times(stack.inbox)
        return forwarded if wanted <= set(forwarded) else None

    forwarded = poll_until(all_forwarded, 60 + len(tasks), "the probe's events", stack.children, interval=0.02)
    return Probe(accept_to_forward(stack.inbox, tasks, forwarded), answers, len(tasks))


# --- the SQS sink on moto_server, behind a counting proxy ----------------------------------------


class CountingProxy:
    """A reverse proxy in front of moto_server counting SQS requests by action (X-Amz-Target or Action)."""

    def __init__(self, upstream_port: int):
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._upstream_port = upstream_port
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                proxy.relay(self)

            do_GET = do_POST  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def action_of(handler: BaseHTTPRequestHandler, body: bytes) -> str:
        target = handler.headers.get("X-Amz-Target")
        if target:
            return target.rsplit(".", 1)[-1]
        form = parse_qs(body.decode(errors="replace")) or parse_qs(urlsplit(handler.path).query)
        return form.get("Action", ["?"])[0]

    def _upstream(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self._upstream_port, timeout=60)
        return conn

    def relay(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self._lock:
            self.counts[self.action_of(handler, body)] += 1
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("connection", "keep-alive")}
        for attempt in (0, 1):
            conn = self._upstream(fresh=attempt > 0)
            try:
                conn.request(handler.command, handler.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                if attempt:
                    handler.send_error(502)
                    return
        handler.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(tmp: Path) -> tuple[Child, str]:
    """`python -m moto.server` on a free port, as tests/moto_fixtures.py starts it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = Child("moto_server", [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                 {**base_env(), **AWS_ENV}, tmp / "moto.log").start()
    try:
        poll_until(lambda: http_ok(url + "/moto-api/"), 60, "moto_server", [moto])
    except BaseException:
        moto.stop()
        raise
    return moto, url


def sqs_client(url: str) -> Any:
    return boto3.client("sqs", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=BotoConfig(retries={"mode": "standard"}))


def drain_queue(sqs: Any, queue_url: str, expected: int, timeout: float) -> Counter[str]:
    """Every message on the queue (hidden, not deleted), counted by event id; a doubled send shows twice."""
    counts: Counter[str] = Counter()

    def empty_after_all() -> bool:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=900,
                                     WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        for message in messages:
            counts[json.loads(message["Body"])["event_id"]] += 1
        return not messages and sum(counts.values()) >= expected

    poll_until(empty_after_all, timeout, f"{expected} messages on the event queue", interval=0.01)
    return counts


def run_sqs(setup: Setup, latency: float, task_count: int) -> RunResult:
    """The backlog run with SINK=sqs: every SQS request of the worker counted on its way to moto_server."""
    moto, moto_url = start_moto(setup.tmp)
    proxy: CountingProxy | None = None
    try:
        sqs = sqs_client(moto_url)
        queue_url = sqs.create_queue(QueueName="bench-events",
                                     Attributes={"MaximumMessageSize": "262144"})["QueueUrl"]
        proxy = CountingProxy(int(urlsplit(moto_url).port or 0)).start()
        env = {**AWS_ENV, "SINK": "sqs", "SQS_QUEUE_URL": queue_url, "AWS_ENDPOINT_URL_SQS": proxy.url,
               "AWS_ENDPOINT_URL_S3": moto_url}
        name = f"sqs-{latency * 1000:g}ms"
        with running_stack(setup, name, **env) as stack:
            tasks = create_tasks(TaskFactory(stack), task_plan(task_count))
            wait_finished(stack, tasks)
            own_call_ms = stack.emulator.own_call_ms()
            stack.emulator.set_latency(latency)
            answers = post_callbacks(stack.url, tasks)
            expected = {t.event_id for t in tasks}
            proxy.reset()  # only the worker talks to SQS (web processes use the SQLite inbox)
            drained = drain_backlog(stack, lambda: expected <= set(forwarded_times(stack.inbox)),
                                    backlog_timeout(task_count, latency))
            sqs_counts = Counter(proxy.counts)
            seen = drain_queue(sqs, queue_url, len(expected), timeout=120)
            forwarded = forwarded_times(stack.inbox)
            result = _result("sqs", latency, tasks, answers, BACKLOG_STEPS, expected, seen, forwarded, drained,
                             stack)
            result.sqs_calls = sqs_counts
            result.emulator_call_ms = own_call_ms
            return result
    finally:
        if proxy is not None:
            proxy.stop()
        moto.stop()


# --- soak: the worker's memory over many events ------------------------------------------------


@dataclass
class SoakResult:
    events: int
    emulator_call_ms: float
    start_rss_kib: int
    samples: list[tuple[int, int]]  # (events forwarded, worker RSS KiB) at each tenth
    missing: int
    doubled: int
    unexpected: int
    wall_s: float
    answers: Counter[str]

    @property
    def growth(self) -> float:
        """RSS at the end over RSS at the first tenth, minus one."""
        if len(self.samples) < 2:
            return math.nan
        return self.samples[-1][1] / self.samples[0][1] - 1


class Feeder:
    """Creates tasks that call back by themselves, staying at most `lead` events ahead of the sink."""

    def __init__(self, factory: TaskFactory, total: int, lead: int, forwarded: Callable[[], int]):
        self.factory = factory
        self.total = total
        self.lead = lead
        self.forwarded = forwarded
        self.created: list[BenchTask] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-feeder", daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def check(self) -> bool:
        """True while the feeder is well; raises BenchError once it failed."""
        if self.error is not None:
            raise BenchError(f"the soak's feeder failed: {self.error!r}")
        return True

    def _run(self) -> None:
        try:
            while len(self.created) < self.total and not self._stop.is_set():
                if len(self.created) - self.forwarded() >= self.lead:
                    self._stop.wait(0.05)  # backpressure: let the worker catch up
                    continue
                chunk = task_plan(min(300, self.total - len(self.created)))
                self.created += create_tasks(self.factory, chunk, threads=4)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self.error = error


def run_soak(setup: Setup, events: int, timeout: float) -> SoakResult:
    """Limits raised on both sides, latency 0, tasks fed while the worker runs; RSS at each tenth of `events`."""
    high = 100_000
    flags = list(itertools.chain.from_iterable(("--rate-limit", f"{a}={high}") for a in DESCRIBE_ACTIONS))
    env = {variable: str(high) for variable in DESCRIBE_ACTIONS.values()}
    started = time.monotonic()
    deadline = started + timeout
    with running_stack(setup, "soak", flags, **env) as stack:
        own_call_ms = stack.emulator.own_call_ms()
        sink = SinkTail(stack.sink)
        worker, rss = stack.start_worker()
        samples: list[tuple[int, int]] = []
        feeder = Feeder(TaskFactory(stack, silent=False, notify_mode="Finish"), events, 3000,
                        lambda: sink.lines).start()

        def reached(mark: int) -> bool:
            feeder.check()
            sink.poll()
            return sink.lines >= mark

        try:
            for mark in (events * k // 10 for k in range(1, 11)):
                poll_until(lambda m=mark: reached(m), deadline - time.monotonic(), f"{mark} events in the sink",
                           stack.children, interval=0.2)
                samples.append((sink.lines, rss_kib(worker.pid)))
                print(f"  soak: {samples[-1][0]} events forwarded, worker RSS {samples[-1][1] / 1024:.1f} MiB "
                      f"({time.monotonic() - started:.0f}s)", flush=True)
        finally:
            feeder.stop()
        feeder.check()
        wait_settled(stack, 60)
        expected = {t.event_id for t in feeder.created}
        seen = sink.poll()
        answers = Counter(stack.emulator.stats()["callbacks"]["counts"])
        return SoakResult(len(expected), own_call_ms, rss, samples, len(expected - set(seen)),
                          sum(n - 1 for n in seen.values() if n > 1), len(set(seen) - expected),
                          time.monotonic() - started, answers)


# --- report ---------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def _num(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _pct(values: list[float], q: float) -> float:
    return percentile(values, q) if values else math.nan


def _action_cell(result: RunResult, fmt: Callable[[ActionFigures], str]) -> str:
    return " / ".join(f"{a.action.replace('DescribeTaskDetail', 'DTD').replace('DescribeBatchTaskDetail', 'DBTD')} "
                      f"{fmt(a)}" for a in result.actions if a.action in DESCRIBE_ACTIONS) or "-"


def print_run_table(title: str, results: list[RunResult]) -> None:
    """One Markdown table, one row per latency."""
    if not results:
        return
    sqs = any(r.sqs_calls is not None for r in results)
    print(f"\n### {title}\n")
    head = ["latency", "tasks", "callbacks", "events", "events/s", "share of limit", "max calls in 1 s (limit)",
            "RequestLimitExceeded", "Describe calls/callback", "accept->fwd p50 ms", "p99 ms",
            "RSS start MiB", "RSS end MiB", "missing", "doubled"]
    if sqs:
        head.insert(9, "SQS calls/event")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        row = [f"{r.latency * 1000:g} ms", str(r.tasks), str(r.callbacks), str(len(set(r.seen) & r.expected)),
               _num(r.events_per_s, 1), _action_cell(r, lambda a: _num(a.share)),
               _action_cell(r, lambda a: f"{a.max_1s} ({a.limit})"), str(sum(a.rate_limited for a in r.actions)),
               _num(r.calls_per_callback, 3), _ms(_pct(r.accept_to_forward, 50)), _ms(_pct(r.accept_to_forward, 99)),
               f"{r.rss_before_kib / 1024:.1f}", f"{r.rss_after_kib / 1024:.1f}", str(r.missing), str(r.doubled)]
        if sqs:
            row.insert(9, _num(r.sqs_calls_per_event, 3))
        print("| " + " | ".join(row) + " |")
    print()
    for r in results:
        details = ", ".join(f"{a.action} {a.calls} calls in {a.span_s:.2f} s ({a.timed_by}; most attempted in "
                            f"1 s: {a.max_1s_attempted})"
                            + (f" (max in flight {a.max_in_flight})" if a.max_in_flight is not None else "")
                            for a in r.actions)
        notes = (f"  {r.latency * 1000:g} ms: drained in {r.drain_s:.1f} s; emulator's own time per call "
                 f"{r.emulator_call_ms:.1f} ms + the latency; {details}")
        if r.sqs_calls is not None:
            notes += f"; SQS {dict(r.sqs_calls)}"
        if r.unsettled:
            notes += f"; {r.unsettled} inbox record(s) still unsettled"
        print(notes)
    print(f"  (stats polled every {POLL_SECONDS * 1000:g} ms: a span from polling is good to +-{POLL_SECONDS:g} s; "
          f"door answers: {', '.join(f'{k} {v}' for k, v in sorted(results[0].answers.items()))})")


def print_probe_table(results: list[RunResult]) -> None:
    probed = [r for r in results if r.probe is not None]
    if not probed:
        return
    print("\n### Idle probe: one callback at a time, ~200 ms apart, worker idle\n")
    print("| latency | callbacks | accept->fwd p50 ms | p99 ms | p50 minus one call's latency ms |")
    print("|---|---|---|---|---|")
    for r in probed:
        assert r.probe is not None
        p50 = _pct(r.probe.latencies, 50)
        print(f"| {r.latency * 1000:g} ms | {len(r.probe.latencies)} | {_ms(p50)} | "
              f"{_ms(_pct(r.probe.latencies, 99))} | {_ms(p50 - r.latency)} |")


def print_soak(soak: SoakResult | None) -> None:
    if soak is None:
        return
    print("\n### Soak: worker RSS as events are forwarded (latency 0, limits raised, tasks fed while it runs)\n")
    print("| events forwarded | worker RSS MiB |")
    print("|---|---|")
    print(f"| 0 (worker started) | {soak.start_rss_kib / 1024:.1f} |")
    for count, rss in soak.samples:
        print(f"| {count} | {rss / 1024:.1f} |")
    print(f"\n  {soak.events} events in {soak.wall_s:.0f} s ({soak.events / soak.wall_s:.0f}/s; the emulator's own "
          f"time per call {soak.emulator_call_ms:.1f} ms); {soak.missing} missing, {soak.doubled} doubled, "
          f"{soak.unexpected} unexpected; the emulator's callbacks: {dict(soak.answers)}")


def _verdict(ok: bool | None) -> str:
    return "not run" if ok is None else ("PASS" if ok else "FAIL")


Row = tuple[str, str, str]  # target, measured, verdict


def _share_row(label: str, runs: list[RunResult]) -> list[Row]:
    shares = [(r, a) for r in runs for a in r.actions if a.action in DESCRIBE_ACTIONS]
    if not shares:
        return []
    run, worst = min(shares, key=lambda ra: -1 if math.isnan(ra[1].share) else ra[1].share)
    return [(f">= {TARGET_LIMIT_SHARE} of each limit at every latency ({label})",
             f"lowest {_num(worst.share)} ({worst.action} at {run.latency * 1000:g} ms)",
             _verdict(all(a.share >= TARGET_LIMIT_SHARE for _, a in shares)))]


def _calls_row(label: str, runs: list[RunResult]) -> list[Row]:
    if not runs:
        return []
    worst = max(r.calls_per_callback for r in runs)
    return [(f"<= {TARGET_CALLS_PER_CALLBACK} Describe calls per callback ({label})", f"highest {_num(worst, 3)}",
             _verdict(worst <= TARGET_CALLS_PER_CALLBACK))]


def _sqs_row(runs: list[RunResult]) -> Row:
    worst = max((r.sqs_calls_per_event for r in runs), default=math.nan)
    return (f"<= {TARGET_SQS_CALLS_PER_EVENT} SQS calls per event", _num(worst, 3),
            _verdict(None if not runs else worst <= TARGET_SQS_CALLS_PER_EVENT))


def _rss_row(soak: SoakResult | None) -> Row:
    if soak is None or len(soak.samples) < 2:
        return f"worker RSS within {TARGET_RSS_GROWTH:.0%} from 10k to 100k events (--soak)", "n/a", "not run"
    return (f"worker RSS within {TARGET_RSS_GROWTH:.0%} from {soak.samples[0][0]} to {soak.samples[-1][0]} events",
            f"{soak.growth:+.1%}", _verdict(abs(soak.growth) <= TARGET_RSS_GROWTH))


def _probe_rows(runs: list[RunResult]) -> list[Row]:
    rows = []
    for r in runs:
        if r.probe is None:
            continue
        p50 = _pct(r.probe.latencies, 50)
        verdict = _verdict(p50 < TARGET_IDLE_P50_S) if r.latency < TARGET_IDLE_P50_S else \
            "n/a (one Describe call takes longer)"
        rows.append((f"idle accept->forward p50 < {TARGET_IDLE_P50_S * 1000:g} ms at {r.latency * 1000:g} ms",
                     f"{_ms(p50)} ms", verdict))
    return rows


def targets(backlog: list[RunResult], batch: list[RunResult], sqs: list[RunResult],
            soak: SoakResult | None) -> list[Row]:
    """(target, measured, verdict) for each target, over every run that was made."""
    runs = (("backlog", backlog), ("batch", batch), ("sqs", sqs))
    return [
        *(row for label, group in runs for row in _share_row(label, group)),
        *(row for label, group in runs for row in _calls_row(label, group)),
        _sqs_row(sqs), _rss_row(soak), *_probe_rows(backlog),
    ]


def print_targets(rows: list[Row]) -> None:
    print("\n### Targets\n")
    print("| target | measured | verdict |")
    print("|---|---|---|")
    for target, measured, verdict in rows:
        print(f"| {target} | {measured} | {verdict} |")


def print_header(args: argparse.Namespace, setup: Setup) -> None:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("Pipeline benchmark: worker throughput against the Tencent Cloud emulator, at injected API latency")
    print(f"  command:   {shlex.quote(sys.executable)} -m bench.pipeline {shlex.join(sys.argv[1:])}".rstrip())
    print(f"  machine:   nproc={affinity} ({platform.machine()}, {platform.platform()}), "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  software:  Python {platform.python_version()}, gunicorn {metadata.version('gunicorn')}, "
          f"tencentcloud-sdk {metadata.version('tencentcloud-sdk-python-common')}, moto {metadata.version('moto')}")
    print(f"  code:      {ROOT} ({_git_head()})")
    print("  emulator:  python -m emulator")
    print("  processes: per run a fresh emulator, gunicorn -c gunicorn.conf.py --no-control-socket app:app "
          "(WEB_CONCURRENCY=2, WORKER_IN_WEB=false),")
    print("             then python -m receiver.worker once every callback is queued")
    print(f"  limits:    emulator defaults (mps/vod DescribeTaskDetail 100/s, mps DescribeBatchTaskDetail 20/s, "
          f"ams DescribeTaskDetail 20/s); creating actions {CREATING_LIMIT}/s")
    print(f"  callbacks: per task PROCESSING, FINISH, FINISH again under a fresh signature (answered duplicate), "
          f"signed with receiver.auth; ~{args.callbacks} per run, MPS/VOD/AMS mixed")
    print(f"  inbox:     SQLite under {setup.tmp} ({filesystem_of(setup.tmp)})")
    print(flush=True)


def _git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "receiver"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return f"{head}{' + uncommitted changes under receiver/' if dirty else ''}"


# --- main -------------------------------------------------------------------------------------------


def _latencies(text: str) -> list[float]:
    try:
        values = [float(part) / 1000 for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds separated by commas, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("latencies must be non-negative milliseconds")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description=("Measure the worker's throughput against the local Tencent Cloud emulator at injected API "
                     "latency: a queued backlog of signed MPS/VOD/AMS callbacks per latency, an idle probe, a "
                     "BatchTask run, an SQS-sink run on moto_server and (--soak) the worker's memory over many "
                     "events. Exits 1 if an event is lost or doubled or a rate limit is exceeded."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--latencies", type=_latencies, default=_latencies("0,50,150,500"),
                        help="injected API latencies, in ms, one backlog run each")
    parser.add_argument("--callbacks", type=int, default=2000, help="callbacks per backlog run (3 per task)")
    parser.add_argument("--probe-callbacks", type=int, default=30, help="idle-probe callbacks per latency (0: none)")
    parser.add_argument("--skip-batch", action="store_true", help="skip the BatchTask run")
    parser.add_argument("--batch-tasks", type=int, default=200, help="BatchTasks in the batch run")
    parser.add_argument("--batch-latency", type=_latencies, default=_latencies("150"),
                        help="latency (ms) of the batch run")
    parser.add_argument("--batch-all-latencies", action="store_true", help="run the batch run at every --latencies")
    parser.add_argument("--skip-sqs", action="store_true", help="skip the SQS-sink run")
    parser.add_argument("--sqs-events", type=int, default=300, help="events (tasks) in the SQS run")
    parser.add_argument("--sqs-latency", type=_latencies, default=_latencies("150"),
                        help="latency (ms) of the SQS run")
    parser.add_argument("--soak", action="store_true", help="also run the soak (several minutes)")
    parser.add_argument("--soak-events", type=int, default=100_000, help="events in the soak (RSS at each tenth)")
    parser.add_argument("--soak-timeout", type=float, default=3600, help="seconds the soak may take at most")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, inboxes, sinks)")
    args = parser.parse_args(argv)
    if args.callbacks < 3 or args.batch_tasks < 1 or args.sqs_events < 1 or args.soak_events < 10:
        parser.error("--callbacks must be at least 3, --batch-tasks and --sqs-events at least 1, "
                     "--soak-events at least 10")
    return args


def run(args: argparse.Namespace, tmp: Path) -> int:
    """Every run the options ask for, the tables and the targets; return the exit status."""
    setup = Setup(tmp)
    print_header(args, setup)
    tasks = max(1, round(args.callbacks / len(BACKLOG_STEPS)))
    backlog: list[RunResult] = []
    for latency in args.latencies:
        print(f"backlog run at {latency * 1000:g} ms: {tasks} tasks, {tasks * len(BACKLOG_STEPS)} callbacks ...",
              flush=True)
        backlog.append(run_backlog(setup, "backlog", latency, tasks, ("mps", "vod", "ams"), args.probe_callbacks))
        _progress(backlog[-1])
    batch: list[RunResult] = []
    if not args.skip_batch:
        for latency in args.latencies if args.batch_all_latencies else args.batch_latency:
            print(f"batch run at {latency * 1000:g} ms: {args.batch_tasks} BatchTasks ...", flush=True)
            batch.append(run_backlog(setup, "batch", latency, args.batch_tasks, ("mps_batch",)))
            _progress(batch[-1])
    sqs: list[RunResult] = []
    if not args.skip_sqs:
        for latency in args.sqs_latency:
            print(f"SQS run at {latency * 1000:g} ms: {args.sqs_events} tasks on moto_server ...", flush=True)
            sqs.append(run_sqs(setup, latency, args.sqs_events))
            _progress(sqs[-1])
    soak = None
    if args.soak:
        print(f"soak: {args.soak_events} events ...", flush=True)
        soak = run_soak(setup, args.soak_events, args.soak_timeout)

    print_run_table("Backlog: MPS, VOD and AMS callbacks queued before the worker starts", backlog)
    print_probe_table(backlog)
    print_run_table("Batch: MPS BatchTask callbacks (DescribeBatchTaskDetail, 20/s)", batch)
    print_run_table("SQS sink on moto_server (counting proxy in front)", sqs)
    print_soak(soak)
    print_targets(targets(backlog, batch, sqs, soak))
    problems = [p for r in backlog + batch + sqs for p in r.problems()]
    if soak is not None and (soak.missing or soak.doubled or soak.unexpected):
        problems.append(f"soak: {soak.missing} missing, {soak.doubled} doubled, {soak.unexpected} unexpected events")
    if problems:
        print("\nFAILED:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        print(f"  logs: {tmp}" + ("" if args.keep else " (rerun with --keep to keep them)"), file=sys.stderr)
        return 1
    print("\n  checks: every event exactly once in its sink; no RequestLimitExceeded; no one-second window over a "
          "limit; every door answer as expected")
    return 0


def _progress(result: RunResult) -> None:
    print(f"  done in {result.drain_s:.1f} s: {len(set(result.seen) & result.expected)}/{len(result.expected)} "
          f"events, {_num(result.events_per_s, 1)} events/s, {_num(result.calls_per_callback, 3)} Describe calls per "
          f"callback", flush=True)


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(argv), run, "bench-pipeline-")


if __name__ == "__main__":
    sys.exit(main())
