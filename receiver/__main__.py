"""`python -m receiver` (what `make run` calls): the whole product on one host.

Starts the `Procfile` processes — gunicorn serving `app:app` and the worker —
and stops both on Ctrl-C or SIGTERM. Without Tencent Cloud credentials it is a
local trial: products whose signing keys are not set get a well-known demo
key, printed below, so that a signed callback can be sent straight away.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from receiver.config import ConfigError, load_settings
from receiver.logs import configure_logging

log = logging.getLogger("receiver.launcher")

ROOT = Path(__file__).resolve().parent.parent
DEMO_KEYS = {
    "MPS_NOTIFY_KEYS": "local-demo-mps-key",
    "VOD_SIGN_KEYS": "local-demo-vod-key",
    "AMS_SEEDS": "local-demo-ams-seed",
}


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("TENCENTCLOUD_SECRET_ID"):
        for name, key in DEMO_KEYS.items():
            if not env.get(name):
                env[name] = key
                log.warning("local trial: %s=%s (no Tencent Cloud credentials given)", name, key)
    return env


def main() -> int:
    configure_logging()
    env = _environment()
    try:
        settings = load_settings(env)
    except ConfigError as error:
        log.critical("configuration error: %s", error)
        return 2
    python = sys.executable
    commands = {
        "web": [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        "worker": [python, "-m", "receiver.worker"],
    }
    processes = {name: subprocess.Popen(cmd, cwd=ROOT, env=env) for name, cmd in commands.items()}
    log.info(
        "receiver on port %s, inbox %s, sink %s; Ctrl-C stops",
        env.get("PORT", "8000"), settings.inbox_url, settings.sink,
    )

    asked_to_stop = False

    def stop(*signal_args: object) -> None:
        nonlocal asked_to_stop
        asked_to_stop = asked_to_stop or bool(signal_args)
        for process in processes.values():
            if process.poll() is None:
                process.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Wait for the first process to end, then take the other one down with it.
    exit_code = 0
    while processes:
        pid, status = os.wait()
        for name, process in list(processes.items()):
            if process.pid == pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                exit_code = exit_code or process.returncode
                del processes[name]
                stop()
    # A clean stop on request is a success, however the children took the signal.
    return 0 if asked_to_stop else exit_code


if __name__ == "__main__":
    sys.exit(main())
