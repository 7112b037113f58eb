"""Many callbacks at once: one row per distinct callback, never a 5xx."""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from tests import payloads
from tests.client import post_mps
from tests.conftest import WORKER_CLASSES
from tests.servers import inbox_rows


@WORKER_CLASSES
def test_50_concurrent_posts_of_one_callback_make_one_row(start_receiver, worker_class):
    server = start_receiver(workers=2, threads=8, GUNICORN_WORKER_CLASS=worker_class)
    body = payloads.mps_workflow(task_id=f"same-{uuid.uuid4().hex}")
    barrier = threading.Barrier(50)

    def send(_):
        barrier.wait()
        return post_mps(server.url, body)

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(send, range(50)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    statuses = [a.json()["status"] for a in answers]
    assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 49
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(inbox_rows(server, task_id=body["WorkflowTaskEvent"]["TaskId"])) == 1


@WORKER_CLASSES
def test_500_distinct_callbacks_from_16_threads(start_receiver, worker_class):
    server = start_receiver(workers=2, threads=8, GUNICORN_WORKER_CLASS=worker_class)
    run = uuid.uuid4().hex
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda i: post_mps(server.url, payloads.mps_workflow(task_id=f"{run}-{i}")), range(500)))
    assert [a.status_code for a in answers if a.status_code != 200] == []
    assert {a.json()["status"] for a in answers} == {"accepted"}
    assert len({a.json()["id"] for a in answers}) == 500
    assert len(inbox_rows(server)) == 500


@WORKER_CLASSES
def test_callbacks_waiting_for_the_inbox_lock_do_not_stall_the_process(start_receiver, worker_class, tmp_path):
    """Another process holds the host's write lock: the waiting callbacks hold, nothing else does.

    Under gevent, a commit that blocked its OS thread would stop every greenlet of
    the process, health checks included; the commit runs on a real thread instead.
    """
    server = start_receiver(workers=1, threads=8, GUNICORN_WORKER_CLASS=worker_class)
    run = uuid.uuid4().hex
    lock_fd = os.open(f"{tmp_path}/inbox.db.lock", os.O_RDWR)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        with ThreadPoolExecutor(4) as pool:
            waiting = [pool.submit(post_mps, server.url, payloads.mps_workflow(task_id=f"{run}-{i}"))
                       for i in range(4)]
            for _ in range(20):
                assert requests.get(f"{server.url}/healthz", timeout=2).status_code == 200
            assert not any(f.done() for f in waiting)  # none is answered before its commit
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            answers = [f.result(timeout=10) for f in waiting]
    finally:
        os.close(lock_fd)
    assert [a.json()["status"] for a in answers] == ["accepted"] * 4
    assert len(inbox_rows(server)) == 4
