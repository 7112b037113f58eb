"""Configuration is read once, validated, and a bad value names its variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from receiver.config import DEFAULT_RATE_LIMITS, ConfigError, load_settings
from tests.servers import ROOT


def test_defaults_need_no_environment():
    settings = load_settings({})
    assert settings.inbox_url == "sqlite:///var/inbox.db"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.signature_leeway_seconds == 60
    assert settings.sink == "log"
    assert settings.rate_limits == DEFAULT_RATE_LIMITS
    assert settings.allow_unsigned == {"mps": False, "vod": False, "ams": False}


def test_lists_allow_rotation():
    settings = load_settings({"MPS_NOTIFY_KEYS": "old, new", "CALLBACK_TOKENS": "a,b"})
    assert settings.mps_notify_keys == ("old", "new")
    assert settings.callback_tokens == ("a", "b")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_BODY_BYTES", "lots"),
        ("MAX_BODY_BYTES", "0"),
        ("SIGNATURE_LEEWAY_SECONDS", "-5"),
        ("RATE_LIMIT_MPS_DESCRIBETASKDETAIL", "fast"),
        ("RECEIVER_PUBLIC_URL", "receiver.example.com/callbacks"),
        ("TENCENTCLOUD_MPS_ENDPOINT", "127.0.0.1:9000"),
        ("INBOX_URL", "postgres://db/inbox"),
        ("INBOX_URL", "sqlite:///"),
        ("MPS_ALLOW_UNSIGNED", "maybe"),
        ("SINK", "kafka"),
        ("VOD_SUBAPP_ID", "app-1"),
        ("RATE_LIMIT_MPS_PROCESSMEDIA", "10"),
        ("TENCENTCLOUD_QUOTA_SHARE", "0"),
        ("TENCENTCLOUD_QUOTA_SHARE", "1.5"),
        ("TENCENTCLOUD_QUOTA_SHARE", "half"),
        ("TENCENTCLOUD_MAX_IN_FLIGHT", "0"),
        ("WORKER_LEASE_SECONDS", "0.1"),
        ("WORKER_LEASE_SECONDS", "nan"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str):
    with pytest.raises(ConfigError) as error:
        load_settings({variable: value})
    assert str(error.value).startswith(variable + ":")


@pytest.mark.parametrize("variable", ["MPS_NOTIFY_KEYS", "VOD_SIGN_KEYS", "AMS_SEEDS", "CALLBACK_TOKENS"])
def test_empty_key_in_a_list_is_refused_without_echoing_it(variable: str):
    with pytest.raises(ConfigError) as error:
        load_settings({variable: "s3cr3t-key,"})
    assert str(error.value).startswith(variable + ":")
    assert "s3cr3t" not in str(error.value)


def test_required_pairs():
    with pytest.raises(ConfigError, match="^SQS_QUEUE_URL:"):
        load_settings({"SINK": "sqs"})
    with pytest.raises(ConfigError, match="^TENCENTCLOUD_SECRET_KEY:"):
        load_settings({"TENCENTCLOUD_SECRET_ID": "AKID"})


def test_rate_limit_override():
    settings = load_settings({"RATE_LIMIT_AMS_DESCRIBETASKDETAIL": "5"})
    assert settings.rate_limits[("ams", "DescribeTaskDetail")] == 5
    assert settings.rate_limits[("mps", "DescribeBatchTaskDetail")] == 20


def test_repr_shows_no_secret():
    settings = load_settings({
        "MPS_NOTIFY_KEYS": "k-mps", "TENCENTCLOUD_SECRET_ID": "AKIDx",
        "TENCENTCLOUD_SECRET_KEY": "sk-secret", "CALLBACK_TOKENS": "tok-secret",
    })
    text = repr(settings)
    assert "k-mps" not in text and "sk-secret" not in text and "tok-secret" not in text


def test_gunicorn_refuses_to_start_with_a_bad_value(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "MAX_BODY_BYTES": "huge", "BIND": "127.0.0.1:0"},
    )
    assert result.returncode != 0
    assert "MAX_BODY_BYTES" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
