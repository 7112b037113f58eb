"""The intake pipeline: token, JSON, signature and expiry, schema, inbox.

Knows nothing of Flask. `Intake.receive()` either returns the inbox's answer
or raises the exception that says why the callback is refused; the HTTP layer
maps each to its SPEC answer. The body-size check happens while the HTTP
layer reads the body, before anything here runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from marshmallow import Schema, ValidationError

from receiver import auth, strictjson
from receiver.config import Settings
from receiver.inbox import AcceptResult, Inbox
from receiver.records import extract_record
from schemas.callbacks import (
    CALLBACK_SCHEMAS,
    VOD_LEGACY_FORMAT_FIX,
    MpsLiveStreamNotificationSchema,
    callback_schema,
    is_vod_legacy_format,
)

log = logging.getLogger(__name__)


class InvalidPayload(Exception):
    """The body is not a JSON object, or fails its schema."""

    def __init__(self, message: str, fields: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class UnsupportedFormat(Exception):
    """A body of a format Tencent Cloud still sends but the receiver does not read (VOD v2.0)."""


def parse_json_object(raw_body: bytes) -> dict[str, Any]:
    try:
        payload = strictjson.loads(raw_body)
    except strictjson.NotStrictJson as error:
        raise InvalidPayload(str(error)) from None
    if not isinstance(payload, dict):
        raise InvalidPayload("body must be a JSON object")
    return payload


class Intake:
    """Authenticates, validates and durably accepts callbacks of the three products."""

    def __init__(self, settings: Settings, inbox: Inbox, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.inbox = inbox
        self.clock = clock
        self._schemas: dict[type[Schema], Schema] = {
            schema: schema() for schema in (*CALLBACK_SCHEMAS.values(), MpsLiveStreamNotificationSchema)
        }

    def log_signing_posture(self) -> None:
        """Say at start-up which products accept what: a missing key is not silent."""
        for product, variable in (
            ("mps", "MPS_NOTIFY_KEYS"),
            ("vod", "VOD_SIGN_KEYS"),
            ("ams", "AMS_SEEDS"),
        ):
            if self.settings.keys_for(product):
                continue
            if self.settings.allow_unsigned[product]:
                log.warning(
                    "%s callbacks are accepted UNSIGNED (%s_ALLOW_UNSIGNED=true, %s not set)",
                    product.upper(), product.upper(), variable,
                )
            else:
                log.warning(
                    "%s callbacks are refused with 401: %s is not set "
                    "(set it, or %s_ALLOW_UNSIGNED=true)",
                    product.upper(), variable, product.upper(),
                )
        if not self.settings.callback_tokens:
            log.info("CALLBACK_TOKENS is not set: callback URLs need no ?token=")

    def receive(
        self, source: str, raw_body: bytes, token: str | None, signature_header: str | None
    ) -> AcceptResult:
        """Run every check in SPEC order, then store; raise on the first failure."""
        if self.settings.callback_tokens:
            auth.verify_token(token, self.settings.callback_tokens)
        payload = parse_json_object(raw_body)
        if source == "vod" and is_vod_legacy_format(payload):
            # Before the signature: a legacy body carries none of v3.0's, and its sender needs the fix, not a 401.
            raise UnsupportedFormat(VOD_LEGACY_FORMAT_FIX)
        self._verify_signature(source, payload, raw_body, signature_header)
        try:
            valid = self._schema(source, payload).load(payload)
        except ValidationError as error:
            raise InvalidPayload("body does not match the callback schema", error.messages) from None
        record = extract_record(source, valid, raw_body, self.clock())
        return self.inbox.accept(record)

    def _schema(self, source: str, payload: dict[str, Any]) -> Schema:
        return self._schemas[callback_schema(source, payload)]

    def _verify_signature(
        self, source: str, payload: dict[str, Any], raw_body: bytes, signature_header: str | None
    ) -> None:
        keys = self.settings.keys_for(source)
        if not keys:
            if self.settings.allow_unsigned[source]:
                return
            raise auth.AuthenticationError(f"{source} callbacks are not accepted: no key configured")
        now, leeway = self.clock(), self.settings.signature_leeway_seconds
        if source == "mps":
            auth.verify_mps_notification(payload, keys, now, leeway)
        elif source == "vod":
            auth.verify_vod_event(payload, keys, now, leeway)
        else:
            auth.verify_ams_callback(raw_body, signature_header, keys)
