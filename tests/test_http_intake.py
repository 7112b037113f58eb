"""SPEC 3 over real HTTP: every route and every answer of the receiver under gunicorn."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid

import pytest
import requests

from receiver import auth
from tests import payloads
from tests.client import post_ams, post_mps, post_raw, post_vod
from tests.conftest import AMS_SEED, MPS_KEYS, TOKENS, VOD_KEY
from tests.servers import inbox_rows


def unique_workflow(**kwargs) -> dict:
    return payloads.mps_workflow(task_id=f"wf-{uuid.uuid4().hex}", **kwargs)


def assert_error(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


# --- 200 accepted / duplicate ----------------------------------------------------


def test_accepted_then_duplicate_with_the_first_id(receiver):
    body = unique_workflow()
    first = post_mps(receiver.url, body)
    assert first.status_code == 200
    assert first.json()["status"] == "accepted" and first.json()["id"]
    # Tencent retries with a fresh Timestamp and Sign; the new key signs it this time.
    retry = post_mps(receiver.url, body, key=MPS_KEYS[1], now=time.time() + 5)
    assert retry.status_code == 200
    assert retry.json() == {"status": "duplicate", "id": first.json()["id"]}
    [row] = inbox_rows(receiver, id=first.json()["id"])
    assert row["state"] == "pending" and row["source"] == "mps"
    assert row["task_id"] == body["WorkflowTaskEvent"]["TaskId"]
    assert json.loads(row["body"])["WorkflowTaskEvent"] == body["WorkflowTaskEvent"]


def test_a_new_status_of_the_same_task_is_a_new_callback(receiver):
    body = unique_workflow(status="PROCESSING")
    first = post_mps(receiver.url, body)
    body["WorkflowTaskEvent"]["Status"] = "FINISH"
    second = post_mps(receiver.url, body)
    assert first.json()["status"] == second.json()["status"] == "accepted"
    assert first.json()["id"] != second.json()["id"]


@pytest.mark.parametrize("token", TOKENS)
def test_both_tokens_accepted_during_rotation(receiver, token):
    assert post_mps(receiver.url, unique_workflow(), token=token).json()["status"] == "accepted"


@pytest.mark.parametrize("key", MPS_KEYS)
def test_both_mps_keys_accepted_during_rotation(receiver, key):
    assert post_mps(receiver.url, unique_workflow(), key=key).json()["status"] == "accepted"


def test_seed_002_batch_task_accepted(receiver):
    for with_task_id in (True, False):
        response = post_mps(receiver.url, payloads.mps_batch_from_seed(with_task_id))
        assert response.status_code == 200 and response.json()["status"] in ("accepted", "duplicate")
    rows = inbox_rows(receiver, event_type="BatchTask")
    assert {r["resolve_by"] for r in rows} == {"task_id", "session_id"}


@pytest.mark.parametrize("index", range(len(payloads.VOD_SEED_EVENTS)))
def test_seed_001_vod_events_accepted(receiver, index):
    response = post_vod(receiver.url, payloads.vod_from_seed(index))
    assert response.status_code == 200, response.text
    [row] = inbox_rows(receiver, id=response.json()["id"])
    assert row["event_type"] == payloads.VOD_SEED_EVENTS[index][1]


@pytest.mark.parametrize("body", [payloads.vod_new_file_upload(), payloads.vod_file_deleted()])
def test_vod_file_events_accepted(receiver, body):
    response = post_vod(receiver.url, body)
    assert response.status_code == 200, response.text
    [row] = inbox_rows(receiver, id=response.json()["id"])
    assert row["resolve_by"] == "file_id" and row["task_id"] is None


def test_vod_t_as_a_string_of_digits(receiver):
    signed = auth.sign_vod_event(payloads.vod_new_file_upload("999"), VOD_KEY)
    signed["T"] = str(signed["T"])
    assert post_raw(receiver.url, "vod", json.dumps(signed).encode()).status_code == 200


def test_seed_003_ams_task_accepted(receiver):
    response = post_ams(receiver.url, payloads.ams_from_seed())
    assert response.status_code == 200, response.text
    [row] = inbox_rows(receiver, id=response.json()["id"])
    assert row["task_id"] == "task-video-XwxJtbkKXWgCt8AZ" and row["event_type"] == "AudioModeration"


# --- 400 ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b""])
def test_body_not_a_json_object(receiver, data):
    assert_error(post_raw(receiver.url, "mps", data), 400, "InvalidPayload")


def test_schema_failure_names_the_field(receiver):
    body = unique_workflow()
    del body["WorkflowTaskEvent"]["TaskId"]
    error = assert_error(post_mps(receiver.url, body), 400, "InvalidPayload")
    assert "TaskId" in error["fields"]["WorkflowTaskEvent"]
    long_session = unique_workflow(session_id="s" * 51)
    error = assert_error(post_mps(receiver.url, long_session), 400, "InvalidPayload")
    assert "SessionId" in error["fields"]


def test_vod_schema_failure_names_the_field(receiver):
    error = assert_error(post_vod(receiver.url, {"EventType": "ProcedureStateChanged"}), 400, "InvalidPayload")
    assert "ProcedureStateChangeEvent" in error["fields"]


def test_ams_schema_failure_names_the_field(receiver):
    body = payloads.ams_from_seed()
    del body["TaskId"]
    error = assert_error(post_ams(receiver.url, body), 400, "InvalidPayload")
    assert "TaskId" in error["fields"]


# --- 401 ------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "token-wrong", TOKENS[0] + "x"])
def test_url_token_refused(receiver, token):
    error = assert_error(post_mps(receiver.url, unique_workflow(), token=token), 401, "Unauthorized")
    assert "token-" not in error["message"]


def test_token_is_checked_before_the_json(receiver):
    assert_error(post_raw(receiver.url, "mps", b"not json", token="wrong"), 401, "Unauthorized")


def test_mps_wrong_key(receiver):
    error = assert_error(post_mps(receiver.url, unique_workflow(), key="mps-key-guess"), 401, "Unauthorized")
    assert "mps-key" not in json.dumps(error)


def test_mps_expired_and_too_new(receiver):
    # Signed 11 minutes ago: expired 1 minute ago, past the 60 s leeway.
    assert_error(post_mps(receiver.url, unique_workflow(), now=time.time() - 661 - 5), 401, "Unauthorized")
    # Expiring further ahead than send time + 10 min + leeway.
    assert_error(post_mps(receiver.url, unique_workflow(), now=time.time() + 61 + 5), 401, "Unauthorized")


def test_mps_missing_sign(receiver):
    body = auth.sign_mps_notification(unique_workflow(), MPS_KEYS[0])
    del body["Sign"]
    assert_error(post_raw(receiver.url, "mps", json.dumps(body).encode()), 401, "Unauthorized")


def test_signature_is_checked_before_the_schema(receiver):
    assert_error(post_mps(receiver.url, {"EventType": "Nonsense"}, key="wrong"), 401, "Unauthorized")


def test_vod_wrong_key_and_expired(receiver):
    assert_error(post_vod(receiver.url, payloads.vod_new_file_upload(), key="wrong"), 401, "Unauthorized")
    assert_error(post_vod(receiver.url, payloads.vod_new_file_upload(), now=time.time() - 700),
                 401, "Unauthorized")
    assert_error(post_vod(receiver.url, payloads.vod_new_file_upload(), now=time.time() + 70),
                 401, "Unauthorized")


def test_ams_wrong_seed_missing_header_and_tampered_body(receiver):
    body = payloads.ams_from_seed()
    assert_error(post_ams(receiver.url, body, seed="wrong"), 401, "Unauthorized")
    raw, headers = auth.sign_ams_callback(body, AMS_SEED)
    assert_error(post_raw(receiver.url, "ams", raw), 401, "Unauthorized")
    tampered = raw.replace(b'"Block"', b'"Pass"', 1)
    assert_error(post_raw(receiver.url, "ams", tampered, headers=headers), 401, "Unauthorized")


# --- 405, 404, 413 ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method(receiver, method):
    response = requests.request(method, f"{receiver.url}/callbacks/mps", timeout=10)
    assert_error(response, 405, "MethodNotAllowed")
    assert "POST" in response.headers["Allow"]


def test_post_to_healthz_is_405_and_unknown_route_404(receiver):
    assert_error(requests.post(f"{receiver.url}/healthz", timeout=10), 405, "MethodNotAllowed")
    assert_error(requests.post(f"{receiver.url}/callbacks/cos", data=b"{}", timeout=10), 404, "NotFound")


def test_oversized_body_413_before_anything_else(start_receiver):
    server = start_receiver(MAX_BODY_BYTES="2048")
    big = json.dumps({"EventType": "WorkflowTask", "pad": "x" * 3000}).encode()
    # Checked first: even without a token, and with a chunked body of unknown length.
    assert_error(post_raw(server.url, "mps", big, token=None), 413, "PayloadTooLarge")
    chunked = requests.post(f"{server.url}/callbacks/mps", data=iter([big[:1500], big[1500:]]), timeout=10)
    assert_error(chunked, 413, "PayloadTooLarge")
    # A body at the limit is read and judged on its merits.
    assert post_mps(server.url, unique_workflow()).status_code == 200


# --- 503 ------------------------------------------------------------------------------


def test_inbox_not_writable_is_503_with_retry_after(start_receiver, tmp_path):
    server = start_receiver()
    assert post_mps(server.url, unique_workflow()).status_code == 200
    # Another process holds the database's write lock longer than the busy timeout.
    blocker = sqlite3.connect(server.env["INBOX_URL"][len("sqlite:///"):], isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    answers: dict[str, requests.Response] = {}
    body = unique_workflow()

    def call(name, fn):
        answers[name] = fn()

    threads = [
        threading.Thread(target=call, args=("post", lambda: post_mps(server.url, body))),
        threading.Thread(target=call, args=("ready", lambda: requests.get(server.url + "/readyz", timeout=30))),
        threading.Thread(target=call, args=("metrics", lambda: requests.get(server.url + "/metrics", timeout=30))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    blocker.execute("ROLLBACK")
    blocker.close()
    assert_error(answers["post"], 503, "InboxUnavailable")
    assert int(answers["post"].headers["Retry-After"]) > 0
    assert answers["ready"].status_code == 503
    assert answers["ready"].json()["status"] == "unavailable"
    assert answers["ready"].json()["checks"]["inbox"] == "unavailable"
    # The alert on readiness reads the same checks from /metrics.
    assert 'receiver_ready{check="inbox"} 0.0' in answers["metrics"].text
    assert 'receiver_ready{check="inbox"} 1.0' in requests.get(server.url + "/metrics", timeout=10).text
    # Once the lock is gone the same callback is accepted.
    assert post_mps(server.url, body).json()["status"] in ("accepted", "duplicate")


# --- health, readiness, metrics ---------------------------------------------------------


def test_healthz_and_readyz(receiver):
    assert requests.get(receiver.url + "/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(receiver.url + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["status"] in ("ok", "degraded")
    assert set(ready.json()["checks"]) == {"inbox", "sink", "tencentcloud"}
    assert ready.json()["checks"]["inbox"] == "ok"


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{"):
            head, value = line.rsplit(" ", 1)
            got = ",".join(sorted(head[len(name) + 1:-1].split(",")))
            if got == wanted:
                return float(value)
    return 0.0


def test_metrics_sum_over_every_gunicorn_worker(start_receiver):
    server = start_receiver(workers=3, threads=2)
    for _ in range(30):
        assert post_vod(server.url, payloads.vod_new_file_upload(uuid.uuid4().hex)).status_code == 200
    assert post_vod(server.url, payloads.vod_new_file_upload(), key="wrong").status_code == 401
    # Whichever worker answers the scrape, it reports the sum over all of them.
    for _ in range(6):
        scrape = requests.get(server.url + "/metrics", timeout=10)
        assert scrape.status_code == 200 and scrape.headers["Content-Type"].startswith("text/plain")
        assert _metric(scrape.text, "receiver_callbacks_total", source="vod", outcome="accepted") == 30
        assert _metric(scrape.text, "receiver_callbacks_total", source="vod", outcome="unauthorized") == 1
        assert _metric(scrape.text, "receiver_inbox_records", state="pending") == 30


# --- secrets --------------------------------------------------------------------------


def test_unsigned_products_refused_unless_allowed(start_receiver):
    refusing = start_receiver(MPS_NOTIFY_KEYS="", CALLBACK_TOKENS="")
    unsigned = json.dumps(unique_workflow()).encode()
    assert_error(post_raw(refusing.url, "mps", unsigned, token=None), 401, "Unauthorized")
    assert "MPS_NOTIFY_KEYS is not set" in refusing.log()

    allowing = start_receiver(MPS_NOTIFY_KEYS="", CALLBACK_TOKENS="", MPS_ALLOW_UNSIGNED="true")
    assert post_raw(allowing.url, "mps", unsigned, token=None).json()["status"] == "accepted"
    assert "UNSIGNED" in allowing.log()


def test_no_secret_in_logs_or_answers(start_receiver):
    server = start_receiver()
    answers = {
        "accepted mps": post_mps(server.url, unique_workflow()),
        "mps signed with a guessed key": post_mps(server.url, unique_workflow(), key="mps-key-guess"),
        "mps with a guessed token": post_mps(server.url, unique_workflow(), token="token-guess"),
        "accepted vod": post_vod(server.url, payloads.vod_new_file_upload()),
        "accepted ams": post_ams(server.url, payloads.ams_from_seed()),
        "readyz": requests.get(server.url + "/readyz", timeout=10),
        "metrics": requests.get(server.url + "/metrics", timeout=10),
    }
    assert {what: a.status_code for what, a in answers.items()} == {
        "accepted mps": 200, "mps signed with a guessed key": 401, "mps with a guessed token": 401,
        "accepted vod": 200, "accepted ams": 200, "readyz": 200, "metrics": 200,
    }
    server.stop()
    log = server.log()
    assert "POST /callbacks/mps" in log  # the access log is there, without its query string
    secrets = (*MPS_KEYS, VOD_KEY, AMS_SEED, *TOKENS, "token-guess")
    for secret in secrets:
        assert secret not in log
    # Nor in what the receiver answered: each body, each header's name and value.
    for what, answer in answers.items():
        seen = [answer.text, *(f"{name}: {value}" for name, value in answer.headers.items())]
        leaked = [secret for secret in secrets if any(secret in part for part in seen)]
        assert leaked == [], (what, seen)
