"""moto_server as a real HTTP server for tests of the AWS parts (SQS, S3, DynamoDB).

The server runs in its own process, so the code under test talks to it over
HTTP exactly as to AWS (botocore's serialisation, retries and endpoints all
take part), and a test can stop and restart it to play an outage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.servers import ServerProcess, wait_until

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
# Few, quick botocore retries: a test that stops the server must not wait for the default backoff.
TEST_RETRIES = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "2"}


class MotoServer(ServerProcess):
    """`python -m moto.server` on 127.0.0.1, on a free port that survives a restart.

    Stopping it loses everything it held, as after a restart in a real outage.
    """

    name = "moto_server"
    health_path = "/moto-api/"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.moto_serve", "-H", "127.0.0.1", "-p", str(self.port)]

    def env(self) -> dict[str, str]:
        """The environment that points the standard boto3 chain at this server."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_SQS": self.url,
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ENDPOINT_URL_DYNAMODB": self.url,
            **TEST_RETRIES,
        }

    def client(self, service: str) -> Any:
        """A boto3 client of this server for the test's own set-up and checks."""
        return boto3.client(
            service, endpoint_url=self.url, region_name=REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "max_attempts": 2}),
        )

    def create_queue(self, name: str, max_message_size: int = 262144, **attributes: str) -> str:
        """Create a queue and return its URL; FIFO when the name ends in .fifo.

        MaximumMessageSize is set explicitly: moto 5.2's default is 1 MiB (AWS's
        default for new queues since 2025), the tests want the classic 256 KiB.
        """
        attrs = {"MaximumMessageSize": str(max_message_size), **attributes}
        if name.endswith(".fifo"):
            attrs.setdefault("FifoQueue", "true")
        return self.client("sqs").create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto_server for a module; the standard AWS environment points at it while the module runs."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.env().items():
            patch.setenv(name, value)
        try:
            yield server
        finally:
            server.stop()


def drain(sqs: Any, queue_url: str, expected: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Receive until `expected` messages arrived and the queue then answers empty; return them all.

    Messages are hidden for 10 minutes rather than deleted, so a message that
    was enqueued twice shows up twice here.
    """
    received: list[dict[str, Any]] = []

    def more() -> bool:
        answer = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=0,
            MessageAttributeNames=["All"], AttributeNames=["All"],
        )
        messages = answer.get("Messages", [])
        received.extend(messages)
        return not messages and len(received) >= expected

    wait_until(more, timeout, f"{expected} messages on {queue_url}", interval=0.01)
    return received


def create_inbox_queue(moto: MotoServer, name: str, max_receive_count: int = 50) -> str:
    """An inbox queue with a dead-letter queue behind its redrive policy; the inbox queue's URL."""
    sqs = moto.client("sqs")
    dead_url = moto.create_queue(f"{name}-dead")
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(max_receive_count)})
    return moto.create_queue(name, max_message_size=1024 * 1024, RedrivePolicy=policy)


def create_table(moto: MotoServer, name: str) -> str:
    """The idempotency table as SPEC 8 describes it: key `id` (S), TTL on `expires_at`."""
    dynamodb = moto.client("dynamodb")
    dynamodb.create_table(
        TableName=name, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    return name
