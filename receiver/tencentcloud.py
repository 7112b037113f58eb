"""Calls to Tencent Cloud through the official SDK clients.

Only worker processes call Tencent Cloud (SPEC 6): the worker through its
`receiver.scheduler`, the sweeper under its own `RateLimits`. One client per
product serves every thread, over a keep-alive connection pool as large as
the calls the process may have in flight. Answers are the raw
``Response`` JSON (`call_json`), because the event carries it exactly as
returned. Every failure is sorted into what the worker should do about it.
"""

from __future__ import annotations

import enum
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

from receiver.config import Settings
from receiver.ratelimit import RateLimits, departing
from receiver.reconcile import DescribeCall

REQUEST_TIMEOUT_SECONDS = 10
NEW_CONNECTION_SECONDS = 0.1  # counted as the arrival delay of a new connection's first request
# Not a Tencent Cloud code: an answer we cannot read is retried, then buried (Failure.OTHER).
UNREADABLE_ANSWER = "ClientError.UnreadableAnswer"

_CLIENT_CLASSES = {"mps": mps_client.MpsClient, "vod": vod_client.VodClient, "ams": ams_client.AmsClient}


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


class _Departing:
    """A connection that tells the rate limit when a request leaves: connected, after the SDK signed it.

    A new connection's first request reaches Tencent a handshake later than a
    reused one's; stamped before the handshake, a second's first requests
    could crowd into the previous second at the server.
    """

    def request(self, *args: Any, **kwargs: Any) -> None:
        new = self.sock is None  # type: ignore[attr-defined]
        if new:
            self.connect()  # type: ignore[attr-defined]
        # A server takes longer over a connection's first request (it sets the connection up on its side).
        departing(NEW_CONNECTION_SECONDS if new else 0.0)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _DepartingHTTPConnection(_Departing, urllib3.connection.HTTPConnection):
    pass


class _DepartingHTTPSConnection(_Departing, urllib3.connection.HTTPSConnection):
    pass


class _DepartingHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _DepartingHTTPConnection


class _DepartingHTTPSPool(urllib3.HTTPSConnectionPool):
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

    def call(self, call: DescribeCall, deadline: float | None = None) -> dict[str, Any]:
        """The ``Response`` object of one call; raises TencentCloudSDKException.

        Under `limits`, waits for a slot of the action's limit first; with a
        `deadline` (time.monotonic()), raises RateLimitTimeout instead of
        waiting past it.
        """
        if self._limits is None:
            return self._call(call)
        with self._limits.slot(call.service, call.action, deadline):
            return self._call(call)

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
