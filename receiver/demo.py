"""The local trial: tasks created in the emulator that call the receiver back.

Used by `python -m receiver` when no Tencent Cloud credentials are given. Every
product and kind of task the receiver reconciles is represented, so a newcomer
sees the whole pipeline: emulator task -> signed callback -> inbox -> Describe
-> normalized event.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tencentcloud.ams.v20201229 import ams_client
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import mps_client
from tencentcloud.vod.v20180717 import vod_client

DEMO_SECRET_ID = "AKIDlocaltrial"
DEMO_SECRET_KEY = "local-trial-secret"
DEMO_KEYS = {
    "MPS_NOTIFY_KEYS": "local-demo-mps-key",
    "VOD_SIGN_KEYS": "local-demo-vod-key",
    "AMS_SEEDS": "local-demo-ams-seed",
}
INPUT = {"Type": "URL", "UrlInputInfo": {"Url": "https://example.com/demo/input.mp4"}}
# PROCESSING and FINISH of the Change-mode workflow, then FINISH of each other task.
EXPECTED_EVENTS = 6


def trial_environment(environ: dict[str, str], emulator_port: int) -> dict[str, str]:
    """The environment of a local trial: demo credentials and keys, endpoints at the emulator."""
    env = dict(environ)
    env.setdefault("PORT", "8000")
    env.setdefault("RECEIVER_PUBLIC_URL", f"http://127.0.0.1:{env['PORT']}")
    env["TENCENTCLOUD_SECRET_ID"], env["TENCENTCLOUD_SECRET_KEY"] = DEMO_SECRET_ID, DEMO_SECRET_KEY
    for service in ("MPS", "VOD", "AMS"):
        env[f"TENCENTCLOUD_{service}_ENDPOINT"] = f"http://127.0.0.1:{emulator_port}"
    for name, key in DEMO_KEYS.items():
        env.setdefault(name, key)
    env.setdefault("LOG_SINK_PATH", "var/events.jsonl")
    return env


def emulator_command(python: str, env: dict[str, str], emulator_port: int) -> list[str]:
    receiver = env["RECEIVER_PUBLIC_URL"]
    return [
        python, "-m", "emulator", "--port", str(emulator_port),
        "--vod-notify-url", f"{receiver}/callbacks/vod",
        "--image-notify-url", f"{receiver}/callbacks/mps",
    ]


def _first(env: dict[str, str], name: str) -> str:
    return env[name].split(",")[0].strip()


def create_tasks(env: dict[str, str], emulator_port: int) -> list[str]:
    """Create one task of each kind; return their ids."""
    cred = credential.Credential(env["TENCENTCLOUD_SECRET_ID"], env["TENCENTCLOUD_SECRET_KEY"])
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=f"127.0.0.1:{emulator_port}"))
    region = env.get("TENCENTCLOUD_REGION", "ap-guangzhou")
    mps = mps_client.MpsClient(cred, region, profile)
    vod = vod_client.VodClient(cred, region, profile)
    ams = ams_client.AmsClient(cred, region, profile)
    receiver, run = env["RECEIVER_PUBLIC_URL"], uuid.uuid4().hex[:8]
    token = env.get("CALLBACK_TOKENS", "").split(",")[0].strip()
    query = f"?token={token}" if token else ""

    def notify(mode: str) -> dict[str, Any]:
        return {"NotifyType": "URL", "NotifyMode": mode, "NotifyUrl": f"{receiver}/callbacks/mps{query}",
                "NotifyKey": _first(env, "MPS_NOTIFY_KEYS")}

    created = [
        mps.call_json("ProcessMedia", {
            "InputInfo": INPUT, "TaskNotifyConfig": notify("Change"),
            "SessionId": f"demo-workflow-{run}", "SessionContext": json.dumps({"order": 4711}),
        }),
        mps.call_json("BatchProcessMedia", {
            "InputInfo": [INPUT], "TaskNotifyConfig": notify("Finish"),
            "SessionId": f"demo-batch-{run}", "SessionContext": "batch of one",
        }),
        mps.call_json("ProcessImage", {"InputInfo": INPUT, "ImageTask": {"EncodeConfig": {"Format": "jpeg"}}}),
        vod.call_json("ProcessMedia", {
            "FileId": "5285890784246869930", "TasksNotifyMode": "Finish",
            "SessionId": f"demo-vod-{run}", "SessionContext": "vod demo",
        }),
        ams.call_json("CreateAudioModerationTask", {
            "BizType": "demo", "Type": "AUDIO", "Seed": _first(env, "AMS_SEEDS"),
            "CallbackUrl": f"{receiver}/callbacks/ams{query}",
            "Tasks": [{"DataId": f"demo-audio-{run}", "Name": "demo audio",
                       "Input": {"Type": "URL", "Url": "https://example.com/demo/audio.mp3"}}],
        }),
    ]
    ids = []
    for answer in created:
        response = answer["Response"]
        ids.append(response.get("TaskId") or response["Results"][0]["TaskId"])
    return ids


def summary(event: dict[str, Any]) -> str:
    outcome = {True: "succeeded", False: "failed", None: "in progress"}[event["succeeded"]]
    return (
        f"event {event['source']} {event['event_type']} {event['status']} ({outcome}) "
        f"task {event['task_id']} via {event['reconciled_with']}"
    )


def follow_events(path: Path, emit: Callable[[str], None], stop: Callable[[], bool]) -> None:
    """Print each event appended to the log sink's file, as it arrives."""
    offset = path.stat().st_size if path.exists() else 0
    buffer = b""
    while not stop():
        if path.exists() and path.stat().st_size > offset:
            with open(path, "rb") as events:
                events.seek(offset)
                chunk = events.read()
            offset += len(chunk)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    emit(summary(json.loads(line)))
        time.sleep(0.2)


def wait_ready(urls: list[str], timeout: float = 30.0) -> bool:
    """Poll every health URL until each answers 200, or give up after `timeout`."""
    import requests

    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        try:
            if requests.get(pending[0], timeout=1).status_code == 200:
                pending.pop(0)
                continue
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return not pending


def emulator_port(environ: dict[str, str]) -> int:
    return int(environ.get("EMULATOR_PORT", "9000"))


def ensure_sink_dir(env: dict[str, str]) -> Path:
    path = Path(env["LOG_SINK_PATH"])
    os.makedirs(path.parent, exist_ok=True)
    return path
