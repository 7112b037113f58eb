"""Issue 9, the door: each finding that concerns the HTTP intake, reproduced as the attack it is.

Every request goes over a real socket to the receiver under gunicorn; bodies
are written as raw bytes so the escapes, encodings and framings an attacker
would send are exactly what the receiver reads. SPEC 3 says what each must be
answered: strict JSON or 400 `InvalidPayload`, never a 5xx or a traceback,
never the URL token echoed, errors at most a few KiB, and health endpoints
that hold nothing per request.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests import payloads
from tests.conftest import AMS_SEED, MPS_KEYS, TOKENS, WORKER_CLASSES
from tests.hostile_helpers import (
    MAX_ERROR_BYTES,
    ams_headers,
    assert_error_answer,
    assert_spec_answer,
    callback_target,
    fresh_get,
    http_request,
    leaked_internals,
    nested,
    open_files,
    post_bytes,
    raw_exchange,
    splice_mps_signature,
    splice_vod_signature,
)
from tests.servers import children_of, query_inbox, wait_until

SURROGATE = "\\ud800"  # the six characters of the JSON escape, as they travel on the wire


def workflow(**kwargs: Any) -> dict[str, Any]:
    return payloads.mps_workflow(task_id=f"hostile-{uuid.uuid4().hex}", **kwargs)


def raw_with(body: dict[str, Any], placeholder_values: dict[str, str]) -> bytes:
    """`body` as JSON text, each ``"<placeholder>"`` string replaced by the raw JSON text given for it."""
    text = json.dumps(body)
    for placeholder, raw_json in placeholder_values.items():
        quoted = json.dumps(placeholder)
        assert quoted in text, placeholder
        text = text.replace(quoted, raw_json)
    return text.encode()


def inbox_rows(server, **where) -> list:
    return query_inbox(server.env["INBOX_URL"][len("sqlite:///"):], **where)


# --- finding 1: a lone surrogate is stored, and then every claim() fails ------------------------


@pytest.mark.parametrize("where", ["SessionId", "SessionContext", "TaskId", "Status"])
def test_finding1_signed_mps_callback_with_a_lone_surrogate_is_invalid_payload(receiver, where):
    """Issue 9, finding 1: `"SessionId": "\\ud800"` (or another field the inbox extracts) under a valid
    signature is accepted today and stored as invalid UTF-8; SPEC 3 makes it a 400 InvalidPayload."""
    body = workflow()
    task_id = body["WorkflowTaskEvent"]["TaskId"]
    if where in ("SessionId", "SessionContext"):
        body[where] = "<surrogate>"
    else:
        body["WorkflowTaskEvent"][where] = "<surrogate>"
    raw = splice_mps_signature(raw_with(body, {"<surrogate>": f'"{SURROGATE}"'}))
    assert SURROGATE.encode() in raw
    assert_error_answer(post_bytes(receiver.port, "mps", raw), 400, "InvalidPayload")
    if where != "TaskId":
        assert inbox_rows(receiver, task_id=task_id) == []


# --- finding 2: health checks exhaust file descriptors -------------------------------------------


@WORKER_CLASSES
def test_finding2_ten_thousand_health_checks_hold_no_file_descriptor(start_receiver, worker_class):
    """Issue 9, finding 2: every fresh-connection /readyz or /metrics left an SQLite connection and a
    lock file open in the gevent worker that answered it. SPEC 3: 10,000 of them leave each worker
    process's open-file count unchanged."""
    server = start_receiver(workers=2, threads=4, GUNICORN_WORKER_CLASS=worker_class)
    port = server.port

    def two_workers() -> list[int] | None:
        pids = sorted(children_of(server.process.pid))
        return pids if len(pids) == 2 else None

    workers = wait_until(two_workers, 20, "two gunicorn workers")
    paths = ["/readyz", "/metrics"]

    def hit(i: int) -> int | None:
        return fresh_get(port, paths[i % 2])

    def counts() -> dict[int, int]:
        return {pid: open_files(pid) for pid in workers}

    previous: dict[int, int] = {}

    def stable() -> dict[int, int] | None:
        """The counts once two looks half a second apart agree (sockets just answered still closing)."""
        nonlocal previous
        now = counts()
        same, previous = now == previous, now
        return now if same else None

    # Warm up until a round changes nothing: whatever a process keeps for good (a connection per thread of
    # gthread's pool, say) is open before the baseline, however gunicorn spread the first connections.
    # Under a leak no round is ever neutral: after the last one, the measured growth says it.
    baseline: dict[int, int] = {}
    for _ in range(8):
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(hit, range(500)))
        assert set(answers) == {200}, f"warm-up answers: { {a: answers.count(a) for a in set(answers)} }"
        settled = wait_until(stable, 20, "open-file counts to settle after a warm-up round", interval=0.5)
        if settled == baseline:
            break
        baseline = settled

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(hit, range(10_000)))
    elapsed = time.monotonic() - started
    assert statuses.count(200) == 10_000, {s: statuses.count(s) for s in set(statuses)}
    assert sorted(children_of(server.process.pid)) == workers, "a gunicorn worker died or was replaced"

    last: dict[int, int] = {}

    def back_to_baseline() -> bool:
        last.update(counts())
        return all(last[pid] <= baseline[pid] for pid in workers)

    try:
        wait_until(back_to_baseline, 20, "open-file counts back to their baseline", interval=0.5)
    except AssertionError:
        growth = {pid: last[pid] - baseline[pid] for pid in workers}
        raise AssertionError(
            f"{worker_class}: after 10,000 /readyz + /metrics ({elapsed:.1f}s) the workers' open files went "
            f"from {baseline} to {last} (growth {growth})") from None


# --- finding 6: the URL token echoed by a redirect ---------------------------------------------------


@pytest.mark.parametrize("path", ["/callbacks//mps", "/callbacks///mps", "/callbacks//vod", "/callbacks//ams"])
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_finding6_odd_callback_paths_do_not_redirect_with_the_token(receiver, path, method):
    """Issue 9, finding 6: `POST /callbacks//mps?token=...` got a Flask 308 whose Location and HTML body
    echo the URL token. SPEC 3: no answer or redirect echoes it; the answer is a JSON 4xx."""
    token = TOKENS[0]
    answer = raw_exchange(receiver.port, http_request(method, f"{path}?token={token}", b"{}"))
    assert answer.status is not None and 400 <= answer.status < 500, (answer.status, answer.headers)
    assert "location" not in answer.headers, answer.headers["location"]
    assert token.encode() not in answer.raw
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    assert "error" in json.loads(answer.body)
    assert not leaked_internals(answer.text())


# --- finding 7: 500s with tracebacks, oversized errors, forged access-log lines ----------------------


def _signed_workflow_with(raw_members: dict[str, str]) -> bytes:
    """A valid signed MPS WorkflowTask body with extra top-level members given as raw JSON text."""
    body = workflow()
    for name in raw_members:
        body[name] = f"<{name}>"
    return splice_mps_signature(raw_with(body, {f"<{k}>": v for k, v in raw_members.items()}))


def _signed_ams_with(raw_members: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    body = payloads.ams_from_seed()
    body["TaskId"] = f"hostile-{uuid.uuid4().hex}"
    for name in raw_members:
        body[name] = f"<{name}>"
    raw = raw_with(body, {f"<{k}>": v for k, v in raw_members.items()})
    return raw, ams_headers(raw)


# (source, body, headers) builders: a body is built at test time, so its signature has not expired.
DEEP_CASES = {
    "list-5000-unsigned": lambda: ("mps", nested(5000, "list").encode(), {}),
    "object-5000-unsigned": lambda: ("mps", nested(5000, "object").encode(), {}),
    "list-1200-in-signed-mps": lambda: ("mps", _signed_workflow_with({"Extra": nested(1200, "list")}), {}),
    "object-1200-in-signed-mps": lambda: ("mps", _signed_workflow_with({"Extra": nested(1200, "object")}), {}),
    "list-5000-in-signed-ams": lambda: ("ams", *_signed_ams_with({"Extra": nested(5000, "list")})),
    "list-65-unsigned": lambda: ("mps", nested(65, "list").encode(), {}),
    "object-65-unsigned": lambda: ("mps", nested(65, "object").encode(), {}),
    # the body object itself is the first level: 1 + 64 = 65
    "list-65-in-signed-mps": lambda: ("mps", _signed_workflow_with({"Extra": nested(64, "list")}), {}),
    "object-65-in-signed-mps": lambda: ("mps", _signed_workflow_with({"Extra": nested(64, "object")}), {}),
    "list-65-in-signed-ams": lambda: ("ams", *_signed_ams_with({"Extra": nested(64, "list")})),
}


@pytest.mark.parametrize("case", DEEP_CASES)
def test_finding7_nesting_deeper_than_64_levels_is_invalid_payload(receiver, case):
    """Issue 9, finding 7: nesting past ~1,000 levels raised RecursionError (500); SPEC 3 makes anything
    deeper than 64 levels a 400 InvalidPayload, signed or not (JSON is checked before the signature)."""
    source, raw, headers = DEEP_CASES[case]()
    assert_error_answer(post_bytes(receiver.port, source, raw, headers=headers), 400, "InvalidPayload")


def test_finding7_moderate_nesting_is_still_accepted(receiver):
    """Issue 9, finding 7 (control): the depth limit must not refuse ordinary bodies: 32 levels in a
    signed callback are accepted, so the deep cases above fail for their depth and nothing else."""
    assert_spec_answer(post_bytes(receiver.port, "mps", _signed_workflow_with({"Extra": nested(31, "object")})),
                       frozenset({200}))


@pytest.mark.parametrize("timestamp", ["²", "①②③", "1²"])
@pytest.mark.parametrize("source", ["mps", "vod"])
def test_finding7_a_timestamp_that_isdigit_but_is_no_int_is_unauthorized(receiver, source, timestamp):
    """Issue 9, finding 7: `Timestamp: "²"` passes `str.isdigit()` and fails `int()`: a 500 with a
    traceback today. It is no UNIX timestamp: 401 Unauthorized."""
    if source == "mps":
        body = {**workflow(), "Timestamp": timestamp, "Sign": "0" * 32}
    else:
        body = {**payloads.vod_new_file_upload(uuid.uuid4().hex), "T": timestamp, "Sign": "0" * 32}
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert_error_answer(post_bytes(receiver.port, source, raw), 401, "Unauthorized")


@pytest.mark.parametrize("source", ["mps", "vod"])
def test_finding7_a_lone_surrogate_in_sign_is_invalid_payload(receiver, source):
    """Issue 9, finding 7: a lone surrogate in `Sign` made the constant-time compare raise
    UnicodeEncodeError (500). It is not strict JSON: 400 InvalidPayload, before the signature check."""
    if source == "mps":
        body, spliced = workflow(), splice_mps_signature
    else:
        body, spliced = payloads.vod_new_file_upload(uuid.uuid4().hex), splice_vod_signature
    # a valid expiry, so the surrogate is all that is wrong with the request
    signed = spliced(json.dumps(body).encode())
    raw = signed[: signed.rindex(b'"Sign": "') + len(b'"Sign": "')] + SURROGATE.encode() + b'"}'
    assert_error_answer(post_bytes(receiver.port, source, raw), 400, "InvalidPayload")


ENCODINGS = {
    "utf-16": lambda text: text.encode("utf-16"),
    "utf-16-le": lambda text: text.encode("utf-16-le"),
    "utf-16-be": lambda text: text.encode("utf-16-be"),
    "utf-32": lambda text: text.encode("utf-32"),
    "utf-8-bom": lambda text: b"\xef\xbb\xbf" + text.encode(),
}


@pytest.mark.parametrize("signed", ["unsigned", "signed-mps", "signed-ams"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_finding7_a_body_not_in_utf8_is_invalid_payload(receiver, encoding, signed):
    """Issue 9, finding 7: UTF-16/32 bodies were decoded by `json.loads` and then failed `decode("utf-8")`
    when stored (500); a BOM was accepted. SPEC 3: not UTF-8 is a 400 InvalidPayload."""
    encode = ENCODINGS[encoding]
    if signed == "signed-ams":
        body = {**payloads.ams_from_seed(), "TaskId": f"hostile-{uuid.uuid4().hex}"}
        raw = encode(json.dumps(body))
        answer = post_bytes(receiver.port, "ams", raw, headers=ams_headers(raw))
    else:
        text = json.dumps(workflow())
        if signed == "signed-mps":
            text = splice_mps_signature(text.encode()).decode()
        answer = post_bytes(receiver.port, "mps", encode(text))
    assert_error_answer(answer, 400, "InvalidPayload")


@pytest.mark.parametrize("where", ["top-level", "nested", "ams", "unsigned"])
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_finding7_nan_and_infinity_are_invalid_payload(receiver, constant, where):
    """Issue 9, finding 7: `NaN` / `Infinity` (and `1e999`, which overflows to inf) were accepted and
    reached the sink as non-standard JSON. SPEC 3: not strict JSON, 400 InvalidPayload."""
    if where == "top-level":
        answer = post_bytes(receiver.port, "mps", _signed_workflow_with({"Extra": constant}))
    elif where == "nested":
        body = workflow()
        body["WorkflowTaskEvent"]["MetaData"] = {"Duration": "<c>"}
        answer = post_bytes(receiver.port, "mps", splice_mps_signature(raw_with(body, {"<c>": constant})))
    elif where == "ams":
        raw, headers = _signed_ams_with({"Extra": constant})
        answer = post_bytes(receiver.port, "ams", raw, headers=headers)
    else:
        answer = post_bytes(receiver.port, "mps", raw_with({**workflow(), "Extra": "<c>"}, {"<c>": constant}))
    assert_error_answer(answer, 400, "InvalidPayload")


def _chunked_head() -> bytes:
    return http_request("POST", callback_target("mps"), chunked=True)


def _signed_body() -> bytes:
    return splice_mps_signature(json.dumps(workflow()).encode())


# (request bytes, whether we close our side after sending)
CHUNKED_CASES = {
    "invalid-size-zz": lambda b: (_chunked_head() + b"zz\r\n" + b + b"\r\n0\r\n\r\n", False),
    "chunk-without-crlf": lambda b: (_chunked_head() + f"{len(b):x}\r\n".encode() + b + b"0\r\n\r\n", False),
    "truncated-then-close": lambda b: (_chunked_head() + f"{len(b) + 100:x}\r\n".encode() + b, True),
    "extension-with-bare-cr": lambda b: (_chunked_head() + f"{len(b):x};a=b\rc\r\n".encode() + b
                                         + b"\r\n0\r\n\r\n", False),
    "negative-size": lambda b: (_chunked_head() + b"-5\r\n" + b + b"\r\n0\r\n\r\n", False),
    "huge-size-then-close": lambda b: (_chunked_head() + b"ffffffffffffffffffff\r\n" + b, True),
    "bad-trailer": lambda b: (_chunked_head() + f"{len(b):x}\r\n".encode() + b + b"\r\n0\r\nX\r\n\r\n", False),
    "no-last-chunk-then-close": lambda b: (_chunked_head() + f"{len(b):x}\r\n".encode() + b + b"\r\n", True),
    "size-with-leading-space": lambda b: (_chunked_head() + f" {len(b):x}\r\n".encode() + b
                                          + b"\r\n0\r\n\r\n", False),
}


@pytest.mark.parametrize("case", CHUNKED_CASES)
def test_finding7_malformed_chunked_framing_is_never_a_5xx(receiver, case):
    """Issue 9, finding 7: malformed chunked framing made werkzeug raise inside the view: 500. SPEC 3: no
    request, however malformed, is answered 5xx or with a traceback; a 4xx or a closed connection."""
    request, half_close = CHUNKED_CASES[case](_signed_body())
    answer = raw_exchange(receiver.port, request, half_close=half_close, timeout=15)
    if answer.status is None:
        return  # the server closed the connection without answering: allowed
    assert 400 <= answer.status < 500, f"{answer.status}: {answer.text()[:300]!r}"
    assert not leaked_internals(answer.text()), answer.text()[:300]
    assert TOKENS[0].encode() not in answer.raw


def test_finding7_thousands_of_bad_labels_get_a_compact_answer_naming_labels(receiver):
    """Issue 9, finding 7: a 64 KiB AMS body with 4,100 bad `Labels` entries got a 400 of ~170 KB (every
    entry listed). SPEC 3: an error answer is at most a few KiB whatever the body, and still names the field."""
    body = {**payloads.ams_from_seed(), "TaskId": f"hostile-{uuid.uuid4().hex}", "Labels": [{"Score": "x"}] * 4100}
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert len(raw) >= 64 * 1024
    answer = post_bytes(receiver.port, "ams", raw, headers=ams_headers(raw, AMS_SEED))
    assert answer.status == 400, answer.text()[:300]
    assert len(answer.body) <= MAX_ERROR_BYTES, f"a {len(answer.body)}-byte answer to a {len(raw)}-byte body"
    error = assert_error_answer(answer, 400, "InvalidPayload")
    assert "Labels" in error.get("fields", {}) or "Labels" in error["message"], error


@pytest.mark.parametrize("newline", ["%0A", "%0D%0A"])
def test_finding7_the_access_log_cannot_be_forged_through_the_path(receiver, newline):
    """Issue 9, finding 7: `%0A` in the path is decoded into the access log: the request writes a second,
    forged line of its own choosing. The path must stay inside its one line of the log."""
    marker = uuid.uuid4().hex
    forged = f"/forged-{marker}"
    path = f"/callbacks/mps{newline}127.0.0.1%20%22GET%20{forged}%20HTTP/1.1%22%20200"
    with requests.Session() as session:  # one connection: the same gunicorn worker logs both, in order
        answer = session.post(f"{receiver.url}{path}", data=b"{}", params={"token": TOKENS[0]}, timeout=10)
        assert answer.status_code < 500, answer.text
        session.post(f"{receiver.url}/callbacks/after-{marker}", data=b"{}", timeout=10)
    wait_until(lambda: f"after-{marker}" in receiver.log(), 10, "the access log line after the injection")
    lines = receiver.log().splitlines()
    starts = [line for line in lines if line.lstrip().startswith(('"GET /forged', '\\"GET /forged'))
              or line.startswith(("127.0.0.1 \"GET " + forged, "127.0.0.1 \\\"GET " + forged))]
    assert not starts, f"forged access-log line(s): {starts}"
    stray = [line for line in lines if marker in line and "after-" not in line and "/callbacks/mps" not in line]
    assert not stray, f"the injected path broke out of its log line: {stray}"


# --- without the token, nothing of the above is even parsed ------------------------------------------


def test_finding7_an_unauthenticated_hostile_body_is_refused_before_it_is_parsed(receiver):
    """Issue 9, findings 6 and 7: without the URL token a hostile body costs nothing: 401 before any parsing
    (SPEC 3's order: size, token, JSON), and after every attack of this module the receiver's log still
    holds neither the URL token nor a signing key."""
    answer = post_bytes(receiver.port, "mps", nested(5000, "list").encode(), token=None)
    assert_error_answer(answer, 401, "Unauthorized")
    assert TOKENS[0] not in receiver.log() and MPS_KEYS[0] not in receiver.log()
