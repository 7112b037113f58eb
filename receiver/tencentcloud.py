"""Calls to Tencent Cloud through the official SDK clients, under the rate limits.

Only worker processes call Tencent Cloud (SPEC 6). Answers are the raw
``Response`` JSON (`call_json`), because the event carries it exactly as
returned. Every failure is sorted into what the worker should do about it.
"""

from __future__ import annotations

import enum
from typing import Any
from urllib.parse import urlsplit

import requests
from tencentcloud.ams.v20201229 import ams_client
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mps.v20190612 import mps_client
from tencentcloud.vod.v20180717 import vod_client

from receiver.config import Settings
from receiver.ratelimit import RateLimits
from receiver.reconcile import DescribeCall

REQUEST_TIMEOUT_SECONDS = 10
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


class TencentCloud:
    """One SDK client per product, sharing credentials, endpoints and the rate limits."""

    def __init__(self, settings: Settings, limits: RateLimits):
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
                    protocol=parts.scheme, endpoint=parts.netloc, reqTimeout=REQUEST_TIMEOUT_SECONDS
                )
            else:
                http_profile = HttpProfile(reqTimeout=REQUEST_TIMEOUT_SECONDS)
            self._clients[service] = client_class(
                cred, settings.tencentcloud_region, ClientProfile(httpProfile=http_profile)
            )

    def call(self, call: DescribeCall, deadline: float | None = None) -> dict[str, Any]:
        """The ``Response`` object of one call; raises TencentCloudSDKException.

        With a `deadline` (time.monotonic()), raises RateLimitTimeout instead of
        waiting past it for a slot of the action's limit.
        """
        with self._limits.slot(call.service, call.action, deadline):
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
