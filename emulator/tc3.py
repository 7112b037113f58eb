"""Verification of ``TC3-HMAC-SHA256`` request signatures, step for step as Tencent Cloud computes them.

The official SDK signs ``content-type;host`` and the SHA-256 of the exact body
bytes; the emulator rebuilds the canonical request from what arrived on the
wire, so a client that signs anything differently is refused like the real
API would refuse it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from emulator.errors import ApiError

ALGORITHM = "TC3-HMAC-SHA256"
MAX_CLOCK_SKEW_SECONDS = 300

_AUTH_RE = re.compile(
    r"^TC3-HMAC-SHA256\s+Credential=(?P<sid>[^/,\s]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z0-9]+)/tc3_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;\-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class SignedRequest:
    """What a verified request proved: who sent it and for which service."""

    secret_id: str
    service: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, service: str) -> bytes:
    """The derived key chain: ``TC3`` + SecretKey -> date -> service -> ``tc3_request``."""
    return _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")


def canonical_request(method: str, uri: str, query: str, headers: Mapping[str, str], signed: list[str],
                      payload: bytes) -> str:
    """Tencent's canonical request; `headers` must be keyed by lowercased name."""
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed)
    return "\n".join([method, uri or "/", query, canonical_headers, ";".join(signed), sha256_hex(payload)])


def string_to_sign(timestamp: str, date: str, service: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, timestamp, f"{date}/{service}/tc3_request", sha256_hex(canonical.encode())])


def sign(secret_key: str, timestamp: str, date: str, service: str, canonical: str) -> str:
    """Hex signature of a canonical request; used by the verifier and by hand-crafted test requests."""
    key = signing_key(secret_key, date, service)
    return hmac.new(key, string_to_sign(timestamp, date, service, canonical).encode(), hashlib.sha256).hexdigest()


def scope_service(headers: Mapping[str, str]) -> str:
    """The service named in the credential scope, even of a request that fails verification (for the counters)."""
    match = _AUTH_RE.match(headers.get("authorization", "").strip())
    return match["service"] if match else "?"


def verify(method: str, uri: str, query: str, headers: Mapping[str, str], payload: bytes,
           credentials: Mapping[str, str], now: float) -> SignedRequest:
    """Check a request's ``Authorization`` header; raise `ApiError` with Tencent's code when it fails.

    `headers` are keyed by lowercased name; `credentials` maps SecretId to SecretKey.
    """
    match = _AUTH_RE.match(headers.get("authorization", "").strip())
    if match is None:
        raise ApiError("AuthFailure.InvalidAuthorization", "The Authorization header is missing or malformed.")
    timestamp = headers.get("x-tc-timestamp", "").strip()
    if not timestamp.isdigit():
        raise ApiError("MissingParameter", "The request is missing the X-TC-Timestamp header.")
    if abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        raise ApiError("AuthFailure.SignatureExpire", "The request signature has expired (timestamp is more than "
                       f"{MAX_CLOCK_SKEW_SECONDS} seconds away from the server time).")
    secret_key = credentials.get(match["sid"])
    if secret_key is None:
        raise ApiError("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
    date = match["date"]
    if datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%d") != date:
        raise ApiError("AuthFailure.SignatureFailure", "The credential scope date does not match X-TC-Timestamp.")
    signed = match["signed"].split(";")
    if "content-type" not in signed or "host" not in signed:
        raise ApiError("AuthFailure.SignatureFailure", "SignedHeaders must include content-type and host.")
    if headers.get("x-tc-content-sha256", "").strip() == "UNSIGNED-PAYLOAD":
        payload = b"UNSIGNED-PAYLOAD"  # the SDK's unsignedPayload option signs this literal instead of the body
    canonical = canonical_request(method, uri, query, headers, signed, payload)
    expected = sign(secret_key, timestamp, date, match["service"], canonical)
    if not hmac.compare_digest(expected, match["signature"]):
        raise ApiError("AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
    return SignedRequest(secret_id=match["sid"], service=match["service"])
