"""Configuration is read once, validated, and a bad value names its variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from receiver.config import DEFAULT_RATE_LIMITS, ConfigError, Settings, load_settings
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


# Every variable at once, each with a value other than its default: a variable read into the wrong field, or
# not read at all, changes the result.
EVERY_VARIABLE = {
    "CALLBACK_TOKENS": "t1,t2", "MPS_NOTIFY_KEYS": "m1", "VOD_SIGN_KEYS": "v1,v2", "AMS_SEEDS": "a1",
    "MPS_ALLOW_UNSIGNED": "true", "VOD_ALLOW_UNSIGNED": "no", "AMS_ALLOW_UNSIGNED": "on",
    "SIGNATURE_LEEWAY_SECONDS": "61", "MAX_BODY_BYTES": "2048",
    "INBOX_URL": "sqs+https://sqs.eu-west-1.amazonaws.com/1/inbox", "IDEMPOTENCY_TABLE": "dedup",
    "MAX_ATTEMPTS": "11", "RECEIVER_PUBLIC_URL": "https://receiver.example.com/", "WORKER_IN_WEB": "yes",
    "WORKER_PROCESSES": "3", "WORKER_LEASE_SECONDS": "7.5", "TENCENTCLOUD_QUOTA_SHARE": "0.25",
    "TENCENTCLOUD_MAX_IN_FLIGHT": "9", "RATE_LIMIT_VOD_DESCRIBEMEDIAINFOS": "7",
    "TENCENTCLOUD_SECRET_ID": "AKID", "TENCENTCLOUD_SECRET_KEY": "sk", "TENCENTCLOUD_REGION": "ap-singapore",
    "TENCENTCLOUD_MPS_ENDPOINT": "http://127.0.0.1:9001", "TENCENTCLOUD_VOD_ENDPOINT": "https://vod.example.com",
    "NOT_FOUND_PATIENCE_SECONDS": "21", "CONSISTENCY_PATIENCE_SECONDS": "31", "VOD_SUBAPP_ID": "1500",
    "VOD_FORWARD_UNRECONCILED": "1", "SINK": "SQS", "LOG_SINK_PATH": "/tmp/events.jsonl",
    "SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/events.fifo", "SQS_LARGE_PAYLOAD_BUCKET": "big",
    "SWEEP_INTERVAL_SECONDS": "301", "SWEEP_LOOKBACK_SECONDS": "3601", "AMS_BIZTYPES": "a, b,,",
    "SWEEP_PAGE_SIZE": "50", "RUN_SWEEPER": "TRUE",
}


def test_every_variable_lands_in_its_own_setting():
    settings = load_settings(EVERY_VARIABLE)
    assert settings == Settings(
        callback_tokens=("t1", "t2"), mps_notify_keys=("m1",), vod_sign_keys=("v1", "v2"), ams_seeds=("a1",),
        allow_unsigned={"mps": True, "vod": False, "ams": True}, signature_leeway_seconds=61, max_body_bytes=2048,
        inbox_url="sqs+https://sqs.eu-west-1.amazonaws.com/1/inbox", idempotency_table="dedup", max_attempts=11,
        receiver_public_url="https://receiver.example.com", worker_in_web=True, worker_processes=3,
        worker_lease_seconds=7.5, tencentcloud_quota_share=0.25, tencentcloud_max_in_flight=9,
        rate_limits={**DEFAULT_RATE_LIMITS, ("vod", "DescribeMediaInfos"): 7},
        tencentcloud_secret_id="AKID", tencentcloud_secret_key="sk", tencentcloud_region="ap-singapore",
        endpoints={"mps": "http://127.0.0.1:9001", "vod": "https://vod.example.com", "ams": None},
        not_found_patience_seconds=21, consistency_patience_seconds=31, vod_subapp_id=1500,
        vod_forward_unreconciled=True, sink="sqs", log_sink_path="/tmp/events.jsonl",
        sqs_queue_url="https://sqs.eu-west-1.amazonaws.com/1/events.fifo", sqs_large_payload_bucket="big",
        sweep_interval_seconds=301, sweep_lookback_seconds=3601, ams_biztypes=("a", "b"), sweep_page_size=50,
        run_sweeper=True,
    )


# One bad value per variable, in the order they are checked: (variable, bad value, the variable the error names).
IN_CHECK_ORDER = [
    ("SINK", "kafka", "SINK"),
    ("SQS_QUEUE_URL", "queue", "SQS_QUEUE_URL"),
    ("INBOX_URL", "postgres://db/inbox", "INBOX_URL"),
    ("TENCENTCLOUD_SECRET_ID", "AKID", "TENCENTCLOUD_SECRET_KEY"),
    ("CALLBACK_TOKENS", "a,", "CALLBACK_TOKENS"),
    ("MPS_NOTIFY_KEYS", "a,", "MPS_NOTIFY_KEYS"),
    ("VOD_SIGN_KEYS", "a,", "VOD_SIGN_KEYS"),
    ("AMS_SEEDS", "a,", "AMS_SEEDS"),
    ("MPS_ALLOW_UNSIGNED", "maybe", "MPS_ALLOW_UNSIGNED"),
    ("VOD_ALLOW_UNSIGNED", "maybe", "VOD_ALLOW_UNSIGNED"),
    ("AMS_ALLOW_UNSIGNED", "maybe", "AMS_ALLOW_UNSIGNED"),
    ("SIGNATURE_LEEWAY_SECONDS", "-1", "SIGNATURE_LEEWAY_SECONDS"),
    ("MAX_BODY_BYTES", "0", "MAX_BODY_BYTES"),
    ("MAX_ATTEMPTS", "0", "MAX_ATTEMPTS"),
    ("RECEIVER_PUBLIC_URL", "receiver", "RECEIVER_PUBLIC_URL"),
    ("WORKER_IN_WEB", "maybe", "WORKER_IN_WEB"),
    ("WORKER_PROCESSES", "0", "WORKER_PROCESSES"),
    ("WORKER_LEASE_SECONDS", "0.1", "WORKER_LEASE_SECONDS"),
    ("TENCENTCLOUD_QUOTA_SHARE", "2", "TENCENTCLOUD_QUOTA_SHARE"),
    ("TENCENTCLOUD_MAX_IN_FLIGHT", "0", "TENCENTCLOUD_MAX_IN_FLIGHT"),
    ("RATE_LIMIT_MPS_DESCRIBETASKDETAIL", "0", "RATE_LIMIT_MPS_DESCRIBETASKDETAIL"),
    ("RATE_LIMIT_AMS_DESCRIBETASKS", "0", "RATE_LIMIT_AMS_DESCRIBETASKS"),
    ("RATE_LIMIT_MPS_PROCESSMEDIA", "10", "RATE_LIMIT_MPS_PROCESSMEDIA"),
    ("TENCENTCLOUD_MPS_ENDPOINT", "127.0.0.1:9000", "TENCENTCLOUD_MPS_ENDPOINT"),
    ("TENCENTCLOUD_VOD_ENDPOINT", "127.0.0.1:9000", "TENCENTCLOUD_VOD_ENDPOINT"),
    ("TENCENTCLOUD_AMS_ENDPOINT", "127.0.0.1:9000", "TENCENTCLOUD_AMS_ENDPOINT"),
    ("NOT_FOUND_PATIENCE_SECONDS", "-1", "NOT_FOUND_PATIENCE_SECONDS"),
    ("CONSISTENCY_PATIENCE_SECONDS", "-1", "CONSISTENCY_PATIENCE_SECONDS"),
    ("VOD_SUBAPP_ID", "0", "VOD_SUBAPP_ID"),
    ("VOD_FORWARD_UNRECONCILED", "maybe", "VOD_FORWARD_UNRECONCILED"),
    ("SWEEP_INTERVAL_SECONDS", "0", "SWEEP_INTERVAL_SECONDS"),
    ("SWEEP_LOOKBACK_SECONDS", "0", "SWEEP_LOOKBACK_SECONDS"),
    ("SWEEP_PAGE_SIZE", "101", "SWEEP_PAGE_SIZE"),
    ("RUN_SWEEPER", "maybe", "RUN_SWEEPER"),
]


@pytest.mark.parametrize("first", range(len(IN_CHECK_ORDER)), ids=[named for _, _, named in IN_CHECK_ORDER])
def test_of_several_bad_values_the_first_checked_is_named(first: int):
    """A fixed order: the same environment always gives the operator the same first error."""
    environ = {variable: value for variable, value, _ in IN_CHECK_ORDER[first:]}
    with pytest.raises(ConfigError) as error:
        load_settings(environ)
    assert str(error.value).startswith(IN_CHECK_ORDER[first][2] + ":")
