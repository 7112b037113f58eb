"""Issue 9, property-based: generated hostile callbacks over a real socket, then through a real worker.

Bodies are generated, not hand-picked: arbitrary JSON values and raw bytes,
and valid MPS / VOD / AMS callbacks (tests/payloads.py) with one field at any
depth replaced by a hostile value (lone surrogates, huge numbers, NaN and
infinities, deep nesting, wrong types, very long strings, empty containers,
null). They are serialized so that what is hostile reaches the wire
(`allow_nan=True`, `ensure_ascii` both ways, raw text for what `json.dumps`
cannot write), and sent signed with the product's own signer (MPS and VOD
sign whatever the body is, AMS signs the exact bytes), unsigned, or without
the URL token.

The oracle is SPEC 3 alone: every answer is one of 200 / 400 / 401 / 413 in
the SPEC's JSON shapes, errors at most 4 KiB, no traceback, no token echoed;
a body that is not strict JSON but carries the right token is 400
`InvalidPayload`; without the token, 401. Through a worker (SPEC 6): every
accepted hostile record is settled on its own, and a genuine callback sent
after them still yields its event.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from receiver import auth
from tests import payloads, realworld
from tests.conftest import AMS_SEED, MPS_KEYS, TOKENS, VOD_KEY
from tests.hostile_helpers import RawAnswer, ams_headers, post_bytes, spec_answer_problems
from tests.pipeline_fixtures import Pipeline
from tests.servers import wait_until

MAX_BODY_BYTES = 1024 * 1024  # the default the receiver runs with here
MAX_DEPTH = 64


# --- hostile values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text `json.dumps` cannot write (deep nesting, 1e999, a 5,000-digit integer): spliced in verbatim."""

    text: str

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''} len={len(self.text)})"


def deep(depth: int, kind: str) -> Raw:
    if kind == "list":
        return Raw("[" * depth + "0" + "]" * depth)
    return Raw('{"a": ' * depth + "0" + "}" * depth)


LONE_SURROGATES = ["\ud800", "\udfff", "x\ud83d", "\udc00tail", "\ud800\ud800"]
HOSTILE_LEAVES: list[Any] = [
    *LONE_SURROGATES,
    10**30, -(10**30), 2**63, 2**64, -(2**63) - 1, 10**4000, Raw("9" * 5000),
    1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan, Raw("1e999"), Raw("-1e999"), Raw("1e-999"),
    deep(65, "list"), deep(65, "object"), deep(1000, "list"), deep(5000, "object"), deep(40, "list"),
    None, True, False, 0, -1, "", [], {}, [None], {"": None}, "x", [1, "a", None], {"TaskId": None},
    "x" * 100_000, "é" * 50_000, "\u2028\u2029" * 500, "\x00", "\ufeff", "💥" * 1000,
    "x" * (MAX_BODY_BYTES + 10),
]

HOSTILE_STRINGS = [*LONE_SURROGATES, "", "\x00", "\ufeff", "\u2028", "💥", "x" * 51, "x" * 1001, "x" * 100_000,
                   "é" * 30, "a\ud800b"]

surrogate_text = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
any_text = st.one_of(st.text(max_size=20), surrogate_text,
                     st.text(st.characters(codec="utf-8"), max_size=20).map(lambda s: s + "\ud800"))
json_leaves = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
    st.sampled_from(HOSTILE_LEAVES),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(any_text, children, max_size=4)),
    max_leaves=12,
)
hostile_values = st.one_of(st.sampled_from(HOSTILE_LEAVES), json_values)


# --- serializing what is hostile onto the wire ----------------------------------------------------------


def serialize(value: Any, ensure_ascii: bool) -> bytes:
    """`value` as JSON bytes with NaN, infinities and lone surrogates kept, `Raw` parts spliced in."""
    raws: list[str] = []

    def swap(node: Any) -> Any:
        if isinstance(node, Raw):
            raws.append(node.text)
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    text = json.dumps(swap(value), allow_nan=True, ensure_ascii=ensure_ascii)
    for index, raw in enumerate(raws):
        text = text.replace(f'"@@raw{index}@@"', raw, 1)
    # ensure_ascii=False leaves lone surrogates as code points: they travel as CESU-8 bytes (not UTF-8).
    return text.encode("ascii") if ensure_ascii else text.encode("utf-8", "surrogatepass")


def _max_depth(text: str) -> int:
    """The deepest nesting of JSON text, strings skipped."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def strictness(raw: bytes) -> bool | None:
    """True: strict JSON as SPEC 3 means it; False: certainly not; None: the test cannot tell (a huge int)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if _max_depth(text) > MAX_DEPTH:
        return False

    def refuse(constant: str) -> Any:
        raise _NonStandard(constant)

    try:
        value = json.loads(text, parse_constant=refuse)
    except _NonStandard:
        return False
    except ValueError as error:
        # Python refuses integers of more than 4,300 digits; the JSON grammar does not.
        return None if "digits" in str(error) else False
    if _has_lone_surrogate(value) or _has_non_finite(value):
        return False
    return True


class _NonStandard(Exception):
    pass


# --- valid callbacks to break -----------------------------------------------------------------------------


def _mps(n: str) -> tuple[str, dict[str, Any]]:
    return "mps", payloads.mps_workflow(task_id=f"prop-{n}", session_id=f"s-{n}"[:50])


def _mps_batch(n: str) -> tuple[str, dict[str, Any]]:
    body = payloads.mps_batch_from_seed(with_task_id=True)
    body["TaskId"], body["SessionId"] = f"prop-batch-{n}", f"sb-{n}"[:50]
    return "mps", body


def _vod(index: int) -> Callable[[str], tuple[str, dict[str, Any]]]:
    def build(n: str) -> tuple[str, dict[str, Any]]:
        body = payloads.vod_from_seed(index)
        body[payloads.VOD_SEED_EVENTS[index][2]]["TaskId"] = f"prop-vod-{n}"
        return "vod", body
    return build


def _vod_upload(n: str) -> tuple[str, dict[str, Any]]:
    return "vod", payloads.vod_new_file_upload(f"file-{n}")


def _vod_deleted(n: str) -> tuple[str, dict[str, Any]]:
    return "vod", payloads.vod_file_deleted((f"file-{n}", f"file-{n}-2"))


def _ams(n: str) -> tuple[str, dict[str, Any]]:
    body = payloads.ams_from_seed()
    body["TaskId"] = f"prop-ams-{n}"
    return "ams", body


def _realworld(name: str) -> Callable[[str], tuple[str, dict[str, Any]]]:
    """A real callback Tencent Cloud publishes (live-stream notifications, VOD aliases, ...), its id made unique."""
    def build(n: str) -> tuple[str, dict[str, Any]]:
        payload = realworld.load(name)
        text = json.dumps(payload.body)
        for task_id in set(re.findall(r'"(?:TaskId|FileId)": "([^"]+)"', text)):
            text = text.replace(task_id, f"{task_id}-prop-{n}")
        return payload.product, json.loads(text)
    return build


def _vod_legacy(n: str) -> tuple[str, dict[str, Any]]:
    return "vod", {"version": "4.0", "eventType": "NewFileUpload", "data": {"fileId": f"legacy-{n}", "status": 0}}


BASES = [_mps, _mps_batch, *(_vod(i) for i in range(len(payloads.VOD_SEED_EVENTS))), _vod_upload, _vod_deleted,
         _ams, *(_realworld(payload.name) for payload in realworld.all_payloads("callback")), _vod_legacy]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in `value` that holds a value: dict keys and list indices, at any depth."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((*prefix, key))
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((*prefix, index))
            found += _paths(item, (*prefix, index))
    return found


def _replace(body: dict[str, Any], path: tuple, value: Any) -> None:
    node: Any = body
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


READ_FIELDS = {"TaskId", "SessionId", "SessionContext", "Status", "EventType", "FileId", "FileIdSet",
               "ErrCode", "Message", "Timestamp", "T", "Sign", "DataId", "BizType"}


class Callback:
    """One generated request: where it goes and exactly what is sent (a short repr for Hypothesis' reports)."""

    __slots__ = ("source", "raw", "headers", "token", "how")

    def __init__(self, source: str, raw: bytes, headers: dict[str, str], token: str | None, how: str):
        self.source, self.raw, self.headers, self.token, self.how = source, raw, headers, token, how

    def __repr__(self) -> str:
        return f"Callback({self.source}, {self.how}, token={self.token!r}, raw={self.raw[:120]!r} len={len(self.raw)})"


def _sign(source: str, body: Any, signing: str) -> dict[str, Any] | Any:
    if signing != "signed" or not isinstance(body, dict):
        return body
    if source == "mps":
        return auth.sign_mps_notification(body, MPS_KEYS[0])
    if source == "vod":
        return auth.sign_vod_event(body, VOD_KEY)
    return body


def _finish(source: str, body: Any, signing: str, ensure_ascii: bool, how: str) -> Callback:
    raw = serialize(body, ensure_ascii)
    headers = ams_headers(raw, AMS_SEED) if source == "ams" and signing == "signed" else {}
    token = None if signing == "no-token" else TOKENS[0]
    return Callback(source, raw, headers, token, how)


signings = st.sampled_from(["signed", "signed", "unsigned", "no-token"])


# Ids unique to each generated callback (outside Hypothesis' choices: they shape nothing it shrinks), so
# that a generated batch is not one callback answered "duplicate" thirty times.
_RUN = uuid.uuid4().hex[:8]
_SERIAL = itertools.count()


@st.composite
def mutated_callbacks(draw, signings=signings, ascii_only: bool = False, fields: frozenset[str] | None = None,
                      values: st.SearchStrategy | None = None) -> Callback:
    """A valid callback of some product with one value, at any depth, replaced by a hostile one.

    `fields` / `values`: only places whose key is one of `fields`, and only values of `values`.

    MPS and VOD bodies are signed before the mutation: their signature covers only the expiry, so it
    still holds unless the mutation hit Timestamp / T / Sign themselves (also worth sending). AMS signs
    the exact bytes sent.
    """
    suffix = f"{_RUN}-{next(_SERIAL)}"
    source, body = draw(st.sampled_from(BASES))(suffix)
    signing = draw(signings)
    body = _sign(source, body, signing)
    paths = _paths(body)
    read = [p for p in paths if p[-1] in READ_FIELDS]
    if fields is not None:
        path = draw(st.sampled_from([p for p in paths if p[-1] in fields] or paths))
        value = draw(hostile_values if values is None else values)
    elif read and draw(st.booleans()):
        # Half the time one of the fields the receiver reads (ids, session, status, signature), where a
        # hostile value travels furthest: into the inbox's columns and the worker's Describe calls. They are
        # strings: a hostile string gets past the schema, a wrong type mostly does not.
        path = draw(st.sampled_from(read))
        value = draw(st.one_of(st.sampled_from(HOSTILE_STRINGS), hostile_values))
    else:
        path = draw(st.sampled_from(paths))
        value = draw(hostile_values)
    value = copy.deepcopy(value)  # HOSTILE_LEAVES' containers are shared between examples
    _replace(body, path, value)
    how = f"{'.'.join(map(str, path))} := {value!r}"[:200]
    return _finish(source, body, signing, ascii_only or draw(st.booleans()), how)


@st.composite
def arbitrary_callbacks(draw) -> Callback:
    """Any JSON value at all, or raw bytes, to any callback route."""
    source = draw(st.sampled_from(["mps", "vod", "ams"]))
    signing = draw(signings)
    if draw(st.integers(0, 4)) == 0:
        raw = draw(st.binary(max_size=512))
        headers = ams_headers(raw, AMS_SEED) if source == "ams" and signing == "signed" else {}
        return Callback(source, raw, headers, None if signing == "no-token" else TOKENS[0], "binary")
    value = draw(st.one_of(json_values, st.dictionaries(any_text, json_values, max_size=6)))
    return _finish(source, _sign(source, value, signing), signing, draw(st.booleans()), "arbitrary JSON")


def answer_problems(callback: Callback, answer: RawAnswer) -> list[str]:
    """What SPEC 3 forbids in the answer to one generated request."""
    if answer.cut_off and answer.status is None and len(callback.raw) > MAX_BODY_BYTES:
        return []  # refused (413) before it was all sent: the reset can take the answer with it
    problems = spec_answer_problems(answer)
    if answer.status is not None:
        too_large = len(callback.raw) > MAX_BODY_BYTES
        if too_large and answer.status != 413:
            problems.append(f"a {len(callback.raw)}-byte body answered {answer.status}, not 413")
        elif not too_large and callback.token is None and answer.status != 401:
            problems.append(f"no URL token, answered {answer.status}, not 401")
        elif not too_large and callback.token is not None and strictness(callback.raw) is False \
                and answer.status != 400:
            problems.append(f"a body that is not strict JSON answered {answer.status}, not 400 InvalidPayload")
    return problems


def check_answer(callback: Callback, answer: RawAnswer) -> None:
    problems = answer_problems(callback, answer)
    assert not problems, (f"{'; '.join(problems)}\n  sent: {callback!r}\n  what: {callback.how}\n"
                          f"  answer: {answer.status} {answer.text()[:300]!r}")


_DOOR = dict(
    database=None, derandomize=True, deadline=None, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                           HealthCheck.function_scoped_fixture],
)


@settings(max_examples=1000, **_DOOR)
@given(callback=mutated_callbacks())
def test_property_issue9_mutated_valid_callbacks_get_only_spec_answers(receiver, callback):
    """Issue 9, findings 1 and 7 (property): a valid MPS / VOD / AMS callback with one field at any depth
    replaced by a hostile value, signed, unsigned or without token, over a real socket, is answered only
    as SPEC 3 allows: 200/400/401/413 in JSON, errors ≤ 4 KiB, no traceback, not-strict JSON is a 400."""
    check_answer(callback, post_bytes(receiver.port, callback.source, callback.raw, callback.token,
                                      callback.headers))


@settings(max_examples=500, **_DOOR)
@given(callback=arbitrary_callbacks())
def test_property_issue9_arbitrary_bodies_get_only_spec_answers(receiver, callback):
    """Issue 9, finding 7 (property): arbitrary JSON values and raw bytes, to every callback route, are
    answered only as SPEC 3 allows."""
    check_answer(callback, post_bytes(receiver.port, callback.source, callback.raw, callback.token,
                                      callback.headers))


# --- through a real worker ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    yield from Pipeline(tmp_path_factory.mktemp("hostile-pipeline")).running_with_worker()


SETTLED_STATES = ("done", "rejected", "dead")


def inbox_rows(pipe: Pipeline, ids: set[str]) -> list[sqlite3.Row]:
    """The inbox rows of `ids`, read even where a column holds bytes that are not UTF-8 (finding 1)."""
    conn = sqlite3.connect(str(pipe.tmp_path / "inbox.db"), timeout=10)
    conn.row_factory = sqlite3.Row
    conn.text_factory = lambda data: data.decode("utf-8", errors="replace")
    try:
        rows = conn.execute("SELECT id, state, task_id, attempts, next_attempt_at, lease_expires_at, last_error "
                            "FROM inbox").fetchall()
    finally:
        conn.close()
    return [r for r in rows if r["id"] in ids]


def unsettled(rows: list, now: float) -> list[dict[str, Any]]:
    """Rows due now that nobody holds: what a stalled worker leaves behind."""
    stuck = []
    for row in rows:
        if row["state"] in SETTLED_STATES:
            continue
        if row["state"] == "pending" and row["next_attempt_at"] > now:
            continue  # backing off: it will be tried again
        if row["state"] == "leased" and (row["lease_expires_at"] or 0) > now:
            continue  # a worker is on it right now
        stuck.append({k: row[k] for k in ("id", "state", "task_id", "attempts", "last_error")})
    return stuck


def strict_sink_lines(pipe: Pipeline) -> list[str]:
    """Sink lines that are not strict JSON (NaN, Infinity, invalid UTF-8)."""
    if not pipe.sink_path.exists():
        return []
    bad = []
    for line in pipe.sink_path.read_bytes().splitlines():
        if line and strictness(line) is not True:
            bad.append(line[:200].decode("utf-8", errors="replace"))
    return bad


# The columns the inbox extracts from a callback (SQLite json_extract): finding 1's lone surrogate there
# made every later claim() fail.
EXTRACTED_FIELDS = frozenset({"TaskId", "SessionId", "SessionContext", "Status", "FileId"})


@st.composite
def hostile_batches(draw) -> list[Callback]:
    """30 signed hostile callbacks in a generated order; 5 of them carry a lone surrogate in an extracted field."""
    general = draw(st.lists(mutated_callbacks(signings=st.just("signed"), ascii_only=True), min_size=25,
                            max_size=25))
    poison = draw(st.lists(mutated_callbacks(signings=st.just("signed"), ascii_only=True, fields=EXTRACTED_FIELDS,
                                             values=st.sampled_from(LONE_SURROGATES)), min_size=5, max_size=5))
    return draw(st.permutations(general + poison))


@settings(database=None, derandomize=True, deadline=None, max_examples=2, phases=[Phase.generate],
          report_multiple_bugs=False, print_blob=False,
          suppress_health_check=list(HealthCheck))
@given(batch=hostile_batches())
def test_property_issue9_accepted_hostile_callbacks_never_hold_up_a_genuine_one(pipeline, batch):
    """Issue 9, findings 1 and 7 (property, SPEC 6): after a batch of 30 generated, signed hostile callbacks,
    the ones the door accepted are each settled on their own (done, rejected or dead, or visibly backing
    off), a genuine callback sent after them still yields its event, and the sink holds only strict JSON."""
    accepted: list[str] = []
    door: list[str] = []  # the door's own faults are reported last: this test is about what comes after
    for callback in batch:
        answer = post_bytes(pipeline.receiver.port, callback.source, callback.raw, callback.token, callback.headers)
        door += [f"{p} ({callback.how})" for p in answer_problems(callback, answer)]
        if answer.status == 200 and json.loads(answer.body).get("status") == "accepted":
            accepted.append(json.loads(answer.body)["id"])

    genuine = pipeline.create_mps_workflow(SessionId=f"genuine-{time.monotonic_ns()}", SessionContext="ctx")
    try:
        pipeline.wait_event(genuine, timeout=20)
    except AssertionError:
        rows = inbox_rows(pipeline, set(accepted))
        raise AssertionError(
            f"the genuine task's event did not arrive within 20 s after {len(accepted)} accepted hostile "
            f"callbacks; stuck records: {unsettled(rows, time.time())[:3]}; worker: "
            f"{[line for line in pipeline.worker.log().splitlines() if 'Error' in line][-1:]}") from None

    last: list[dict[str, Any]] = []

    def all_settled() -> bool:
        rows = inbox_rows(pipeline, set(accepted))
        last[:] = unsettled(rows, time.time())
        return len(rows) == len(accepted) and not last

    try:
        wait_until(all_settled, 20, "every accepted hostile record settled", interval=0.2)
    except AssertionError:
        raise AssertionError(f"{len(last)} accepted record(s) stuck, due and unheld: {last[:3]}") from None
    bad = strict_sink_lines(pipeline)
    assert not bad, f"the sink holds lines that are not strict JSON: {bad[:3]}"
    assert not door, f"{len(door)} answer(s) the SPEC does not allow: {door[:3]}"
