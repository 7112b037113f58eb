"""Configuration: every variable of SPEC.md read once, validated, frozen.

`load_settings()` runs at start-up; a bad value raises `ConfigError` whose
message starts with the variable's name, and the process refuses to start.
Nothing else in the product reads `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ConfigError lives beside the reader that raises it; the product imports it from here.
from receiver.config_values import ConfigError, EnvironmentReader

PRODUCTS = ("mps", "vod", "ams")

# Tasks per DescribeTasks page the sweeper asks for (the APIs allow at most 100).
SWEEP_PAGE_SIZE = 100

# Default per-action limits, from the API pages (calls per second).
DEFAULT_RATE_LIMITS: dict[tuple[str, str], int] = {
    ("mps", "DescribeTaskDetail"): 100,
    ("mps", "DescribeBatchTaskDetail"): 20,
    ("mps", "DescribeImageTaskDetail"): 100,
    ("mps", "DescribeTasks"): 100,
    ("vod", "DescribeTaskDetail"): 100,
    ("vod", "DescribeMediaInfos"): 100,
    ("vod", "DescribeTasks"): 100,
    ("ams", "DescribeTaskDetail"): 20,
    ("ams", "DescribeTasks"): 20,
}


@dataclass(frozen=True)
class Settings:
    # Authentication (SPEC 4)
    callback_tokens: tuple[str, ...] = ()
    mps_notify_keys: tuple[str, ...] = ()
    vod_sign_keys: tuple[str, ...] = ()
    ams_seeds: tuple[str, ...] = ()
    allow_unsigned: Mapping[str, bool] = field(
        default_factory=lambda: {p: False for p in PRODUCTS}
    )
    signature_leeway_seconds: int = 60
    # Validation (SPEC 5)
    max_body_bytes: int = 1024 * 1024
    # Inbox (SPEC 8)
    inbox_url: str = "sqlite:///var/inbox.db"
    idempotency_table: str | None = None
    max_attempts: int = 10
    # Worker and reconciliation (SPEC 6)
    receiver_public_url: str = "http://127.0.0.1:8000"
    worker_in_web: bool = False
    worker_processes: int = 1
    worker_lease_seconds: float = 120.0
    tencentcloud_quota_share: float = 1.0
    tencentcloud_max_in_flight: int = 128
    rate_limits: Mapping[tuple[str, str], int] = field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMITS)
    )
    tencentcloud_secret_id: str | None = None
    tencentcloud_secret_key: str | None = field(default=None, repr=False)
    tencentcloud_region: str = "ap-guangzhou"
    endpoints: Mapping[str, str | None] = field(
        default_factory=lambda: {p: None for p in PRODUCTS}
    )
    not_found_patience_seconds: int = 20
    consistency_patience_seconds: int = 30
    vod_subapp_id: int | None = None
    vod_forward_unreconciled: bool = False
    # Sinks (SPEC 7)
    sink: str = "log"
    log_sink_path: str | None = None
    sqs_queue_url: str | None = None
    sqs_large_payload_bucket: str | None = None
    # Sweeper (SPEC 9)
    sweep_interval_seconds: int = 300
    sweep_lookback_seconds: int = 86400
    ams_biztypes: tuple[str, ...] = ()
    sweep_page_size: int = SWEEP_PAGE_SIZE
    run_sweeper: bool = False  # the launcher (`make run`) starts the sweeper too

    def keys_for(self, product: str) -> tuple[str, ...]:
        """The signing secrets configured for `product` (mps, vod or ams)."""
        return {
            "mps": self.mps_notify_keys,
            "vod": self.vod_sign_keys,
            "ams": self.ams_seeds,
        }[product]

    @property
    def sqlite_path(self) -> Path | None:
        """The inbox file for a `sqlite:///` INBOX_URL, else None."""
        if not self.inbox_url.startswith("sqlite:///"):
            return None
        return Path(self.inbox_url[len("sqlite:///") :])

    @property
    def has_tencentcloud_credentials(self) -> bool:
        return bool(self.tencentcloud_secret_id and self.tencentcloud_secret_key)

    def __repr__(self) -> str:  # secrets never reach a log line through repr()
        return (
            f"Settings(inbox_url={self.inbox_url!r}, sink={self.sink!r}, "
            f"receiver_public_url={self.receiver_public_url!r})"
        )



def _inbox_url(reader: EnvironmentReader) -> str:
    value = reader.string("INBOX_URL", "sqlite:///var/inbox.db")
    assert value is not None
    if value.startswith("sqlite:///"):
        if len(value) == len("sqlite:///"):
            raise ConfigError("INBOX_URL: sqlite:/// needs a file path")
        return value
    if value.startswith("sqs+"):
        reader_for_queue = EnvironmentReader({"INBOX_URL": value[len("sqs+") :]})
        reader_for_queue.url("INBOX_URL", None, ("http", "https"))
        return value
    raise ConfigError(
        f"INBOX_URL: expected sqlite:///path or sqs+https://queue-url, got {value!r}"
    )


def _rate_limits(reader: EnvironmentReader) -> dict[tuple[str, str], int]:
    limits = dict(DEFAULT_RATE_LIMITS)
    for service, action in DEFAULT_RATE_LIMITS:
        name = f"RATE_LIMIT_{service.upper()}_{action.upper()}"
        value = reader.integer(name, None, minimum=1)
        if value is not None:
            limits[(service, action)] = value
    known = {f"RATE_LIMIT_{s.upper()}_{a.upper()}" for s, a in DEFAULT_RATE_LIMITS}
    for name in reader.environ:
        if name.startswith("RATE_LIMIT_") and name not in known:
            raise ConfigError(f"{name}: unknown action; known: {', '.join(sorted(known))}")
    return limits


def _sweep_page_size(reader: EnvironmentReader) -> int:
    value = reader.integer("SWEEP_PAGE_SIZE", SWEEP_PAGE_SIZE, minimum=1)
    assert value is not None
    if value > SWEEP_PAGE_SIZE:
        raise ConfigError(f"SWEEP_PAGE_SIZE: must be at most {SWEEP_PAGE_SIZE}, got {value}")
    return value


# --- one helper per concern, each returning its fields of Settings --------------------------


def _sink(reader: EnvironmentReader) -> dict[str, Any]:
    """SPEC 7: where events go."""
    sink = (reader.string("SINK", "log") or "log").lower()
    if sink not in ("log", "sqs"):
        raise ConfigError(f"SINK: expected log or sqs, got {sink!r}")
    sqs_queue_url = reader.url("SQS_QUEUE_URL", None, ("http", "https"))
    if sink == "sqs" and sqs_queue_url is None:
        raise ConfigError("SQS_QUEUE_URL: required when SINK=sqs")
    return {
        "sink": sink,
        "log_sink_path": reader.string("LOG_SINK_PATH"),
        "sqs_queue_url": sqs_queue_url,
        "sqs_large_payload_bucket": reader.string("SQS_LARGE_PAYLOAD_BUCKET"),
    }


def _inbox(reader: EnvironmentReader) -> dict[str, Any]:
    """SPEC 8: where callbacks wait, and the table an SQS inbox needs beside it."""
    inbox_url = _inbox_url(reader)
    idempotency_table = reader.string("IDEMPOTENCY_TABLE")
    if inbox_url.startswith("sqs+") and idempotency_table is None:
        raise ConfigError("IDEMPOTENCY_TABLE: required when INBOX_URL is an sqs+ queue")
    return {"inbox_url": inbox_url, "idempotency_table": idempotency_table}


def _tencentcloud_credentials(reader: EnvironmentReader) -> dict[str, Any]:
    secret_id = reader.string("TENCENTCLOUD_SECRET_ID")
    secret_key = reader.string("TENCENTCLOUD_SECRET_KEY")
    if bool(secret_id) != bool(secret_key):
        missing = "TENCENTCLOUD_SECRET_KEY" if secret_id else "TENCENTCLOUD_SECRET_ID"
        raise ConfigError(f"{missing}: must be set together with its pair")
    return {"tencentcloud_secret_id": secret_id, "tencentcloud_secret_key": secret_key}


def _intake(reader: EnvironmentReader) -> dict[str, Any]:
    """SPEC 4 and 5: what a callback must prove, and how large it may be."""
    return {
        "callback_tokens": reader.secret_list("CALLBACK_TOKENS"),
        "mps_notify_keys": reader.secret_list("MPS_NOTIFY_KEYS"),
        "vod_sign_keys": reader.secret_list("VOD_SIGN_KEYS"),
        "ams_seeds": reader.secret_list("AMS_SEEDS"),
        "allow_unsigned": {p: reader.boolean(f"{p.upper()}_ALLOW_UNSIGNED", False) for p in PRODUCTS},
        "signature_leeway_seconds": reader.integer("SIGNATURE_LEEWAY_SECONDS", 60),
        "max_body_bytes": reader.integer("MAX_BODY_BYTES", 1024 * 1024, minimum=1),
    }


def _worker(reader: EnvironmentReader) -> dict[str, Any]:
    """SPEC 6 and 8: how many workers, where they run, how long a record is theirs and how often it is tried."""
    return {
        "max_attempts": reader.integer("MAX_ATTEMPTS", 10, minimum=1),
        "receiver_public_url": reader.url(
            "RECEIVER_PUBLIC_URL", "http://127.0.0.1:8000", ("http", "https")
        ).rstrip("/"),
        "worker_in_web": reader.boolean("WORKER_IN_WEB", False),
        "worker_processes": reader.integer("WORKER_PROCESSES", 1, minimum=1),
        "worker_lease_seconds": reader.seconds("WORKER_LEASE_SECONDS", 120.0, minimum=0.5),
    }


def _tencentcloud_api(reader: EnvironmentReader) -> dict[str, Any]:
    """How the Tencent Cloud APIs are reached: quota, calls in flight, region, endpoints."""
    return {
        "tencentcloud_quota_share": reader.fraction("TENCENTCLOUD_QUOTA_SHARE", 1.0),
        "tencentcloud_max_in_flight": reader.integer("TENCENTCLOUD_MAX_IN_FLIGHT", 128, minimum=1),
        "rate_limits": _rate_limits(reader),
        "tencentcloud_region": reader.string("TENCENTCLOUD_REGION", "ap-guangzhou"),
        "endpoints": {
            p: reader.url(f"TENCENTCLOUD_{p.upper()}_ENDPOINT", None, ("http", "https")) for p in PRODUCTS
        },
    }


def _reconciliation(reader: EnvironmentReader) -> dict[str, Any]:
    """SPEC 6: how long a lagging answer is waited for, and the VOD application asked about."""
    return {
        "not_found_patience_seconds": reader.integer("NOT_FOUND_PATIENCE_SECONDS", 20),
        "consistency_patience_seconds": reader.integer("CONSISTENCY_PATIENCE_SECONDS", 30),
        "vod_subapp_id": reader.integer("VOD_SUBAPP_ID", None, minimum=1),
        "vod_forward_unreconciled": reader.boolean("VOD_FORWARD_UNRECONCILED", False),
    }


def _sweeper(reader: EnvironmentReader) -> dict[str, Any]:
    """SPEC 9: how often, how far back and over which AMS biztypes the sweeper lists."""
    return {
        "sweep_interval_seconds": reader.integer("SWEEP_INTERVAL_SECONDS", 300, minimum=1),
        "sweep_lookback_seconds": reader.integer("SWEEP_LOOKBACK_SECONDS", 86400, minimum=1),
        "ams_biztypes": reader.plain_list("AMS_BIZTYPES"),
        "sweep_page_size": _sweep_page_size(reader),
        "run_sweeper": reader.boolean("RUN_SWEEPER", False),
    }


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every variable once; raise ConfigError naming a bad one.

    The concerns are read in a fixed order (sink, inbox and credentials first: the pairs that must be set
    together), so one environment always names the same first error (tests/test_config.py pins it).
    """
    reader = EnvironmentReader(os.environ if environ is None else environ)
    return Settings(
        **_sink(reader),
        **_inbox(reader),
        **_tencentcloud_credentials(reader),
        **_intake(reader),
        **_worker(reader),
        **_tencentcloud_api(reader),
        **_reconciliation(reader),
        **_sweeper(reader),
    )
