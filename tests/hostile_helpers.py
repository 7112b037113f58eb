"""Helpers of the hostile tests (issue 9): raw HTTP over a socket, the SPEC 3 answer check, hostile bodies.

Everything here talks to the receiver the way an attacker would: bytes on a
TCP socket (no client library tidying the request up), bodies written as raw
JSON text so that what reaches the wire is exactly what the test means
(``"\\ud800"`` escapes, ``NaN``, 5,000 nested brackets, UTF-16).
"""

from __future__ import annotations

import builtins
import json
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from receiver import auth
from tests.conftest import AMS_SEED, MPS_KEYS, TOKENS, VOD_KEY

# SPEC 3: "An error answer is at most a few KiB, whatever the body."
MAX_ERROR_BYTES = 4096

# A Python exception's name in an answer means a traceback or an exception's text leaked into it.
EXCEPTION_NAMES = sorted(
    {name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
     and name not in ("Exception", "BaseException", "Warning")}
    | {"OperationalError", "DatabaseError", "IntegrityError", "ProgrammingError", "JSONDecodeError",
       "ValidationError", "RequestEntityTooLarge", "BadRequestKeyError", "ClientDisconnected"}
)
_LEAK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|\b(?:"
                   + "|".join(map(re.escape, EXCEPTION_NAMES)) + r")\b")


def leaked_internals(text: str) -> list[str]:
    """Traceback fragments and Python exception names found in `text`."""
    return sorted(set(_LEAK.findall(text)))


# --- raw HTTP ------------------------------------------------------------------------------


@dataclass
class RawAnswer:
    """An HTTP answer read off the socket; `status` is None when the server closed without answering."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes = b""
    # The server reset the connection while the request was still being sent: it answers an oversized
    # upload (413) and closes without reading the rest, and the answer may be lost with the reset.
    cut_off: bool = False

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _parse_answer(data: bytes) -> RawAnswer:
    if not data:
        return RawAnswer(None, raw=data)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not match:
        return RawAnswer(None, raw=data)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers and headers["content-length"].isdigit():
        body = body[: int(headers["content-length"])]
    return RawAnswer(int(match.group(1)), headers, body, data)


def raw_exchange(port: int, request: bytes, half_close: bool = False, timeout: float = 10.0) -> RawAnswer:
    """Send `request` on a fresh connection and read until the server closes it (or `timeout`).

    `half_close` shuts our sending side after the request: the server sees the
    end of the stream, as after a client that sent a truncated body and left.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        cut_off = False
        try:
            conn.sendall(request)
            if half_close:
                conn.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            cut_off = True
        data = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
                answer = _parse_answer(data)
                length = answer.headers.get("content-length", "")
                if answer.status is not None and length.isdigit() and len(answer.body) >= int(length):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    answer = _parse_answer(data)
    answer.cut_off = cut_off
    return answer


def http_request(method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None,
                 chunked: bool = False) -> bytes:
    """The bytes of one HTTP/1.1 request that asks the server to close the connection after answering."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def fresh_get(port: int, path: str) -> int | None:
    """One GET on its own connection (Connection: close): the status, or None if none came back."""
    return raw_exchange(port, http_request("GET", path)).status


def callback_target(source: str, token: str | None = TOKENS[0]) -> str:
    return f"/callbacks/{source}" + (f"?token={token}" if token is not None else "")


def post_bytes(port: int, source: str, body: bytes, token: str | None = TOKENS[0],
               headers: dict[str, str] | None = None) -> RawAnswer:
    """POST exactly `body` to a callback route over a raw socket."""
    return raw_exchange(port, http_request("POST", callback_target(source, token), body, headers))


# --- the answer SPEC 3 allows -----------------------------------------------------------------

ERROR_CODES = {400: {"InvalidPayload", "UnsupportedFormat"}, 401: {"Unauthorized"}}


def _strict_json(body: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


def spec_answer_problems(answer: RawAnswer, allowed: frozenset[int] = frozenset({200, 400, 401, 413})) -> list[str]:
    """Everything about a callback answer that SPEC 3 forbids; empty when it is one of the SPEC's answers."""
    problems: list[str] = []
    text = answer.text()
    if answer.status is None:
        return [f"no HTTP answer at all: {answer.raw[:200]!r}"]
    if answer.status not in allowed:
        problems.append(f"status {answer.status} not in {sorted(allowed)}")
    leaks = leaked_internals(text)
    if leaks:
        problems.append(f"internals in the body: {leaks}")
    for token in TOKENS:
        if token in text or any(token in v for v in answer.headers.values()):
            problems.append("the URL token is echoed in the answer")
    if "location" in answer.headers:
        problems.append(f"a Location header: {answer.headers['location']!r}")
    if not answer.headers.get("content-type", "").startswith("application/json"):
        problems.append(f"Content-Type {answer.headers.get('content-type')!r} is not JSON")
    try:
        document = _strict_json(answer.body)
    except ValueError as error:
        return [*problems, f"body is not strict JSON ({error}): {text[:200]!r}"]
    if answer.status == 200:
        if not (isinstance(document, dict) and document.get("status") in ("accepted", "duplicate")
                and isinstance(document.get("id"), str) and document["id"]):
            problems.append(f"200 body is not {{status: accepted|duplicate, id}}: {text[:200]!r}")
        return problems
    if len(answer.body) > MAX_ERROR_BYTES:
        problems.append(f"error answer of {len(answer.body)} bytes (> {MAX_ERROR_BYTES})")
    error = document.get("error") if isinstance(document, dict) else None
    if not (isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)):
        problems.append(f"error body is not {{error: {{code, message}}}}: {text[:200]!r}")
        return problems
    codes = ERROR_CODES.get(answer.status)
    if codes and error["code"] not in codes:
        problems.append(f"status {answer.status} with code {error['code']!r} (expected one of {sorted(codes)})")
    if "fields" in error and not isinstance(error["fields"], dict):
        problems.append("error.fields is not an object")
    return problems


def assert_spec_answer(answer: RawAnswer, allowed: frozenset[int] = frozenset({200, 400, 401, 413})) -> None:
    problems = spec_answer_problems(answer, allowed)
    assert not problems, f"{'; '.join(problems)} | answer: {answer.status} {answer.text()[:300]!r}"


def assert_error_answer(answer: RawAnswer, status: int, code: str | None = None) -> dict[str, Any]:
    """The answer is exactly a SPEC 3 error of `status` (and `code`); its ``error`` object."""
    assert answer.status == status, (
        f"expected {status}{' ' + code if code else ''}, got {answer.status}: {answer.text()[:300]!r}")
    assert_spec_answer(answer, frozenset({status}))
    error = _strict_json(answer.body)["error"]
    if code is not None:
        assert error["code"] == code, error
    return error


# --- signing hostile bytes -----------------------------------------------------------------------


def splice_mps_signature(raw_object: bytes, key: str = MPS_KEYS[0], now: float | None = None) -> bytes:
    """`raw_object` (the bytes of a JSON object) with MPS's Timestamp and Sign added before its last brace.

    The MPS signature covers only Timestamp (SPEC 4), so any body text can be
    signed without ever being parsed or re-encoded by the test: what the
    receiver gets is exactly `raw_object` plus the two fields.
    """
    signed = auth.sign_mps_notification({}, key, now=now)
    return _splice(raw_object, f'"Timestamp": {signed["Timestamp"]}, "Sign": "{signed["Sign"]}"'.encode())


def splice_vod_signature(raw_object: bytes, key: str = VOD_KEY, now: float | None = None) -> bytes:
    signed = auth.sign_vod_event({}, key, now=now)
    return _splice(raw_object, f'"T": {signed["T"]}, "Sign": "{signed["Sign"]}"'.encode())


def _splice(raw_object: bytes, members: bytes) -> bytes:
    stripped = raw_object.rstrip()
    assert stripped.endswith(b"}"), "a JSON object's bytes"
    inner = stripped[:-1].rstrip()
    separator = b"" if inner.endswith(b"{") else b", "
    return inner + separator + members + b"}"


def ams_headers(raw: bytes, seed: str = AMS_SEED) -> dict[str, str]:
    """The X-Signature AMS would send for exactly these bytes."""
    return {auth.AMS_SIGNATURE_HEADER: auth.ams_signature(raw, seed)}


def nested(depth: int, kind: str = "list", leaf: str = "1") -> str:
    """JSON text nesting `depth` containers: ``[[[1]]]`` or ``{"a": {"a": 1}}``."""
    if kind == "list":
        return "[" * depth + leaf + "]" * depth
    return '{"a": ' * depth + leaf + "}" * depth


# --- processes ------------------------------------------------------------------------------------


def open_files(pid: int) -> int:
    """How many file descriptors process `pid` holds open."""
    return len(os.listdir(f"/proc/{pid}/fd"))
