"""The HTTP front: ``POST /`` for API calls, ``/_emulator/*`` for the admin routes."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulator.actions import served_actions
from emulator.answers import parse_answer
from emulator.app import Emulator
from emulator.arrival import StampedReads, arrival_or_now

log = logging.getLogger("emulator.http")
MAX_BODY_BYTES = 10 * 1024 * 1024


class EmulatorServer(ThreadingHTTPServer):
    """One thread per connection; the handler reaches the shared `Emulator` through the server."""

    daemon_threads = True
    allow_reuse_address = True
    # A client keeping a hundred calls in flight opens as many connections at once: the default backlog
    # of 5 has the kernel reset some of them before they are accepted.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        super().__init__(address, Handler)
        self.emulator = emulator


class Handler(BaseHTTPRequestHandler):
    server: EmulatorServer
    protocol_version = "HTTP/1.1"
    # An answer is written as headers, then body: with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers, ~40 ms on every keep-alive call.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        # Read through the kernel's receive stamps: a call counts when it arrived (emulator.arrival).
        self.rfile.close()
        self._reads = StampedReads(self.connection)
        self.rfile = io.BufferedReader(self._reads)

    def handle_one_request(self) -> None:
        self._reads.reset()
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.address_string(), format % args)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, payload: Any) -> None:
        raw = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        # Exactly "application/json": the SDK only looks for an error envelope under this content type.
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        try:
            body = self._body()
        except ValueError:
            self._answer(413, {"error": "body too large"})
            return
        emulator = self.server.emulator
        if url.path == "/_emulator/faults":
            self._update_faults(body)
        elif url.path == "/_emulator/answers":
            self._install_answer(body)
        elif url.path == "/_emulator/reset":
            emulator.reset()
            self._answer(200, {"status": "reset"})
        elif url.path.startswith("/_emulator/"):
            self._answer(404, {"error": "not found"})
        else:
            headers = {name.lower(): value for name, value in self.headers.items()}
            self._answer(200, emulator.handle_api("POST", url.path, url.query, headers, body,
                                                  arrival_or_now(self._reads)))

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        path = url.path
        emulator = self.server.emulator
        if path == "/_emulator/stats":
            self._answer(200, emulator.stats())
        elif path == "/_emulator/calls":
            query = parse_qs(url.query)
            self._answer(200, emulator.calls(service=(query.get("service") or [None])[-1],
                                             action=(query.get("action") or [None])[-1]))
        elif path == "/_emulator/faults":
            self._answer(200, asdict(emulator.faults.current()))
        elif path == "/_emulator/health":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(200, emulator.handle_api("GET", path, url.query,
                                                  {k.lower(): v for k, v in self.headers.items()}, b"",
                                                  arrival_or_now(self._reads)))

    def _update_faults(self, body: bytes) -> None:
        try:
            changes = json.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            faults = self.server.emulator.faults.update(changes)
        except ValueError as exc:
            self._answer(400, {"error": str(exc)})
            return
        self._answer(200, asdict(faults))

    def _install_answer(self, body: bytes) -> None:
        emulator = self.server.emulator
        try:
            answer = parse_answer(json.loads(body or b"null"), served_actions())
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            self._answer(400, {"error": str(exc)})
            return
        emulator.answers.install(answer)
        self._answer(200, {"installed": answer.describe()})
