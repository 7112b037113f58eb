"""Calls to Tencent Cloud through the official SDK clients.

Only worker processes call Tencent Cloud (SPEC 6): the worker through its
`receiver.scheduler`, the sweeper under its own `RateLimits`. One client per
product serves every thread, over a keep-alive connection pool as large as
the calls the process may have in flight. Answers are the raw
``Response`` JSON (`call_json`), because the event carries it exactly as
returned. Every failure is sorted into what the worker should do about it.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from tencentcloud.ams.v20201229 import ams_client
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import mps_client
from tencentcloud.vod.v20180717 import vod_client
from urllib3.util.wait import wait_for_read

from receiver import metrics
from receiver.config import Settings
from receiver.ratelimit import RateLimits, departing

REQUEST_TIMEOUT_SECONDS = 10
NEW_CONNECTION_SECONDS = 0.1  # a server's set-up of a new connection, at most
WARM_AHEAD = 16  # connections kept open ahead of need, per endpoint
WARM_MAX_IDLE_SECONDS = 30.0  # a warm connection idle longer may have been closed by the server: not used
# Not a Tencent Cloud code: an answer we cannot read is retried, then buried (Failure.OTHER).
UNREADABLE_ANSWER = "ClientError.UnreadableAnswer"

_CLIENT_CLASSES = {"mps": mps_client.MpsClient, "vod": vod_client.VodClient, "ams": ams_client.AmsClient}


@dataclass(frozen=True)
class DescribeCall:
    service: str
    action: str
    params: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.service}:{self.action}"


class Failure(enum.Enum):
    RETRY = "retry"  # throttled, server trouble, network: try again later
    CREDENTIALS = "credentials"  # our keys are refused: keep events, mark readiness degraded
    NOT_FOUND = "not_found"  # no such task (perhaps not yet visible)
    OTHER = "other"  # anything else: retried, and buried after MAX_ATTEMPTS


def classify(error: TencentCloudSDKException) -> Failure:
    code = error.get_code() or ""
    if code.startswith(("AuthFailure", "UnauthorizedOperation")):
        return Failure.CREDENTIALS
    if code.startswith("ResourceNotFound") or code == "InvalidParameterValue.TaskId":
        return Failure.NOT_FOUND
    if code.startswith(("RequestLimitExceeded", "InternalError", "ClientNetworkError", "ServerNetworkError",
                        "ResourceUnavailable", "FailedOperation")) or not code:
        return Failure.RETRY
    return Failure.OTHER


def call_outcome(error: TencentCloudSDKException) -> str:
    """The receiver_describe_calls_total outcome of a failed call: rate_limited, not_found or error."""
    if (error.get_code() or "").startswith("RequestLimitExceeded"):
        return "rate_limited"
    return "not_found" if classify(error) is Failure.NOT_FOUND else "error"


class _Departing:
    """A connection that tells the rate limit when a request leaves: connected, after the SDK signed it.

    A server takes a while to set up its side of a new connection, so the
    first request over a connection younger than NEW_CONNECTION_SECONDS
    counts as arriving that much later: stamped earlier, a second's first
    requests could crowd into the previous second at the server.
    """

    connected_at: float | None = None
    requests_sent = 0

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.connected_at = time.monotonic()
        self.requests_sent = 0

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is None:  # type: ignore[attr-defined]
            self.connect()
        delay = 0.0
        if self.requests_sent == 0 and self.connected_at is not None:
            delay = max(0.0, NEW_CONNECTION_SECONDS - (time.monotonic() - self.connected_at))
        self.requests_sent += 1
        super().request(*args, **kwargs)  # type: ignore[misc]
        # Stamped once the bytes are out: a thread held up before sending must not count as gone earlier.
        departing(delay)


class _WarmAhead:
    """A pool that keeps WARM_AHEAD connections opened ahead of need, once `warm()` was called.

    When more calls go in flight than the pool has connections, the next ones
    find a connection that is already up (no handshake on the call's time, no
    new-connection allowance on the quota), and a thread opens the next few.
    Only the worker warms its pools: the sweeper's few calls would only keep
    idle connections open.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._warm: collections.deque[Any] = collections.deque()
        self._warm_lock = threading.Lock()
        self._warming = False
        self._ahead = False

    def _new_conn(self) -> Any:
        if not self._ahead:
            return super()._new_conn()  # type: ignore[misc]
        conn = None
        with self._warm_lock:
            while self._warm and conn is None:
                candidate = self._warm.popleft()
                fresh = time.monotonic() - candidate.connected_at < WARM_MAX_IDLE_SECONDS
                if fresh and not wait_for_read(candidate.sock, timeout=0.0):
                    conn = candidate
                else:
                    candidate.close()  # idle too long, or closed (or spoken to) by the server
            fill = not self._warming
            self._warming = True
        if fill:
            self._start_filling()
        return conn or super()._new_conn()  # type: ignore[misc]

    def warm(self) -> None:
        """Open WARM_AHEAD connections now, in the background, before the first call needs one."""
        with self._warm_lock:
            self._ahead = True
            fill = not self._warming
            self._warming = True
        if fill:
            self._start_filling()

    def _start_filling(self) -> None:
        threading.Thread(target=self._fill, name="warm-connections", daemon=True).start()

    def _fill(self) -> None:
        try:
            while len(self._warm) < WARM_AHEAD and self.pool is not None:  # type: ignore[attr-defined]
                conn = super()._new_conn()  # type: ignore[misc]
                try:
                    conn.connect()
                except Exception:  # noqa: BLE001 - warming is best-effort; a call meets and reports the trouble
                    conn.close()
                    return
                with self._warm_lock:
                    self._warm.append(conn)
        finally:
            with self._warm_lock:
                self._warming = False

    def close(self) -> None:
        super().close()  # type: ignore[misc]
        with self._warm_lock:
            while self._warm:
                self._warm.popleft().close()


class _DepartingHTTPConnection(_Departing, urllib3.connection.HTTPConnection):
    pass


class _DepartingHTTPSConnection(_Departing, urllib3.connection.HTTPSConnection):
    pass


class _DepartingHTTPPool(_WarmAhead, urllib3.HTTPConnectionPool):
    ConnectionCls = _DepartingHTTPConnection


class _DepartingHTTPSPool(_WarmAhead, urllib3.HTTPSConnectionPool):
    ConnectionCls = _DepartingHTTPSConnection


class _DepartingAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _DepartingHTTPPool, "https": _DepartingHTTPSPool}


def _adapt_session(client: Any, connections: int) -> None:
    """Our adapter on the SDK client's session: the departure stamp, and as many keep-alive connections
    as calls may be in flight (the SDK's session keeps 10).

    The SDK offers no setting for either; its `pre_conn_pool_size` opens every
    connection up front, from a thread of its own, and keeps replacing them.
    """
    session = getattr(getattr(getattr(client, "request", None), "conn", None), "_session", None)
    if isinstance(session, requests.Session):
        adapter = _DepartingAdapter(pool_connections=1, pool_maxsize=max(10, connections))
        session.mount("http://", adapter)
        session.mount("https://", adapter)


def _warm_session(client: Any) -> None:
    connection = getattr(getattr(client, "request", None), "conn", None)
    session = getattr(connection, "_session", None)
    if isinstance(session, requests.Session):
        url = f"{client.profile.httpProfile.scheme}://{client._get_endpoint()}/"
        # The pool the SDK's requests will use: it is keyed by their TLS settings too.
        verify = getattr(connection, "certification", None)
        verify = session.verify if verify is None else verify
        pool = session.get_adapter(url).get_connection_with_tls_context(
            requests.Request("POST", url).prepare(), verify
        )
        if isinstance(pool, _WarmAhead):
            pool.warm()


class TencentCloud:
    """One SDK client per product, sharing credentials, endpoints and the rate limits."""

    def __init__(self, settings: Settings, limits: RateLimits | None = None, connections: int = 10):
        if not settings.has_tencentcloud_credentials:
            raise ValueError("TencentCloud needs TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY")
        cred = credential.Credential(settings.tencentcloud_secret_id, settings.tencentcloud_secret_key)
        self._limits = limits
        self._clients = {}
        for service, client_class in _CLIENT_CLASSES.items():
            override = settings.endpoints.get(service)
            if override:
                parts = urlsplit(override)
                http_profile = HttpProfile(
                    protocol=parts.scheme, endpoint=parts.netloc, reqTimeout=REQUEST_TIMEOUT_SECONDS, keepAlive=True
                )
            else:
                http_profile = HttpProfile(reqTimeout=REQUEST_TIMEOUT_SECONDS, keepAlive=True)
            self._clients[service] = client = client_class(
                cred, settings.tencentcloud_region, ClientProfile(httpProfile=http_profile)
            )
            _adapt_session(client, connections)

    def warm_connections(self) -> None:
        """Open connections to every product's endpoint ahead of the first calls (in the background)."""
        for client in self._clients.values():
            _warm_session(client)

    def call(self, call: DescribeCall, deadline: float | None = None) -> dict[str, Any]:
        """The ``Response`` object of one call; raises TencentCloudSDKException.

        Under `limits`, waits for a slot of the action's limit first; with a
        `deadline` (time.monotonic()), raises RateLimitTimeout instead of
        waiting past it.
        """
        if self._limits is None:
            return self._counted(call)
        with self._limits.slot(call.service, call.action, deadline):
            return self._counted(call)

    def _counted(self, call: DescribeCall) -> dict[str, Any]:
        """`_call`, counted in receiver_describe_calls_total (a call our own limit never let go is not a call)."""
        try:
            response = self._call(call)
        except TencentCloudSDKException as error:
            metrics.DESCRIBE_CALLS.labels(call.service, call.action, call_outcome(error)).inc()
            raise
        metrics.DESCRIBE_CALLS.labels(call.service, call.action, "ok").inc()
        return response

    def _call(self, call: DescribeCall) -> dict[str, Any]:
        try:
            answer = self._clients[call.service].call_json(call.action, dict(call.params))
        except TencentCloudSDKException:
            raise
        except (OSError, requests.RequestException) as error:  # the SDK lets some network errors through
            raise TencentCloudSDKException("ClientNetworkError", type(error).__name__) from error
        except Exception as error:  # noqa: BLE001 - an answer the SDK cannot read (deep nesting, not JSON)
            raise TencentCloudSDKException(UNREADABLE_ANSWER, type(error).__name__) from error
        response = answer.get("Response") if isinstance(answer, dict) else None
        if not isinstance(response, dict):
            raise TencentCloudSDKException(UNREADABLE_ANSWER, "the answer has no Response object")
        return response
