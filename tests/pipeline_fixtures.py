"""The whole pipeline as real processes: the emulator, the receiver under gunicorn, and the worker.

`Pipeline` wires them together the way an operator would: the emulator's
tasks notify the receiver's public URL, the receiver's worker describes them
at the emulator with the official SDK, and events land in a JSON-lines log
sink the tests read back.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from tests.conftest import AMS_SEED, MPS_KEYS, TOKENS, VOD_KEY, receiver_env
from tests.emulator_fixtures import SECRET_ID, SECRET_KEY, EmulatorProcess
from tests.servers import ROOT, GunicornServer, query_inbox, sink_events, wait_until

# The one action both sides limit to 20/s in every test of the module (issue 4).
MPS_DESCRIBE_LIMIT = 20
INPUT = {"Type": "URL", "UrlInputInfo": {"Url": "https://example.com/in.mp4"}}
# In any string field of a creating request: the emulator never calls back for the task.
NO_CALLBACK_INPUT = {"Type": "URL", "UrlInputInfo": {"Url": "https://example.com/emulator:no-callback.mp4"}}


class WorkerProcess:
    """``python -m receiver.worker`` with the receiver's environment."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        command = [sys.executable, "-m", "receiver.worker"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_until(self._started, 20, "the worker to start")
        return self

    def _started(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
        return f":{self.process.pid} started" in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the exit; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.running:
            return
        try:
            self.terminate(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill9()


class Pipeline:
    """One emulator, one receiver and (while a test wants them) worker processes, wired together.

    One worker at a time (`start_worker`), or several side by side (`add_worker`); `stop` stops them all.
    """

    def __init__(self, tmp_path: Path, worker_in_web: bool = False, emulator: EmulatorProcess | None = None,
                 finish_after: float = 0.5, mps_describe_limit: int = MPS_DESCRIBE_LIMIT, **env: str):
        self.tmp_path = tmp_path
        self.sink_path = tmp_path / "events.jsonl"
        self.own_emulator = emulator is None
        # Ports are chosen at construction: each side is told the other's URL before either starts.
        self.receiver = GunicornServer({}, tmp_path / "gunicorn.log")
        token = TOKENS[0]
        self.notify_url = {p: f"{self.receiver.url}/callbacks/{p}?token={token}" for p in ("mps", "vod", "ams")}
        self.emulator = emulator or EmulatorProcess(
            tmp_path / "emulator.log",
            "--processing-after", "0.2", "--finish-after", str(finish_after), "--callback-backoff", "0.2",
            "--vod-notify-url", self.notify_url["vod"], "--vod-sign-key", VOD_KEY,
            "--image-notify-url", self.notify_url["mps"], "--image-notify-key", MPS_KEYS[0],
            "--rate-limit", f"mps.DescribeTaskDetail={mps_describe_limit}",
            # Creating hundreds of tasks quickly is the tests' business, not what is under test.
            "--rate-limit", "mps.ProcessMedia=1000", "--rate-limit", "vod.ProcessMedia=1000",
            "--log-level", "WARNING",
        )
        settings = receiver_env(
            tmp_path,
            RECEIVER_PUBLIC_URL=self.receiver.url,
            TENCENTCLOUD_SECRET_ID=SECRET_ID,
            TENCENTCLOUD_SECRET_KEY=SECRET_KEY,
            TENCENTCLOUD_MPS_ENDPOINT=self.emulator.url,
            TENCENTCLOUD_VOD_ENDPOINT=self.emulator.url,
            TENCENTCLOUD_AMS_ENDPOINT=self.emulator.url,
            LOG_SINK_PATH=str(self.sink_path),
            RATE_LIMIT_MPS_DESCRIBETASKDETAIL=str(mps_describe_limit),
            NOT_FOUND_PATIENCE_SECONDS="1",
            WORKER_IN_WEB="true" if worker_in_web else "false",
            **env,
        )
        self.receiver.env.update(settings)
        self.env = {**os.environ, **settings}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.worker: WorkerProcess | None = None
        self.workers: list[WorkerProcess] = []  # every worker process started, side by side or one after another
        self._worker_starts = 0

    def running_with_worker(self) -> Iterator[Pipeline]:
        """Body of a pytest fixture: emulator, receiver and worker started, all stopped afterwards."""
        try:
            self.start()
            self.start_worker()
            yield self
        finally:
            self.stop()

    def start(self) -> Pipeline:
        if self.own_emulator:
            self.emulator.start()
        self.receiver.start()
        return self

    def stop(self) -> None:
        running = [w for w in self.workers if w.running]
        for worker in running:  # all asked at once: each finishes its work in hand meanwhile
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
        for worker in running:
            worker.stop()
        self.receiver.stop()
        if self.own_emulator:
            self.emulator.stop()

    # --- the worker ------------------------------------------------------------------

    def start_worker(self) -> WorkerProcess:
        assert self.worker is None or not self.worker.running, "one worker at a time"
        self.worker = self._new_worker()
        return self.worker

    def add_worker(self) -> WorkerProcess:
        """Another worker process beside those running, as WORKER_PROCESSES > 1 runs them on one host."""
        worker = self._new_worker()
        if self.worker is None or not self.worker.running:
            self.worker = worker
        return worker

    def _new_worker(self) -> WorkerProcess:
        self._worker_starts += 1
        worker = WorkerProcess(self.env, self.tmp_path / f"worker-{self._worker_starts}.log")
        self.workers.append(worker)
        return worker.start()

    def ensure_worker(self) -> WorkerProcess:
        if self.worker is None or not self.worker.running:
            return self.start_worker()
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            assert self.worker.terminate() == 0, self.worker.log()

    # --- what came out -----------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """Every event line of the log sink, in order (a line cut by a crash fails the test)."""
        return sink_events(self.sink_path)

    def events_for(self, task_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["task_id"] == task_id]

    def wait_events(self, task_ids: list[str] | set[str], timeout: float = 30) -> dict[str, list[dict[str, Any]]]:
        """The events of each task, once every task has at least one."""
        wanted = set(task_ids)

        def arrived() -> dict[str, list[dict[str, Any]]] | None:
            found: dict[str, list[dict[str, Any]]] = {}
            for event in self.events():
                if event["task_id"] in wanted:
                    found.setdefault(event["task_id"], []).append(event)
            return found if len(found) == len(wanted) else None

        return wait_until(arrived, timeout, f"events for {len(wanted)} task(s)", interval=0.1)

    def wait_event(self, task_id: str, timeout: float = 30) -> dict[str, Any]:
        return self.wait_events([task_id], timeout)[task_id][-1]

    def inbox_rows(self, **where: Any) -> list[sqlite3.Row]:
        return query_inbox(self.tmp_path / "inbox.db", **where)

    def wait_settled(self, timeout: float = 15, **where: Any) -> list[sqlite3.Row]:
        """The matching inbox rows once every one is done: the event reaches the sink before its row is settled."""

        def settled() -> list[sqlite3.Row] | None:
            rows = self.inbox_rows(**where)
            return rows if rows and all(r["state"] == "done" for r in rows) else None

        return wait_until(settled, timeout, f"inbox rows {where} settled", interval=0.05)

    # --- tasks in the emulator ---------------------------------------------------------

    def mps_notify(self, mode: str = "Finish", url: str | None = None) -> dict[str, str]:
        return {"NotifyType": "URL", "NotifyMode": mode, "NotifyUrl": url or self.notify_url["mps"],
                "NotifyKey": MPS_KEYS[0]}

    def create_mps_workflow(self, mode: str = "Finish", url: str | None = None, input_info: dict | None = None,
                            **extra: Any) -> str:
        params = {"InputInfo": input_info or INPUT, "TaskNotifyConfig": self.mps_notify(mode, url), **extra}
        return self.emulator.mps().call_json("ProcessMedia", params)["Response"]["TaskId"]

    def create_mps_batch(self, **extra: Any) -> str:
        # The SDK's BatchProcessMediaRequest has no SessionId: send the raw JSON.
        params = {"InputInfo": [INPUT], "TaskNotifyConfig": self.mps_notify(), **extra}
        return self.emulator.mps().call_json("BatchProcessMedia", params)["Response"]["TaskId"]

    def create_mps_image(self) -> str:
        params = {"InputInfo": {"Type": "URL", "UrlInputInfo": {"Url": "https://example.com/in.png"}},
                  "ImageTask": {"EncodeConfig": {"Format": "JPEG", "Quality": 80}}}
        return self.emulator.mps().call_json("ProcessImage", params)["Response"]["TaskId"]

    def create_vod_procedure(self, **extra: Any) -> str:
        params = {"FileId": "5285890784246869930", **extra}
        return self.emulator.vod().call_json("ProcessMedia", params)["Response"]["TaskId"]

    def create_ams(self, data_id: str) -> str:
        params = {"Tasks": [{"DataId": data_id, "Name": data_id,
                             "Input": {"Type": "URL", "Url": "https://example.com/a.mp3"}}],
                  "BizType": "default", "Type": "AUDIO", "Seed": AMS_SEED, "CallbackUrl": self.notify_url["ams"]}
        [result] = self.emulator.ams().call_json("CreateAudioModerationTask", params)["Response"]["Results"]
        return result["TaskId"]

    def describe(self, service: str, action: str, task_id: str) -> dict[str, Any]:
        """The emulator's own answer, asked with the SDK like the receiver asks it."""
        client = {"mps": self.emulator.mps, "vod": self.emulator.vod, "ams": self.emulator.ams}[service]()
        return client.call_json(action, {"TaskId": task_id})["Response"]

    def stats(self, action: str) -> dict[str, Any]:
        return self.emulator.admin("stats")["actions"].get(action, {"calls": 0, "errors": {}, "in_flight": 0})

    def calls(self, service: str, action: str) -> list[dict[str, Any]]:
        """The emulator's admitted calls of one action, in the order it admitted them."""
        response = requests.get(f"{self.emulator.url}/_emulator/calls", params={"service": service, "action": action},
                                timeout=30)
        response.raise_for_status()
        return response.json()["calls"]
