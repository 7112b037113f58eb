"""The SQS sink (SPEC 7) against moto_server over real HTTP: batches, FIFO ids, partial failures,
large events through S3, an outage of the queue."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

import pytest

from receiver.config import Settings
from receiver.consumer import read_event, validate_event
from receiver.sinks.encoding import PAYLOAD_SIZE_ATTRIBUTE, POINTER_CLASS, encode_event
from receiver.sinks.sqs import PayloadTooLargeError, SqsSink, SqsSinkError
from tests.moto_fixtures import MotoServer, drain
from tests.servers import ROOT

KB = 1024


def make_event(n: int, *, task_id: str | None = "auto", status: str | None = "FINISH", pad: int = 0,
               text: str = "") -> dict[str, Any]:
    """A valid normalized event v1; `pad` bytes of filler in detail make it as large as a test needs."""
    tid = f"2400000-WorkflowTask-{n:05d}" if task_id == "auto" else task_id
    return {
        "schema_version": 1,
        "event_id": uuid.uuid4().hex,
        "source": "mps",
        "event_type": "WorkflowTask",
        "task_id": tid,
        "task_type": "WorkflowTask",
        "status": status,
        "succeeded": True if status == "FINISH" else None,
        "error_code": None,
        "error_message": None,
        "session_id": f"session-{n}",
        "session_context": None,
        "created_at": "2026-11-24T06:00:00Z",
        "started_at": "2026-11-24T06:00:01Z",
        "finished_at": "2026-11-24T06:00:09Z",
        "received_at": "2026-11-24T06:00:10Z",
        "reconciled_at": "2026-11-24T06:00:11Z",
        "reconciled_with": "mps:DescribeTaskDetail",
        "detail": {"TaskType": "WorkflowTask", "Status": status, "Note": text, "Filler": "x" * pad},
    }


def sized_event(n: int, total_bytes: int) -> dict[str, Any]:
    """An event whose JSON body is exactly `total_bytes` long."""
    event = make_event(n)
    event["detail"]["Filler"] = "x" * (total_bytes - len(encode_event(event).encode()))
    assert len(encode_event(event).encode()) == total_bytes
    return event


class Calls:
    """Counts SendMessageBatch calls and their entries, seen from the sink's own client."""

    def __init__(self, sink: SqsSink):
        self.entries: list[list[str]] = []  # the entry Ids of each call, in order
        sink.sqs_client.meta.events.register("before-parameter-build.sqs.SendMessageBatch", self._record)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.entries.append([entry["Id"] for entry in params["Entries"]])

    @property
    def sizes(self) -> list[int]:
        return [len(ids) for ids in self.entries]


def new_queue(moto: MotoServer, fifo: bool = False, **kwargs: Any) -> str:
    return moto.create_queue(f"events-{uuid.uuid4().hex[:8]}" + (".fifo" if fifo else ""), **kwargs)


def sink_for(queue_url: str, bucket: str | None = None) -> SqsSink:
    """Through from_settings, so the standard chain (region, credentials, AWS_ENDPOINT_URL_*) is what reaches moto."""
    return SqsSink.from_settings(Settings(sink="sqs", sqs_queue_url=queue_url, sqs_large_payload_bucket=bucket))


@pytest.fixture(scope="module")
def bucket(moto_server: MotoServer) -> str:
    name = "large-payloads"
    moto_server.client("s3").create_bucket(Bucket=name)
    return name


def by_event_id(messages: list[dict[str, Any]], s3: Any) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    return {event["event_id"]: (event, message) for message in messages for event in [read_event(message, s3)]}


# --- standard queue ---------------------------------------------------------------------------------------------


def test_standard_queue_batches_of_ten_with_attributes(moto_server: MotoServer) -> None:
    queue = new_queue(moto_server)
    sink = sink_for(queue)
    calls = Calls(sink)
    events = [make_event(n, text="转码完成 ✓") for n in range(23)]
    events[5]["task_id"] = None  # a VOD file event: no task
    events[6]["status"] = None

    sink.send(events)

    assert calls.sizes == [10, 10, 3]  # 23 events, 3 API calls
    received = drain(moto_server.client("sqs"), queue, len(events))
    assert len(received) == len(events)
    got = by_event_id(received, moto_server.client("s3"))
    for event in events:
        event_back, message = got[event["event_id"]]
        assert event_back == event
        assert message["Body"] == json.dumps(event, ensure_ascii=False, separators=(",", ":"))  # compact, UTF-8
        expected = {key: event[key] for key in ("source", "event_type", "status", "task_id") if event[key] is not None}
        assert {name: a["StringValue"] for name, a in message["MessageAttributes"].items()} == expected
        assert all(a["DataType"] == "String" for a in message["MessageAttributes"].values())
        assert "MessageGroupId" not in message["Attributes"]
        validate_event(event_back)
        # What `inspect` shows: SQS's own message id of each event, kept by the sink until the worker takes it.
        assert sink.message_ids[event["event_id"]] == message["MessageId"]
    assert "task_id" not in got[events[5]["event_id"]][1]["MessageAttributes"]
    assert "status" not in got[events[6]["event_id"]][1]["MessageAttributes"]
    assert sink.recover_forwarded_ids() == set()


def test_characters_sqs_refuses_are_escaped_not_lost(moto_server: MotoServer) -> None:
    queue = new_queue(moto_server)
    event = make_event(1, text="lone \ud800 surrogate and \uffff")
    sink_for(queue).send([event])
    [message] = drain(moto_server.client("sqs"), queue, 1)
    assert message["Body"].isascii()
    assert read_event(message, None) == event


def test_batches_respect_the_queue_size_limit(moto_server: MotoServer) -> None:
    queue = new_queue(moto_server, max_message_size=64 * KB)
    sink = sink_for(queue)
    calls = Calls(sink)
    events = [sized_event(n, 20 * KB) for n in range(7)]  # 3 fit in 64 KiB with their attributes

    sink.send(events)

    assert calls.sizes == [3, 3, 1]
    assert {read_event(m, None)["event_id"] for m in drain(moto_server.client("sqs"), queue, 7)} == {
        e["event_id"] for e in events
    }


# --- FIFO queue -------------------------------------------------------------------------------------------------


def test_fifo_group_is_task_dedup_is_event_and_a_resend_is_dropped(moto_server: MotoServer) -> None:
    queue = new_queue(moto_server, fifo=True)
    sink = sink_for(queue)
    calls = Calls(sink)
    events = [make_event(n // 2) for n in range(12)]  # two states per task
    events[11]["task_id"] = None

    sink.send(events)
    sink.send(events[:4])  # a resend within five minutes, as after a crash between send and mark

    assert calls.sizes == [10, 2, 4]
    received = drain(moto_server.client("sqs"), queue, len(events))
    assert len(received) == len(events)  # the resend was deduplicated by SQS
    got = by_event_id(received, None)
    for event in events:
        _, message = got[event["event_id"]]
        assert message["Attributes"]["MessageDeduplicationId"] == event["event_id"]
        assert message["Attributes"]["MessageGroupId"] == (event["task_id"] or event["event_id"])
    # Per group, the order sent is the order received.
    order = [read_event(m, None)["event_id"] for m in received]
    for first, second in zip(events[0:10:2], events[1:10:2], strict=True):
        assert order.index(first["event_id"]) < order.index(second["event_id"])


# --- partial failures -------------------------------------------------------------------------------------------


def fail_entry_once(sink: SqsSink, victim: str, code: str, sender_fault: bool) -> None:
    """On the first SendMessageBatch only, the entry holding event `victim` is not enqueued and comes back
    in `Failed` with `code`, as SQS answers an entry it could not take (the rest of the call is real)."""
    state: dict[str, Any] = {"done": False, "id": None}

    def drop(params: dict[str, Any], **_: Any) -> None:
        if state["done"]:
            return
        for entry in params["Entries"]:
            if json.loads(entry["MessageBody"])["event_id"] == victim:
                params["Entries"].remove(entry)
                state.update(done=True, id=entry["Id"])
                return

    def report(parsed: dict[str, Any], **_: Any) -> None:
        if state["id"] is not None:
            parsed.setdefault("Failed", []).append(
                {"Id": state["id"], "SenderFault": sender_fault, "Code": code, "Message": "simulated"}
            )
            state["id"] = None

    # Register Calls after this, so that it sees the entries as they go out.
    sink.sqs_client.meta.events.register("before-parameter-build.sqs.SendMessageBatch", drop, unique_id="drop")
    sink.sqs_client.meta.events.register_first("after-call.sqs.SendMessageBatch", report)


def test_a_failed_entry_is_retried_alone_and_nothing_is_lost(moto_server: MotoServer) -> None:
    queue = new_queue(moto_server)
    sink = sink_for(queue)
    events = [make_event(n) for n in range(12)]
    fail_entry_once(sink, victim=events[3]["event_id"], code="InternalError", sender_fault=False)
    calls = Calls(sink)

    sink.send(events)

    # 9 of the first 10 go through, the failed one goes again alone, then the last 2.
    assert calls.sizes == [9, 1, 2]
    assert calls.entries[1] == ["3"]
    received = drain(moto_server.client("sqs"), queue, len(events))
    assert Counter(read_event(m, None)["event_id"] for m in received) == Counter(e["event_id"] for e in events)


def test_a_permanent_entry_failure_raises_after_sending_the_rest(moto_server: MotoServer) -> None:
    queue = new_queue(moto_server)
    sink = sink_for(queue)
    calls = Calls(sink)
    events = [make_event(n) for n in range(12)]
    victim = events[4]["event_id"]

    def invalid_delay(params: dict[str, Any], **_: Any) -> None:
        # A real invalid entry: moto (like SQS) lists it in Failed with SenderFault and InvalidParameterValue.
        for entry in params["Entries"]:
            if json.loads(entry["MessageBody"])["event_id"] == victim:
                entry["DelaySeconds"] = 901

    sink.sqs_client.meta.events.register_first("before-parameter-build.sqs.SendMessageBatch", invalid_delay)

    with pytest.raises(SqsSinkError) as raised:
        sink.send(events)

    assert calls.sizes == [10, 2]  # no retry of an entry that fails the same way every time
    assert list(raised.value.failed) == [victim]
    assert "InvalidParameterValue" in raised.value.failed[victim]
    assert sorted(raised.value.delivered) == sorted(e["event_id"] for e in events if e["event_id"] != victim)
    received = drain(moto_server.client("sqs"), queue, 11)
    assert len(received) == 11


def test_an_entry_failing_every_time_raises(moto_server: MotoServer) -> None:
    queue = new_queue(moto_server)
    sink = sink_for(queue)
    events = [make_event(n) for n in range(3)]
    victim = events[1]["event_id"]
    ids: list[str] = []

    def drop(params: dict[str, Any], **_: Any) -> None:
        ids.clear()
        for entry in list(params["Entries"]):
            if json.loads(entry["MessageBody"])["event_id"] == victim:
                params["Entries"].remove(entry)
                ids.append(entry["Id"])
                if not params["Entries"]:  # SQS refuses an empty batch: keep the call real with no victim
                    params["Entries"].append({**entry, "Id": "probe", "MessageBody": "{}"})

    def report(parsed: dict[str, Any], **_: Any) -> None:
        parsed["Successful"] = [s for s in parsed.get("Successful", []) if s["Id"] != "probe"]
        parsed.setdefault("Failed", []).extend(
            {"Id": i, "SenderFault": False, "Code": "ServiceUnavailable", "Message": "simulated"} for i in ids
        )

    sink.sqs_client.meta.events.register("before-parameter-build.sqs.SendMessageBatch", drop)
    sink.sqs_client.meta.events.register_first("after-call.sqs.SendMessageBatch", report)
    calls = Calls(sink)

    with pytest.raises(SqsSinkError) as raised:
        sink.send(events)

    assert calls.sizes == [2, 1, 1, 1]  # the first call, then 3 retries of the failing entry alone
    assert raised.value.failed == {victim: "ServiceUnavailable: simulated"}


# --- large events -----------------------------------------------------------------------------------------------


def test_large_events_go_through_s3_with_the_extended_client_pointer(moto_server: MotoServer, bucket: str) -> None:
    queue = new_queue(moto_server, max_message_size=262144)
    sink = sink_for(queue, bucket)
    calls = Calls(sink)
    small, inline, large, huge = make_event(1), sized_event(2, 200 * KB), sized_event(3, 300 * KB), sized_event(
        4, 1536 * KB)

    sink.send([small, inline, large, huge])

    assert sum(calls.sizes) == 4
    s3 = moto_server.client("s3")
    got = by_event_id(drain(moto_server.client("sqs"), queue, 4), s3)
    for event in (small, inline):
        back, message = got[event["event_id"]]
        assert back == event
        assert PAYLOAD_SIZE_ATTRIBUTE not in message["MessageAttributes"]
        assert message["Body"] == encode_event(event)
    for event in (large, huge):
        back, message = got[event["event_id"]]
        assert back == event
        validate_event(back)
        key = f"events/{event['event_id']}.json"
        assert message["Body"] == (
            '["software.amazon.payloadoffloading.PayloadS3Pointer",'
            f'{{"s3BucketName":"{bucket}","s3Key":"{key}"}}]'
        )
        assert json.loads(message["Body"]) == [POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}]
        attributes = message["MessageAttributes"]
        assert attributes[PAYLOAD_SIZE_ATTRIBUTE] == {
            "DataType": "Number", "StringValue": str(len(encode_event(event).encode()))
        }
        assert attributes["task_id"]["StringValue"] == event["task_id"]
        assert attributes["status"]["StringValue"] == event["status"]
        assert s3.get_object(Bucket=bucket, Key=key)["ContentLength"] == len(encode_event(event).encode())


def test_attributes_count_against_the_limit(moto_server: MotoServer, bucket: str) -> None:
    queue = new_queue(moto_server, max_message_size=KB)
    event = sized_event(1, 1000)  # the body fits in 1024 bytes, body and attributes do not
    sink_for(queue, bucket).send([event])
    [message] = drain(moto_server.client("sqs"), queue, 1)
    assert PAYLOAD_SIZE_ATTRIBUTE in message["MessageAttributes"]
    assert read_event(message, moto_server.client("s3")) == event


def test_a_resent_large_event_overwrites_its_payload(moto_server: MotoServer, bucket: str) -> None:
    queue = new_queue(moto_server, max_message_size=KB)
    event = sized_event(1, 2000)
    sink = sink_for(queue, bucket)
    sink.send([event])
    sink.send([event])
    listed = moto_server.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"events/{event['event_id']}")
    assert [o["Key"] for o in listed["Contents"]] == [f"events/{event['event_id']}.json"]


def test_a_too_large_event_without_a_bucket_raises_and_nothing_is_sent(moto_server: MotoServer) -> None:
    queue = new_queue(moto_server, max_message_size=262144)
    events = [make_event(1), sized_event(2, 300 * KB)]
    with pytest.raises(PayloadTooLargeError, match="SQS_LARGE_PAYLOAD_BUCKET") as raised:
        sink_for(queue).send(events)
    assert list(raised.value.failed) == [events[1]["event_id"]]
    answer = moto_server.client("sqs").receive_message(QueueUrl=queue, WaitTimeSeconds=0)
    assert answer.get("Messages", []) == []


@pytest.mark.skipif(importlib.util.find_spec("sqs_extended_client") is None,
                    reason="amazon-sqs-extended-client is not installed")
def test_the_official_python_extended_client_reads_our_messages(moto_server: MotoServer, bucket: str) -> None:
    queue = new_queue(moto_server, max_message_size=262144)
    events = [make_event(1), sized_event(2, 300 * KB)]
    sink_for(queue, bucket).send(events)
    # In a child process: importing sqs_extended_client patches boto3.Session for the whole process.
    reader = (
        "import json, sys, sqs_extended_client, boto3\n"
        "sqs = boto3.Session().client('sqs')\n"
        "out = []\n"
        "while len(out) < 2:\n"
        "    answer = sqs.receive_message(QueueUrl=sys.argv[1], MaxNumberOfMessages=10,"
        " MessageAttributeNames=['All'], VisibilityTimeout=600)\n"
        "    out += [json.loads(m['Body']) for m in answer.get('Messages', [])]\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", reader, queue], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, check=True)
    read = json.loads(done.stdout)
    assert sorted(read, key=lambda e: e["event_id"]) == sorted(events, key=lambda e: e["event_id"])


# --- outage -----------------------------------------------------------------------------------------------------


def test_an_outage_of_sqs_loses_nothing_and_duplicates_nothing(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    own = MotoServer(tmp_path / "moto-outage.log").start()  # its own server: this test stops it
    try:
        for name, value in own.env().items():
            monkeypatch.setenv(name, value)
        queue = own.create_queue("outage")
        sink = sink_for(queue)
        events = [make_event(n) for n in range(200)]
        chunks = [events[i:i + 20] for i in range(0, 200, 20)]  # what the worker hands over at a time
        inbox: list[list[dict[str, Any]]] = []  # chunks whose send raised: they stay to be retried
        received: list[dict[str, Any]] = []

        for chunk in chunks[:4]:
            sink.send(chunk)
        received += drain(own.client("sqs"), queue, 80)  # consumed before the outage (moto keeps nothing)
        own.stop()
        for chunk in chunks[4:6]:
            with pytest.raises(SqsSinkError) as raised:
                sink.send(chunk)
            assert raised.value.delivered == [] and set(raised.value.failed) == {e["event_id"] for e in chunk}
            inbox.append(chunk)
        own.start()  # same port: the queue URL stays valid once the queue exists again
        assert own.create_queue("outage") == queue
        for chunk in inbox + chunks[6:]:
            sink.send(chunk)  # the same sink, and its connection pool, survive the outage
        received += drain(own.client("sqs"), queue, 120)
    finally:
        own.stop()

    ids = [read_event(m, None)["event_id"] for m in received]
    assert len(ids) == 200
    assert set(ids) == {e["event_id"] for e in events}


# --- the consumer example ---------------------------------------------------------------------------------------


def test_the_consumer_example_reads_validates_and_deletes(
    moto_server: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("consumer_example", ROOT / "docs" / "consumer_example.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    handled: list[dict[str, Any]] = []
    monkeypatch.setattr(example, "handle", handled.append)
    queue = new_queue(moto_server, max_message_size=262144)
    events = [make_event(1), sized_event(2, 300 * KB)]
    sink_for(queue, bucket).send(events)

    example.consume(queue, batches=1)

    assert sorted(handled, key=lambda e: e["event_id"]) == sorted(events, key=lambda e: e["event_id"])
    attributes = moto_server.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
