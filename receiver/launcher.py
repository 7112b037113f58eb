"""`tc-receiver run`, or `python -m receiver` (what `make run` calls): the whole product on one host.

Starts the `Procfile` processes — gunicorn serving `app:app`, the worker
(`WORKER_PROCESSES` of them; none with `WORKER_IN_WEB=true`), and
with `RUN_SWEEPER=true` the missed-callback sweeper — and stops them all on Ctrl-C or SIGTERM.

Without Tencent Cloud credentials it is a local trial: it also starts the
local Tencent Cloud emulator, points the receiver at it with demo
credentials and keys, creates MPS (workflow, batch, image), VOD and AMS tasks
that call back, and prints each normalized event as it reaches the log sink.
With credentials in the environment the same command serves real Tencent
Cloud, and creates nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from receiver import demo
from receiver.config import ConfigError, Settings, load_settings
from receiver.logs import configure_logging

log = logging.getLogger("receiver.launcher")

ROOT = Path(__file__).resolve().parent.parent


def _run_trial(env: dict[str, str], port: int, stopping: threading.Event) -> None:
    """Create the demo tasks once everything answers, then show the events as they arrive."""
    receiver = env["RECEIVER_PUBLIC_URL"]
    if not demo.wait_ready([f"http://127.0.0.1:{port}/_emulator/health", f"{receiver}/healthz"]):
        log.error("local trial: the emulator or the receiver did not start; no tasks created")
        return
    sink = demo.ensure_sink_dir(env)
    follower = threading.Thread(
        target=demo.follow_events, args=(sink, lambda line: print(line, flush=True), stopping.is_set),
        daemon=True,
    )
    follower.start()
    try:
        task_ids = demo.create_tasks(env, port)
    except Exception as error:  # noqa: BLE001 - the trial is a courtesy; the receiver keeps running
        log.error("local trial: creating tasks failed: %s", error)
        return
    log.info(
        "local trial: created %d tasks in the emulator (%s); expect %d events, full JSON in %s",
        len(task_ids), ", ".join(task_ids), demo.EXPECTED_EVENTS, sink,
    )


def _environment() -> tuple[dict[str, str], bool, int]:
    """The children's environment, whether this is a local trial (no credentials), and the emulator's port."""
    env = dict(os.environ)
    local_trial = not env.get("TENCENTCLOUD_SECRET_ID")
    emulator_port = demo.emulator_port(env)
    if local_trial:
        env = demo.trial_environment(env, emulator_port)
        log.warning(
            "local trial (no TENCENTCLOUD_SECRET_ID): emulator on :%d, demo keys %s",
            emulator_port, ", ".join(f"{k}={env[k]}" for k in demo.DEMO_KEYS),
        )
    return env, local_trial, emulator_port


def _commands(settings: Settings, env: dict[str, str], trial_emulator_port: int | None) -> dict[str, list[str]]:
    """The processes to start, by name: the Procfile's, and the emulator first for a local trial."""
    python = sys.executable
    commands = {"web": [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]}
    if not settings.worker_in_web:  # WORKER_PROCESSES of them, sharing each action's quota through the host
        for n in range(1, settings.worker_processes + 1):
            commands[f"worker-{n}" if settings.worker_processes > 1 else "worker"] = [python, "-m", "receiver.worker"]
    if settings.run_sweeper:  # RUN_SWEEPER=true: the Procfile's sweeper line too
        commands["sweeper"] = [python, "-m", "receiver.sweeper"]
    if trial_emulator_port is not None:
        commands = {"emulator": demo.emulator_command(python, env, trial_emulator_port), **commands}
    return commands


def _supervise(processes: dict[str, subprocess.Popen[bytes]], stopping: threading.Event) -> int:
    """Wait for the first process to end, then take the others down with it; SIGTERM or SIGINT stops them all."""

    def stop(*signal_args: object) -> None:
        if signal_args:
            stopping.set()
        for process in processes.values():
            if process.poll() is None:
                process.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    while processes:
        for name, process in list(processes.items()):
            if process.poll() is not None:
                exit_code = exit_code or process.returncode
                del processes[name]
                stop()
        stopping.wait(0.2)
    # A clean stop on request is a success, however the children took the signal.
    return 0 if stopping.is_set() else exit_code


def main() -> int:
    configure_logging()
    env, local_trial, emulator_port = _environment()
    try:
        settings = load_settings(env)
    except ConfigError as error:
        log.critical("configuration error: %s", error)
        return 2
    commands = _commands(settings, env, emulator_port if local_trial else None)
    processes = {name: subprocess.Popen(cmd, cwd=ROOT, env=env) for name, cmd in commands.items()}
    log.info(
        "receiver on port %s, inbox %s, sink %s; Ctrl-C stops",
        env.get("PORT", "8000"), settings.inbox_url, settings.sink,
    )
    stopping = threading.Event()
    if local_trial:
        threading.Thread(target=_run_trial, args=(env, emulator_port, stopping), daemon=True).start()
    return _supervise(processes, stopping)


if __name__ == "__main__":
    sys.exit(main())
