"""The emulator's settings, built once from the command line and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_SECRET_ID = "AKIDlocalemulator"
DEFAULT_SECRET_KEY = "local-emulator-secret"
DEFAULT_VOD_SIGN_KEY = "local-demo-vod-key"

# Requests per second, per (service, action), from the API pages (the VOD media-file actions' pages say 100);
# the other creating actions get CREATE_LIMIT. emulator/README.md lists them; a test keeps the two the same.
CREATE_LIMIT = 50
DEFAULT_RATE_LIMITS: dict[tuple[str, str], int] = {
    ("mps", "DescribeTaskDetail"): 100,
    ("mps", "DescribeBatchTaskDetail"): 20,
    ("mps", "DescribeImageTaskDetail"): 100,
    ("mps", "DescribeTasks"): 100,
    ("mps", "ProcessMedia"): CREATE_LIMIT,
    ("mps", "BatchProcessMedia"): CREATE_LIMIT,
    ("mps", "ProcessImage"): 20,
    ("mps", "ProcessLiveStream"): CREATE_LIMIT,
    ("vod", "DescribeTaskDetail"): 100,
    ("vod", "DescribeTasks"): 100,
    ("vod", "ProcessMedia"): CREATE_LIMIT,
    ("vod", "ModifyEventConfig"): CREATE_LIMIT,
    ("vod", "ApplyUpload"): 100,
    ("vod", "CommitUpload"): 100,
    ("vod", "DeleteMedia"): 100,
    ("vod", "DescribeMediaInfos"): 100,
    ("ams", "DescribeTaskDetail"): 20,
    ("ams", "DescribeTasks"): 20,
    ("ams", "CreateAudioModerationTask"): CREATE_LIMIT,
}


def default_credentials() -> tuple[str, str]:
    """The receiver's own variables, so one environment configures both; else a documented demo pair."""
    secret_id = os.environ.get("TENCENTCLOUD_SECRET_ID") or DEFAULT_SECRET_ID
    secret_key = os.environ.get("TENCENTCLOUD_SECRET_KEY") or DEFAULT_SECRET_KEY
    return secret_id, secret_key


def first_key(variable: str, default: str = "") -> str:
    """The first key of one of the receiver's key lists, so one environment configures both."""
    keys = [k.strip() for k in os.environ.get(variable, "").split(",") if k.strip()]
    return keys[0] if keys else default


def default_vod_sign_key() -> str:
    return first_key("VOD_SIGN_KEYS", DEFAULT_VOD_SIGN_KEY)


@dataclass
class Config:
    """Everything that shapes the emulator's behaviour apart from runtime faults."""

    credentials: dict[str, str]
    processing_after: float = 0.2
    finish_after: float = 0.5
    vod_sign_key: str = DEFAULT_VOD_SIGN_KEY
    vod_notify_url: str = ""
    # ProcessImage takes no TaskNotifyConfig: a real image task notifies through the orchestration
    # (ScheduleId) it runs in. These stand for that orchestration's URL-mode notify configuration.
    image_notify_url: str = ""
    image_notify_key: str = ""
    callback_retries: int = 3
    callback_backoff: float = 0.2
    callback_timeout: float = 5.0
    rate_limits: dict[tuple[str, str], int] = field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
