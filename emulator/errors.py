"""Tencent Cloud API errors and the response envelope every answer uses."""

from __future__ import annotations

import uuid
from typing import Any


class ApiError(Exception):
    """An error answered in Tencent's envelope (always with HTTP 200, as the real API does)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def request_id() -> str:
    return str(uuid.uuid4())


def success(payload: dict[str, Any]) -> dict[str, Any]:
    """Wrap an action's answer as ``{"Response": {..., "RequestId": ...}}``."""
    return {"Response": {**payload, "RequestId": request_id()}}


def failure(error: ApiError) -> dict[str, Any]:
    """Tencent's error envelope: the SDK raises `TencentCloudSDKException` from exactly this shape."""
    return {"Response": {"Error": {"Code": error.code, "Message": error.message}, "RequestId": request_id()}}
