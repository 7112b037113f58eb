"""An outage of the SQS sink, end to end: the inbox keeps the events until the queue is back.

The receiver under gunicorn takes 200 VOD file callbacks (forwarded without a
Describe call, so no Tencent Cloud is needed) while a worker sends their
events to moto's SQS. moto is stopped in the middle, restarted and the queue
recreated: every event arrives, none twice.
"""

from __future__ import annotations

import json
import uuid

import requests

from tests.client import post_vod
from tests.moto_fixtures import MotoServer
from tests.pipeline_fixtures import WorkerProcess
from tests.servers import wait_until


def test_events_wait_out_a_sink_outage_and_arrive_once(start_receiver, tmp_path):
    moto = MotoServer(tmp_path / "moto.log").start()
    worker = None
    try:
        queue_url = moto.create_queue("events")
        server = start_receiver()
        env = {**server.env, **moto.env(), "SINK": "sqs", "SQS_QUEUE_URL": queue_url, "MAX_ATTEMPTS": "100",
               # Events with nothing to describe, so the sink is all that is under test.
               "VOD_FORWARD_UNRECONCILED": "true"}
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        received: dict[str, int] = {}

        def consume() -> None:
            sqs = moto.client("sqs")
            while True:
                messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=0).get("Messages", [])
                if not messages:
                    return
                for message in messages:
                    event_id = json.loads(message["Body"])["event_id"]
                    received[event_id] = received.get(event_id, 0) + 1
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

        def post(count: int) -> None:
            for _ in range(count):
                body = {"EventType": "PersistenceComplete", "PersistenceCompleteEvent": {"FileId": uuid.uuid4().hex}}
                assert post_vod(server.url, body).status_code == 200

        def consumed(count: int) -> bool:
            consume()
            return len(received) >= count

        post(100)
        wait_until(lambda: consumed(100), 60, "the first 100 events on the queue")
        moto.stop()  # the queue is gone, with everything it held (all consumed by now)
        post(100)
        wait_until(lambda: requests.get(server.url + "/readyz", timeout=5).json()["checks"]["sink"] == "failing",
                   30, "the worker to report the sink failing")
        assert len(received) == 100
        moto.start()
        assert moto.create_queue("events") == queue_url
        wait_until(lambda: consumed(200), 60, "the other 100 events once the queue is back")
        consume()
        assert len(received) == 200 and set(received.values()) == {1}
        assert requests.get(server.url + "/readyz", timeout=5).json()["checks"]["sink"] == "ok"
    finally:
        if worker is not None:
            worker.stop()
        moto.stop()
