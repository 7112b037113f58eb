"""Helpers for the emulator tests: the emulator as a real subprocess, a callback sink, SDK clients."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from tencentcloud.ams.v20201229 import ams_client
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import mps_client
from tencentcloud.vod.v20180717 import models as vod_models
from tencentcloud.vod.v20180717 import vod_client

from tests.servers import ServerProcess, wait_until

SECRET_ID = "AKIDemulatortests"
SECRET_KEY = "emulator-tests-secret"
VOD_SIGN_KEY = "emulator-tests-vod-key"


class EmulatorProcess(ServerProcess):
    """``python -m emulator`` on a free port, configured through the receiver's own environment variables."""

    name = "the emulator"
    health_path = "/_emulator/health"

    def __init__(self, log_path: Path, *args: str) -> None:
        super().__init__(log_path)
        self.args = args

    def command(self) -> list[str]:
        return [sys.executable, "-m", "emulator", "--port", str(self.port), *self.args]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
                "VOD_SIGN_KEYS": f"{VOD_SIGN_KEY},other-key"}

    def admin(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET (no body) or POST (body) an admin route."""
        url = f"{self.url}/_emulator/{path}"
        response = requests.get(url, timeout=5) if body is None else requests.post(url, json=body, timeout=5)
        response.raise_for_status()
        return response.json()

    def profile(self) -> ClientProfile:
        return ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=f"127.0.0.1:{self.port}"))

    def mps(self, secret_id: str = SECRET_ID, secret_key: str = SECRET_KEY) -> mps_client.MpsClient:
        return mps_client.MpsClient(credential.Credential(secret_id, secret_key), "ap-guangzhou", self.profile())

    def vod(self) -> vod_client.VodClient:
        return vod_client.VodClient(credential.Credential(SECRET_ID, SECRET_KEY), "ap-guangzhou", self.profile())

    def ams(self) -> ams_client.AmsClient:
        return ams_client.AmsClient(credential.Credential(SECRET_ID, SECRET_KEY), "ap-guangzhou", self.profile())


def running_emulator(log_path: Path, *args: str) -> Iterator[EmulatorProcess]:
    """Body of a pytest fixture: start, yield, always stop."""
    emulator = EmulatorProcess(log_path, *args)
    try:
        yield emulator.start()
    finally:
        emulator.stop()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)


@dataclass
class CallbackSink:
    """A tiny HTTP server that records callbacks; ``/flaky-N/...`` paths answer 500 to their first N posts."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def matching(self, needle: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if needle.encode() in r.raw]

    def wait_for(self, needle: str, count: int = 1, timeout: float = 10) -> list[Received]:
        """Callbacks whose body contains `needle`, once at least `count` arrived."""
        return wait_until(lambda: len(self.matching(needle)) >= count and self.matching(needle), timeout,
                          f"{count} callback(s) containing {needle!r}")


def callback_sink() -> Iterator[CallbackSink]:
    """Body of a pytest fixture: a running `CallbackSink`, shut down afterwards."""
    sink: CallbackSink

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = 200
            first = self.path.strip("/").split("/")[0]
            with sink.lock:
                if first.startswith("flaky-"):
                    seen = sink.failures.get(self.path, 0)
                    sink.failures[self.path] = seen + 1
                    status = 500 if seen < int(first.removeprefix("flaky-")) else 200
                if status == 200:
                    sink.received.append(Received(self.path, dict(self.headers.items()), raw))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink = CallbackSink(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def req(model, params: dict):
    """An SDK request model filled from plain JSON, as the receiver builds them."""
    request = model()
    request.from_json_string(json.dumps(params))
    return request


def parse_strictly(model, raw: dict):
    """`raw` parsed into SDK model `model` (the from_json_string round trip), failing on a member it lacks.

    The SDK only warns about unknown members ("fileds are useless"); here that warning is an error.
    """
    parsed = model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed.from_json_string(json.dumps(raw))
    return parsed


_PRIMITIVES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _member_types(model) -> dict[str, tuple[str, bool]]:
    """Member -> (declared type, may be null), read from the model's docstring as the SDK generates it."""
    members = {}
    for part in (model.__init__.__doc__ or "").split(":param _")[1:]:
        name = part.split(":", 1)[0]
        declared = re.search(rf":type {name}: (.+)", part)
        members[name] = (declared.group(1).strip() if declared else "", "返回 null" in part)
    return members


def _value_errors(declared: str, value: Any, where: str) -> list[str]:
    if declared.startswith("list of "):
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        return [e for i, item in enumerate(value) for e in _value_errors(declared[8:], item, f"{where}[{i}]")]
    if declared in _PRIMITIVES:
        kinds = _PRIMITIVES[declared]
        ok = isinstance(value, kinds) and (declared == "bool" or not isinstance(value, bool))
        return [] if ok else [f"{where}: {value!r} is not {declared}"]
    name = declared.rsplit(".", 1)[-1].strip("`") if declared.startswith(":class:") else declared
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not a {name} object"]
    return shape_errors(getattr(vod_models, name), value, where + ".")


def shape_errors(model, raw: dict, where: str = "") -> list[str]:
    """How `raw` differs from VOD SDK model `model`: every member present, of its declared type, null only where
    the model says it may be, recursively."""
    errors = []
    for name, (declared, nullable) in _member_types(model).items():
        if name == "RequestId":
            continue
        if name not in raw:
            errors.append(f"{where}{name}: missing")
        elif raw[name] is None:
            errors += [] if nullable else [f"{where}{name}: null"]
        else:
            errors += _value_errors(declared, raw[name], where + name)
    return errors
