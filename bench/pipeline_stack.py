"""The pipeline benchmark's processes for one run: the emulator, the receiver's door under gunicorn, the worker."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from tencentcloud.ams.v20201229 import ams_client
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import mps_client
from tencentcloud.vod.v20180717 import vod_client

from bench import processes
from bench.common import percentile
from bench.processes import Child, Server, free_port, poll_until, rss_kib

SECRET_ID, SECRET_KEY = "AKIDbenchpipeline", "bench-pipeline-secret"
MPS_KEY, VOD_KEY, AMS_SEED, TOKEN = "bench-mps-key", "bench-vod-key", "bench-ams-seed", "bench-token"

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

# Variables of the calling shell that would make the receiver differ from what this run says it measures.
_SCRUBBED_PREFIXES = (
    "RATE_LIMIT_", "TENCENTCLOUD_", "SQS_", "AWS_", "SWEEP_", "VOD_", "MPS_", "AMS_", "WORKER_", "GUNICORN_",
)
_SCRUBBED_NAMES = frozenset({
    "CALLBACK_TOKENS", "INBOX_URL", "SINK", "LOG_SINK_PATH", "IDEMPOTENCY_TABLE", "RECEIVER_PUBLIC_URL",
    "NOT_FOUND_PATIENCE_SECONDS", "CONSISTENCY_PATIENCE_SECONDS", "MAX_ATTEMPTS", "RUN_SWEEPER",
    "PROMETHEUS_MULTIPROC_DIR", "BIND", "PORT", "WEB_CONCURRENCY", "LOG_LEVEL", "SIGNATURE_LEEWAY_SECONDS",
})


@dataclass(frozen=True)
class Setup:
    """What every run shares: where its files go."""

    tmp: Path


def base_env() -> dict[str, str]:
    """This process's environment without anything that configures the receiver or gunicorn."""
    return {k: v for k, v in os.environ.items()
            if k not in _SCRUBBED_NAMES and not k.startswith(_SCRUBBED_PREFIXES)}


# --- the emulator ---------------------------------------------------------------------


class Emulator:
    """`python -m emulator` on a free port: its admin routes, and SDK clients (one set per thread)."""

    def __init__(self, setup: Setup, name: str, vod_notify_url: str, *extra_args: str):
        options = [
            "--secret-id", SECRET_ID, "--secret-key", SECRET_KEY,
            "--processing-after", str(PROCESSING_AFTER), "--finish-after", str(FINISH_AFTER),
            "--vod-notify-url", vod_notify_url, "--vod-sign-key", VOD_KEY, "--log-level", "WARNING",
            *itertools.chain.from_iterable(("--rate-limit", f"{a}={CREATING_LIMIT}") for a in CREATING_ACTIONS),
            *extra_args,
        ]
        self.child = processes.emulator(f"emulator ({name})", free_port(), base_env(),
                                        setup.tmp / f"emulator-{name}.log", *options)
        self.port, self.url = self.child.port, self.child.url
        self._local = threading.local()

    def start(self, timeout: float = 30) -> Emulator:
        self.child.start()
        self.child.wait_ready(timeout)
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
    door: Server
    env: dict[str, str]
    worker: Child | None = None

    @property
    def url(self) -> str:
        return self.door.url

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
        self.worker = processes.python_module(f"worker ({self.name})", "receiver.worker", self.env,
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
    door = processes.gunicorn(f"gunicorn ({name})", "app:app", port, settings, tmp / f"gunicorn-{name}.log",
                              "--no-control-socket")
    stack = Stack(tmp, name, emulator, door, settings)
    try:
        emulator.start()
        door.start()
        door.wait_ready(30)
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
