"""Issue 9 through the whole pipeline: what a hostile callback at the door does to the worker and the sink.

Real processes (tests/pipeline_fixtures.py): the emulator's tasks call the
receiver back, a worker process describes them at the emulator, events land
in the JSON-lines log sink. Each test gets its own pipeline: one that
reproduces a stalled worker must not stall its neighbours.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from tests import payloads
from tests.conftest import MPS_KEYS, TOKENS
from tests.hostile_helpers import assert_spec_answer, post_bytes, splice_mps_signature
from tests.pipeline_fixtures import Pipeline
from tests.servers import wait_until

EVENT_TIMEOUT = 30


@pytest.fixture
def pipeline(tmp_path):
    """A started pipeline without a worker yet: the test says when the worker starts."""
    pipe = Pipeline(tmp_path)
    try:
        yield pipe.start()
    finally:
        pipe.stop()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def last_errors(text: str, limit: int = 3) -> list[str]:
    """The last distinct error lines of a log, for a failure message."""
    found = [line.strip() for line in text.splitlines()
             if re.search(r"\b\w+(Error|Exception)\b", line) and "Traceback" not in line]
    return list(dict.fromkeys(reversed(found)))[:limit]


def wait_events_or_explain(pipe: Pipeline, task_ids: list[str], timeout: float = EVENT_TIMEOUT) -> dict:
    try:
        return pipe.wait_events(task_ids, timeout)
    except AssertionError:
        arrived = {e["task_id"] for e in pipe.events()} & set(task_ids)
        worker_log = pipe.worker.log() if pipe.worker else ""
        raise AssertionError(
            f"only {len(arrived)} of {len(task_ids)} genuine tasks' events reached the sink within {timeout}s; "
            f"worker's last errors: {last_errors(worker_log)}") from None


def surrogate_callback(field: str) -> bytes:
    """A signed MPS WorkflowTask callback whose `field` is the JSON escape of a lone surrogate."""
    body = payloads.mps_workflow(task_id=uid("hostile-surrogate"))
    body[field] = "<surrogate>"
    text = json.dumps(body).replace('"<surrogate>"', '"\\ud800"')
    return splice_mps_signature(text.encode())


def test_finding1_a_lone_surrogate_record_does_not_halt_the_worker(pipeline):
    """Issue 9, finding 1: one signed callback with `"SessionId": "\\ud800"` was accepted and stored as
    invalid UTF-8; from then on every `claim()` raised `OperationalError: Could not decode to UTF-8` and no
    event of any task reached the sink. Three genuine callbacks before it and three after must all arrive.

    The door may refuse it (SPEC 3: 400) or accept it and bury it on its own (SPEC 6): either way, never a
    5xx, and the genuine events flow.
    """
    def create_genuine(count: int) -> list[str]:
        ids = [pipeline.create_mps_workflow(SessionId=uid("genuine"), SessionContext="ctx") for _ in range(count)]
        wait_until(lambda: all(pipeline.inbox_rows(task_id=t) for t in ids), 20, "the genuine callbacks accepted")
        return ids

    before = create_genuine(3)
    answer = post_bytes(pipeline.receiver.port, "mps", surrogate_callback("SessionId"))
    assert_spec_answer(answer, frozenset({200, 400}))
    after = create_genuine(3)

    pipeline.start_worker()
    wait_events_or_explain(pipeline, before + after)
    for task_id in before + after:
        pipeline.wait_settled(task_id=task_id)

    # With the worker running: another one in a different field, then one more genuine callback.
    answer = post_bytes(pipeline.receiver.port, "mps", surrogate_callback("SessionContext"))
    assert_spec_answer(answer, frozenset({200, 400}))
    later = pipeline.create_mps_workflow(SessionId=uid("genuine"), SessionContext="ctx")
    wait_events_or_explain(pipeline, [later])
    assert pipeline.worker is not None and pipeline.worker.running


S3_SECRET_ID, S3_SECRET_KEY = "AKIAEXAMPLE", "s3-secret-key"
SQS_SECRET_ID, SQS_SECRET_KEY = "AKIDSQSEXAMPLE", "sqs-secret-key"
SECRET_KEY_NAME = re.compile(r"(SecretId|SecretKey)$")


def unredacted(value: Any, path: str = "detail") -> list[str]:
    """Paths of every non-empty NotifyKey / *SecretId / *SecretKey string that is not "***"."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}"
            if (key == "NotifyKey" or SECRET_KEY_NAME.search(key)) and isinstance(item, str) and item \
                    and item != "***":
                found.append(here)
            else:
                found += unredacted(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += unredacted(item, f"{path}[{index}]")
    return found


def test_finding6_s3_and_sqs_credentials_are_redacted_everywhere(pipeline):
    """Issue 9, finding 6: MPS answers carry `S3SecretId` / `S3SecretKey` (S3InputInfo, AwsSQS) and
    `detail` forwarded them as they were. SPEC 7: every non-empty `*SecretId`, `*SecretKey` and `NotifyKey`
    at any depth is "***" in the event, and no secret is in the sink, the receiver's or the worker's log."""
    pipeline.start_worker()
    input_info = {"Type": "AWS-S3", "S3InputInfo": {
        "S3Bucket": "b", "S3Region": "us-east-1", "S3Object": "/in.mp4",
        "S3SecretId": S3_SECRET_ID, "S3SecretKey": S3_SECRET_KEY}}
    aws_sqs = {"SQSRegion": "us-east-1", "SQSQueueName": "receiver-events",
               "S3SecretId": SQS_SECRET_ID, "S3SecretKey": SQS_SECRET_KEY}
    params = {"InputInfo": input_info, "TaskNotifyConfig": {**pipeline.mps_notify(), "AwsSQS": aws_sqs},
              "SessionId": uid("s3"), "SessionContext": "s3-context"}
    task_id = pipeline.emulator.mps().call_json("ProcessMedia", params)["Response"]["TaskId"]
    event = wait_events_or_explain(pipeline, [task_id])[task_id][-1]

    # The authoritative answer does hold the secrets: what the receiver has to redact.
    answer = pipeline.describe("mps", "DescribeTaskDetail", task_id)
    assert answer["WorkflowTask"]["InputInfo"]["S3InputInfo"]["S3SecretKey"] == S3_SECRET_KEY
    assert answer["TaskNotifyConfig"]["AwsSQS"]["S3SecretKey"] == SQS_SECRET_KEY

    detail = event["detail"]
    leaks = unredacted(detail)
    assert not leaks, f"secrets forwarded in the event at {leaks}"
    s3 = detail["WorkflowTask"]["InputInfo"]["S3InputInfo"]
    assert s3 == {**input_info["S3InputInfo"], "S3SecretId": "***", "S3SecretKey": "***"}
    assert detail["TaskNotifyConfig"]["AwsSQS"] == {**aws_sqs, "S3SecretId": "***", "S3SecretKey": "***"}
    assert detail["TaskNotifyConfig"]["NotifyKey"] == "***"

    pipeline.wait_settled(task_id=task_id)
    places = {"sink": pipeline.sink_path.read_text(), "receiver log": pipeline.receiver.log(),
              "worker log": pipeline.worker.log() if pipeline.worker else ""}
    for secret in (S3_SECRET_ID, S3_SECRET_KEY, SQS_SECRET_ID, SQS_SECRET_KEY, MPS_KEYS[0], *TOKENS):
        for place, text in places.items():
            assert secret not in text, f"{secret!r} appears in the {place}"
