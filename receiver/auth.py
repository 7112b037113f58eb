"""Callback authentication: each signing scheme's signer beside its verifier.

Tencent Cloud signs callbacks three ways (SPEC 4):

- MPS: ``Sign = md5(str(Timestamp) + NotifyKey)``; ``Timestamp`` is the expiry.
- VOD: ``Sign = md5(SignKey + str(T))``; ``T`` is the expiry.
- AMS: header ``X-Signature = sha256(Seed + raw body)``; no time at all.

Verify before storing anything. The signers exist so that tests and the local
emulator sign with the very code production verifies with. Every verifier
raises `AuthenticationError` with a plain message that never says which key
came close; comparisons are constant time and try every configured key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

# Tencent sets the expiry to send time + 10 minutes.
SIGNATURE_LIFETIME_SECONDS = 600
AMS_SIGNATURE_HEADER = "X-Signature"


class AuthenticationError(Exception):
    """The callback failed its token, signature or expiry check."""


def _matches_any(candidate: str, expected: Iterable[str]) -> bool:
    """Constant-time membership: every key is compared, whatever matched first."""
    found = False
    # surrogatepass: a hostile value must fail the comparison, not the encoding.
    candidate_bytes = candidate.encode("utf-8", "surrogatepass")
    for value in expected:
        found |= hmac.compare_digest(candidate_bytes, value.encode("utf-8", "surrogatepass"))
    return found


# --- URL token --------------------------------------------------------------


def verify_token(token: str | None, tokens: Iterable[str]) -> None:
    """Check the ``?token=`` of a callback URL against the configured tokens."""
    if not token or not _matches_any(token, tokens):
        raise AuthenticationError("missing or invalid callback token")


# --- expiry (MPS, VOD) ------------------------------------------------------


def parse_expiry(value: Any, name: str) -> int:
    """An expiry field as an int: an integer, or a string of digits."""
    if isinstance(value, bool):
        raise AuthenticationError(f"{name} is not a UNIX timestamp")
    if isinstance(value, int):
        return value
    # isdigit() alone admits "²" and other digits int() refuses.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    raise AuthenticationError(f"{name} is missing or not a UNIX timestamp")


def check_expiry(expiry: int, now: float, leeway: int) -> None:
    """Refuse signatures that expired, or that claim to expire implausibly late."""
    if now > expiry + leeway:
        raise AuthenticationError("signature expired")
    if expiry > now + SIGNATURE_LIFETIME_SECONDS + leeway:
        raise AuthenticationError("signature expiry is too far in the future")


# --- MPS --------------------------------------------------------------------


def mps_signature(timestamp: int, notify_key: str) -> str:
    return hashlib.md5(f"{timestamp}{notify_key}".encode()).hexdigest()


def sign_mps_notification(
    body: Mapping[str, Any], notify_key: str, now: float | None = None
) -> dict[str, Any]:
    """Return `body` with the ``Timestamp`` and ``Sign`` MPS would add."""
    expiry = int(time.time() if now is None else now) + SIGNATURE_LIFETIME_SECONDS
    return {**body, "Timestamp": expiry, "Sign": mps_signature(expiry, notify_key)}


def verify_mps_notification(
    body: Mapping[str, Any], notify_keys: Iterable[str], now: float, leeway: int
) -> None:
    expiry = parse_expiry(body.get("Timestamp"), "Timestamp")
    sign = body.get("Sign")
    if not isinstance(sign, str):
        raise AuthenticationError("Sign is missing")
    if not _matches_any(sign.lower(), (mps_signature(expiry, k) for k in notify_keys)):
        raise AuthenticationError("signature does not match")
    check_expiry(expiry, now, leeway)


# --- VOD --------------------------------------------------------------------


def vod_signature(expiry: int, sign_key: str) -> str:
    return hashlib.md5(f"{sign_key}{expiry}".encode()).hexdigest()


def sign_vod_event(
    body: Mapping[str, Any], sign_key: str, now: float | None = None
) -> dict[str, Any]:
    """Return `body` with the ``T`` and ``Sign`` VOD would add."""
    expiry = int(time.time() if now is None else now) + SIGNATURE_LIFETIME_SECONDS
    return {**body, "T": expiry, "Sign": vod_signature(expiry, sign_key)}


def verify_vod_event(
    body: Mapping[str, Any], sign_keys: Iterable[str], now: float, leeway: int
) -> None:
    expiry = parse_expiry(body.get("T"), "T")
    sign = body.get("Sign")
    if not isinstance(sign, str):
        raise AuthenticationError("Sign is missing")
    if not _matches_any(sign.lower(), (vod_signature(expiry, k) for k in sign_keys)):
        raise AuthenticationError("signature does not match")
    check_expiry(expiry, now, leeway)


# --- AMS --------------------------------------------------------------------


def ams_signature(raw_body: bytes, seed: str) -> str:
    return hashlib.sha256(seed.encode() + raw_body).hexdigest()


def sign_ams_callback(body: Mapping[str, Any], seed: str) -> tuple[bytes, dict[str, str]]:
    """Serialize `body` and return it with the headers AMS would send."""
    raw = json.dumps(body, ensure_ascii=False).encode()
    return raw, {
        "Content-Type": "application/json",
        AMS_SIGNATURE_HEADER: ams_signature(raw, seed),
    }


def verify_ams_callback(raw_body: bytes, signature: str | None, seeds: Iterable[str]) -> None:
    """AMS signs the exact bytes: verify them before any parsing re-encodes them."""
    if not signature:
        raise AuthenticationError(f"{AMS_SIGNATURE_HEADER} header is missing")
    if not _matches_any(signature.lower(), (ams_signature(raw_body, s) for s in seeds)):
        raise AuthenticationError("signature does not match")
