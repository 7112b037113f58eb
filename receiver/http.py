"""HTTP routes: read the request, call the intake, map the outcome to SPEC 3.

Every answer is JSON (metrics aside). This is the one place where outcomes
become status codes.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from receiver import metrics
from receiver.auth import AMS_SIGNATURE_HEADER, AuthenticationError
from receiver.config import PRODUCTS, Settings
from receiver.health import HealthBoard, readiness
from receiver.inbox import Inbox, InboxUnavailable
from receiver.intake import Intake, InvalidPayload, UnsupportedFormat
from receiver.stores import health_board_beside

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
# An error answer stays a few KiB whatever the body: a 64 KiB body with
# thousands of bad entries once got a 1.3 MB answer listing every one.
MAX_LISTED_ERRORS = 10
MAX_ERROR_DEPTH = 4
MAX_ERROR_TEXT = 200
MAX_FIELDS_BYTES = 2048

routes = Blueprint("receiver", __name__)


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    return response


def compact_fields(messages: Any, depth: int = 0) -> Any:
    """Marshmallow's error messages cut to a few entries a level, a few levels deep, short strings.

    Enough to name the offending fields; the rest is summarised, never listed.
    """
    if isinstance(messages, dict):
        if depth >= MAX_ERROR_DEPTH:
            return f"{len(messages)} nested error(s)"
        items = list(messages.items())
        compact = {str(key)[:MAX_ERROR_TEXT]: compact_fields(value, depth + 1)
                   for key, value in items[:MAX_LISTED_ERRORS]}
        if len(items) > MAX_LISTED_ERRORS:
            compact["..."] = f"{len(items) - MAX_LISTED_ERRORS} more"
        return compact
    if isinstance(messages, list):
        shown = [compact_fields(item, depth + 1) for item in messages[:MAX_LISTED_ERRORS]]
        return shown + ([f"{len(messages) - MAX_LISTED_ERRORS} more"] if len(messages) > MAX_LISTED_ERRORS else [])
    return str(messages)[:MAX_ERROR_TEXT]


def _answer_fields(messages: dict[str, Any]) -> dict[str, Any]:
    fields = compact_fields(messages)
    if len(json.dumps(fields)) <= MAX_FIELDS_BYTES:
        return fields
    # Many long field names: name the top-level ones only.
    return {str(name)[:MAX_ERROR_TEXT]: "invalid" for name in list(messages)[:MAX_LISTED_ERRORS]}


def _intake() -> Intake:
    return current_app.extensions["receiver.intake"]


def _read_body(max_bytes: int) -> bytes:
    """The whole body, or RequestEntityTooLarge past `max_bytes`.

    MAX_CONTENT_LENGTH is one byte more than the limit: werkzeug refuses a
    declared Content-Length past it, but silently cuts a chunked body there,
    so reading one byte too many is how a chunked body shows it is too large.
    """
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise
    except Exception as error:  # noqa: BLE001 - a body that cannot be read is the sender's fault, whatever the reason
        log.info("unreadable request body on %r: %s", request.path, type(error).__name__)
        raise InvalidPayload("the request body cannot be read: its framing is broken or the sender hung up") from None
    if len(body) > max_bytes:
        raise RequestEntityTooLarge()
    return body


@routes.post("/callbacks/<source>")
def receive_callback(source: str) -> Response:
    if source not in PRODUCTS:
        return _error(404, "NotFound", "no such route")
    started = time.perf_counter()
    outcome = "error"
    try:
        raw_body = _read_body(current_app.extensions["receiver.settings"].max_body_bytes)
        result = _intake().receive(
            source,
            raw_body,
            token=request.args.get("token"),
            signature_header=request.headers.get(AMS_SIGNATURE_HEADER),
        )
        outcome = "duplicate" if result.duplicate else "accepted"
        return jsonify({"status": outcome, "id": result.id})
    except RequestEntityTooLarge:
        outcome = "too_large"
        return _error(413, "PayloadTooLarge", "body is larger than MAX_BODY_BYTES")
    except AuthenticationError as error:
        outcome = "unauthorized"
        return _error(401, "Unauthorized", str(error))
    except InvalidPayload as error:
        outcome = "invalid"
        return _error(400, "InvalidPayload", error.message, fields=_answer_fields(error.fields))
    except UnsupportedFormat as error:
        outcome = "unsupported"
        return _error(400, "UnsupportedFormat", str(error))
    except InboxUnavailable as error:
        outcome = "unavailable"
        log.error("inbox unavailable: %s", error)
        response = _error(503, "InboxUnavailable", "the inbox cannot store callbacks right now")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    finally:
        metrics.CALLBACKS.labels(source, outcome).inc()
        metrics.CALLBACK_SECONDS.labels(source).observe(time.perf_counter() - started)


@routes.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@routes.get("/readyz")
def readyz() -> Response:
    """Ready while the inbox takes writes; degraded (still 200) while a worker reports trouble."""
    checks = readiness(current_app.extensions["receiver.inbox"], current_app.extensions["receiver.health"])
    if checks["inbox"] == "unavailable":
        response = jsonify({"status": "unavailable", "checks": checks})
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    status = "degraded" if "failing" in checks.values() else "ok"
    return jsonify({"status": status, "checks": checks})


@routes.get("/metrics")
def metrics_route() -> Response:
    inbox: Inbox = current_app.extensions["receiver.inbox"]
    body, content_type = metrics.render(inbox, current_app.extensions["receiver.health"])
    return Response(body, content_type=content_type)


def _http_error(error: HTTPException) -> Response:
    if isinstance(error, RequestEntityTooLarge):
        return _error(413, "PayloadTooLarge", "body is larger than MAX_BODY_BYTES")
    code = {404: "NotFound", 405: "MethodNotAllowed"}.get(error.code or 500, "HTTPError")
    response = _error(error.code or 500, code, error.description or error.name)
    if error.code == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _unexpected_error(error: Exception) -> Response:
    # request.path, never request.url: the query string carries the URL token.
    log.error("unexpected error answering %s %r", request.method, request.path, exc_info=error)
    return _error(500, "InternalError", "internal error")


def create_app(settings: Settings, inbox: Inbox, health: HealthBoard | None = None) -> Flask:
    """The WSGI application: routes, error answers and the intake bound to `inbox`; /readyz reads `health`
    (by default the board beside the inbox)."""
    app = Flask("receiver")
    # Werkzeug answers /callbacks//mps with a redirect whose Location (and HTML
    # body) echo the query string, the URL token with it: no redirects at all.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    app.json.sort_keys = False
    intake = Intake(settings, inbox)
    app.extensions["receiver.settings"] = settings
    app.extensions["receiver.inbox"] = inbox
    app.extensions["receiver.health"] = health or health_board_beside(inbox)
    app.extensions["receiver.intake"] = intake
    app.register_blueprint(routes)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    intake.log_signing_posture()
    return app
