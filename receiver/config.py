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
from urllib.parse import urlsplit

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

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


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


class _Reader:
    """Reads typed values from an environment mapping, naming the variable on error."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def _float(self, name: str, kind: str) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected {kind}, got {value!r}") from None

    def fraction(self, name: str, default: float) -> float:
        """A number in (0, 1]."""
        number = self._float(name, "a number")
        if number is None:
            return default
        if not 0 < number <= 1:
            raise ConfigError(f"{name}: must be more than 0 and at most 1, got {self.raw(name)}")
        return number

    def seconds(self, name: str, default: float, minimum: float) -> float:
        number = self._float(name, "a number of seconds")
        if number is None:
            return default
        if not number >= minimum or number == float("inf"):
            raise ConfigError(f"{name}: must be a finite number of at least {minimum}, got {self.raw(name)}")
        return number

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return default if value is None else value

    def integer(self, name: str, default: int | None, minimum: int = 0) -> int | None:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{name}: must be at least {minimum}, got {number}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigError(f"{name}: expected true or false, got {value!r}")

    def secret_list(self, name: str) -> tuple[str, ...]:
        """A comma-separated list of secrets; set but holding an empty item is an error."""
        value = self.raw(name)
        if value is None:
            return ()
        items = [item.strip() for item in value.split(",")]
        if any(not item for item in items):
            # Never echo the value: it holds secrets.
            raise ConfigError(f"{name}: contains an empty key (check for stray commas)")
        return tuple(items)

    def plain_list(self, name: str) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return ()
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ConfigError(
                f"{name}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
                f" and naming a host, got {value!r}"
            )
        return value


def _inbox_url(reader: _Reader) -> str:
    value = reader.string("INBOX_URL", "sqlite:///var/inbox.db")
    assert value is not None
    if value.startswith("sqlite:///"):
        if len(value) == len("sqlite:///"):
            raise ConfigError("INBOX_URL: sqlite:/// needs a file path")
        return value
    if value.startswith("sqs+"):
        reader_for_queue = _Reader({"INBOX_URL": value[len("sqs+") :]})
        reader_for_queue.url("INBOX_URL", None, ("http", "https"))
        return value
    raise ConfigError(
        f"INBOX_URL: expected sqlite:///path or sqs+https://queue-url, got {value!r}"
    )


def _rate_limits(reader: _Reader) -> dict[tuple[str, str], int]:
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


def _sweep_page_size(reader: _Reader) -> int:
    value = reader.integer("SWEEP_PAGE_SIZE", SWEEP_PAGE_SIZE, minimum=1)
    assert value is not None
    if value > SWEEP_PAGE_SIZE:
        raise ConfigError(f"SWEEP_PAGE_SIZE: must be at most {SWEEP_PAGE_SIZE}, got {value}")
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every variable once; raise ConfigError naming a bad one."""
    reader = _Reader(os.environ if environ is None else environ)

    sink = (reader.string("SINK", "log") or "log").lower()
    if sink not in ("log", "sqs"):
        raise ConfigError(f"SINK: expected log or sqs, got {sink!r}")
    sqs_queue_url = reader.url("SQS_QUEUE_URL", None, ("http", "https"))
    if sink == "sqs" and sqs_queue_url is None:
        raise ConfigError("SQS_QUEUE_URL: required when SINK=sqs")

    inbox_url = _inbox_url(reader)
    idempotency_table = reader.string("IDEMPOTENCY_TABLE")
    if inbox_url.startswith("sqs+") and idempotency_table is None:
        raise ConfigError("IDEMPOTENCY_TABLE: required when INBOX_URL is an sqs+ queue")

    secret_id = reader.string("TENCENTCLOUD_SECRET_ID")
    secret_key = reader.string("TENCENTCLOUD_SECRET_KEY")
    if bool(secret_id) != bool(secret_key):
        missing = "TENCENTCLOUD_SECRET_KEY" if secret_id else "TENCENTCLOUD_SECRET_ID"
        raise ConfigError(f"{missing}: must be set together with its pair")

    return Settings(
        callback_tokens=reader.secret_list("CALLBACK_TOKENS"),
        mps_notify_keys=reader.secret_list("MPS_NOTIFY_KEYS"),
        vod_sign_keys=reader.secret_list("VOD_SIGN_KEYS"),
        ams_seeds=reader.secret_list("AMS_SEEDS"),
        allow_unsigned={
            p: reader.boolean(f"{p.upper()}_ALLOW_UNSIGNED", False) for p in PRODUCTS
        },
        signature_leeway_seconds=reader.integer("SIGNATURE_LEEWAY_SECONDS", 60),
        max_body_bytes=reader.integer("MAX_BODY_BYTES", 1024 * 1024, minimum=1),
        inbox_url=inbox_url,
        idempotency_table=idempotency_table,
        max_attempts=reader.integer("MAX_ATTEMPTS", 10, minimum=1),
        receiver_public_url=reader.url(
            "RECEIVER_PUBLIC_URL", "http://127.0.0.1:8000", ("http", "https")
        ).rstrip("/"),
        worker_in_web=reader.boolean("WORKER_IN_WEB", False),
        worker_processes=reader.integer("WORKER_PROCESSES", 1, minimum=1),
        worker_lease_seconds=reader.seconds("WORKER_LEASE_SECONDS", 120.0, minimum=0.5),
        tencentcloud_quota_share=reader.fraction("TENCENTCLOUD_QUOTA_SHARE", 1.0),
        tencentcloud_max_in_flight=reader.integer("TENCENTCLOUD_MAX_IN_FLIGHT", 128, minimum=1),
        rate_limits=_rate_limits(reader),
        tencentcloud_secret_id=secret_id,
        tencentcloud_secret_key=secret_key,
        tencentcloud_region=reader.string("TENCENTCLOUD_REGION", "ap-guangzhou"),
        endpoints={
            p: reader.url(f"TENCENTCLOUD_{p.upper()}_ENDPOINT", None, ("http", "https"))
            for p in PRODUCTS
        },
        not_found_patience_seconds=reader.integer("NOT_FOUND_PATIENCE_SECONDS", 20),
        consistency_patience_seconds=reader.integer("CONSISTENCY_PATIENCE_SECONDS", 30),
        vod_subapp_id=reader.integer("VOD_SUBAPP_ID", None, minimum=1),
        vod_forward_unreconciled=reader.boolean("VOD_FORWARD_UNRECONCILED", False),
        sink=sink,
        log_sink_path=reader.string("LOG_SINK_PATH"),
        sqs_queue_url=sqs_queue_url,
        sqs_large_payload_bucket=reader.string("SQS_LARGE_PAYLOAD_BUCKET"),
        sweep_interval_seconds=reader.integer("SWEEP_INTERVAL_SECONDS", 300, minimum=1),
        sweep_lookback_seconds=reader.integer("SWEEP_LOOKBACK_SECONDS", 86400, minimum=1),
        ams_biztypes=reader.plain_list("AMS_BIZTYPES"),
        sweep_page_size=_sweep_page_size(reader),
        run_sweeper=reader.boolean("RUN_SWEEPER", False),
    )
