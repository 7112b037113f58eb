"""The emulator itself, independent of HTTP: authenticate, apply faults and limits, run the action."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from typing import Any

from emulator import tc3
from emulator.actions import ACTIONS
from emulator.answers import Answer, AnswerStore, served_as_is
from emulator.config import Config
from emulator.errors import ApiError, failure, success
from emulator.faults import Faults, FaultState
from emulator.media import MediaStore
from emulator.notify import CallbackSender
from emulator.ratelimit import RateLimiter
from emulator.tasks import TaskStore

log = logging.getLogger("emulator")


class Emulator:
    """Shared state of one emulator process; `server.py` is only its HTTP front."""

    def __init__(self, config: Config, faults: Faults | None = None, answers: list[Answer] | None = None) -> None:
        self.config = config
        self.answers = AnswerStore(answers or ())
        self.faults = FaultState(faults)
        self.limiter = RateLimiter(config.rate_limits)
        self.store = TaskStore(config.processing_after, config.finish_after)
        self.media = MediaStore()
        self._vod_events: dict[int, tuple[str, str]] = {}
        self._vod_switches: dict[tuple[int, str], bool] = {}
        self._vod_lock = threading.Lock()
        self.callbacks = CallbackSender(self.faults, self.vod_target, config.callback_retries,
                                        config.callback_backoff, config.callback_timeout)
        self.store.add_listener(self.callbacks.on_transition)

    def start(self) -> None:
        self.store.start()

    def stop(self) -> None:
        self.store.stop()
        self.callbacks.stop()

    # -- VOD event configuration ------------------------------------------------

    def set_vod_event_config(self, sub_app_id: int, mode: str, url: str, sign_key: str,
                             switches: dict[str, bool] | None = None) -> None:
        """`switches`: EventType -> on, from the ``*EventSwitch`` parameters given (each one is kept until changed)."""
        with self._vod_lock:
            if mode == "PUSH" and url:
                self._vod_events[sub_app_id] = (url, sign_key or self.config.vod_sign_key)
            elif mode:
                self._vod_events.pop(sub_app_id, None)
            for event_type, on in (switches or {}).items():
                self._vod_switches[(sub_app_id, event_type)] = on

    def vod_target(self, sub_app_id: int) -> tuple[str, str] | None:
        """Where a VOD application's events go: its ModifyEventConfig, else ``--vod-notify-url``."""
        with self._vod_lock:
            target = self._vod_events.get(sub_app_id)
        if target is None and self.config.vod_notify_url:
            target = (self.config.vod_notify_url, self.config.vod_sign_key)
        return target

    def send_vod_file_event(self, sub_app_id: int, file_id: str, body: dict[str, Any], silent: bool) -> None:
        """A NewFileUpload / FileDeleted event, unless silenced or switched off for the application.

        Real VOD sends these only once their switch is ON (default OFF); the emulator sends them unless a
        ModifyEventConfig turned them OFF, so ``--vod-notify-url`` alone receives them as it receives task events.
        """
        with self._vod_lock:
            on = self._vod_switches.get((sub_app_id, body["EventType"]), True)
        if on and not silent:
            self.callbacks.send_vod_event(sub_app_id, file_id, body)

    # -- API calls --------------------------------------------------------------

    def handle_api(self, method: str, uri: str, query: str, headers: dict[str, str], body: bytes,
                   arrived_at: float | None = None) -> dict[str, Any]:
        """Answer one API request; every outcome is an envelope, errors included.

        The limits count the call at `arrived_at` (time.time(); the kernel's receive time, from the
        HTTP front), or now.
        """
        arrived_at = time.time() if arrived_at is None else arrived_at
        action = headers.get("x-tc-action", "")
        service = "?"
        key: tuple[str, str] | None = None
        in_flight: tuple[str, str] | None = None  # counted in flight from `begin` until the answer is ready
        try:
            if method != "POST":
                raise ApiError("UnsupportedProtocol", "Only POST with a JSON body is supported by the emulator.")
            signed = tc3.verify(method, uri, query, headers, body, self.config.credentials, time.time())
            service = signed.service
            handler = ACTIONS.get((service, headers.get("x-tc-version", ""), action))
            if handler is None:
                raise ApiError("InvalidAction", f"The action {action!r} does not exist for {service} "
                               f"version {headers.get('x-tc-version', '')!r}.")
            key = (service, action)
            self.limiter.begin(key, arrived_at)
            in_flight = key
            params = self._params(headers, body)
            # Like Tencent's gateway, the limit counts a call when it arrives; the latency delays its answer.
            admitted = self.limiter.admit(key, arrived_at, params.get("TaskId"), params.get("FileIds"))
            self._inject_faults()
            if not admitted:
                raise ApiError("RequestLimitExceeded", "The number of requests exceeds the frequency limit.")
            installed = self.answers.get(service, action, params.get("TaskId"))
            if installed is not None:
                return served_as_is(installed.response)
            return success(handler(self, params))
        except ApiError as error:
            if key is None and action:
                key = (tc3.scope_service(headers), action)
                self.limiter.count_call(key, arrived_at)
            if key is not None:
                self.limiter.count_error(key, error.code)
            return failure(error)
        except Exception:  # noqa: BLE001 - a bug must still answer in the envelope, like the real gateway
            log.exception("action %s failed", action)
            if key is not None:
                self.limiter.count_error(key, "InternalError")
            return failure(ApiError("InternalError", "Internal error."))
        finally:
            if in_flight is not None:
                self.limiter.end(in_flight)

    @staticmethod
    def _params(headers: dict[str, str], body: bytes) -> dict[str, Any]:
        if not headers.get("content-type", "").startswith("application/json"):
            raise ApiError("InvalidParameter", "The emulator accepts application/json bodies only.")
        try:
            params = json.loads(body or b"{}")
        except ValueError as exc:
            raise ApiError("InvalidParameter", "The request body is not valid JSON.") from exc
        if not isinstance(params, dict):
            raise ApiError("InvalidParameter", "The request body must be a JSON object.")
        return params

    def _inject_faults(self) -> None:
        faults = self.faults.current()
        if faults.latency > 0:
            time.sleep(faults.latency)
        if faults.force_rate_limit:
            raise ApiError("RequestLimitExceeded", "The number of requests exceeds the frequency limit.")
        if self.faults.roll(faults.error_rate):
            raise ApiError("InternalError", "Internal error.")

    # -- admin ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {"actions": self.limiter.snapshot(), "limits": self.limiter.limits(),
                "callbacks": self.callbacks.snapshot(), "faults": asdict(self.faults.current())}

    def calls(self, service: str | None = None, action: str | None = None) -> dict[str, Any]:
        """The admitted API calls in admission order (GET /_emulator/calls)."""
        return {"calls": self.limiter.calls(service, action)}

    def reset(self) -> None:
        """Forget tasks, sessions, media files, counters, deliveries, runtime faults and installed answers;
        keep the start-up flags (``--answers`` included)."""
        self.answers.reset()
        self.store.reset()
        self.media.reset()
        self.limiter.reset()
        self.callbacks.reset()
        self.faults.reset()
        with self._vod_lock:
            self._vod_events.clear()
            self._vod_switches.clear()
