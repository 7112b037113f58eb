"""The SQS run of the pipeline benchmark: SINK=sqs on moto_server, behind a reverse proxy that counts the calls."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config as BotoConfig

from bench import processes
from bench.pipeline_callbacks import BACKLOG_STEPS, post_callbacks
from bench.pipeline_observe import forwarded_times
from bench.pipeline_results import RunResult
from bench.pipeline_runs import backlog_timeout, drain_backlog, run_result
from bench.pipeline_stack import Setup, base_env, running_stack
from bench.pipeline_tasks import TaskFactory, create_tasks, task_plan, wait_finished
from bench.processes import Server, free_port, poll_until


class CountingProxy:
    """A reverse proxy in front of moto_server counting SQS requests by action (X-Amz-Target or Action)."""

    def __init__(self, upstream_port: int):
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._upstream_port = upstream_port
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                proxy.relay(self)

            do_GET = do_POST  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def action_of(handler: BaseHTTPRequestHandler, body: bytes) -> str:
        target = handler.headers.get("X-Amz-Target")
        if target:
            return target.rsplit(".", 1)[-1]
        form = parse_qs(body.decode(errors="replace")) or parse_qs(urlsplit(handler.path).query)
        return form.get("Action", ["?"])[0]

    def _upstream(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self._upstream_port, timeout=60)
        return conn

    def relay(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self._lock:
            self.counts[self.action_of(handler, body)] += 1
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("connection", "keep-alive")}
        for attempt in (0, 1):
            conn = self._upstream(fresh=attempt > 0)
            try:
                conn.request(handler.command, handler.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                if attempt:
                    handler.send_error(502)
                    return
        handler.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(tmp: Path) -> Server:
    """`python -m moto.server` on a free port, with AWS's test credentials."""
    return processes.moto_server(free_port(), {**base_env(), **AWS_ENV}, tmp / "moto.log").start_ready(60)


def sqs_client(url: str) -> Any:
    return boto3.client("sqs", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=BotoConfig(retries={"mode": "standard"}))


def drain_queue(sqs: Any, queue_url: str, expected: int, timeout: float) -> Counter[str]:
    """Every message on the queue (hidden, not deleted), counted by event id; a doubled send shows twice."""
    counts: Counter[str] = Counter()

    def empty_after_all() -> bool:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=900,
                                     WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        for message in messages:
            counts[json.loads(message["Body"])["event_id"]] += 1
        return not messages and sum(counts.values()) >= expected

    poll_until(empty_after_all, timeout, f"{expected} messages on the event queue", interval=0.01)
    return counts


def run_sqs(setup: Setup, latency: float, task_count: int) -> RunResult:
    """The backlog run with SINK=sqs: every SQS request of the worker counted on its way to moto_server."""
    moto = start_moto(setup.tmp)
    moto_url = moto.url
    proxy: CountingProxy | None = None
    try:
        sqs = sqs_client(moto_url)
        queue_url = sqs.create_queue(QueueName="bench-events",
                                     Attributes={"MaximumMessageSize": "262144"})["QueueUrl"]
        proxy = CountingProxy(moto.port).start()
        env = {**AWS_ENV, "SINK": "sqs", "SQS_QUEUE_URL": queue_url, "AWS_ENDPOINT_URL_SQS": proxy.url,
               "AWS_ENDPOINT_URL_S3": moto_url}
        name = f"sqs-{latency * 1000:g}ms"
        with running_stack(setup, name, **env) as stack:
            tasks = create_tasks(TaskFactory(stack), task_plan(task_count))
            wait_finished(stack, tasks)
            own_call_ms = stack.emulator.own_call_ms()
            stack.emulator.set_latency(latency)
            answers = post_callbacks(stack.url, tasks)
            expected = {t.event_id for t in tasks}
            proxy.reset()  # only the worker talks to SQS (web processes use the SQLite inbox)
            drained = drain_backlog(stack, lambda: expected <= set(forwarded_times(stack.inbox)),
                                    backlog_timeout(task_count, latency))
            sqs_counts = Counter(proxy.counts)
            seen = drain_queue(sqs, queue_url, len(expected), timeout=120)
            forwarded = forwarded_times(stack.inbox)
            result = run_result("sqs", latency, tasks, answers, BACKLOG_STEPS, expected, seen, forwarded, drained,
                             stack)
            result.sqs_calls = sqs_counts
            result.emulator_call_ms = own_call_ms
            return result
    finally:
        if proxy is not None:
            proxy.stop()
        moto.stop()
