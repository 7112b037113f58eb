"""Many callbacks at once: one row per distinct callback, never a 5xx."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from tests import payloads
from tests.client import post_mps
from tests.test_http_intake import inbox_rows


def test_50_concurrent_posts_of_one_callback_make_one_row(start_receiver):
    server = start_receiver(workers=2, threads=8)
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


def test_500_distinct_callbacks_from_16_threads(start_receiver):
    server = start_receiver(workers=2, threads=8)
    run = uuid.uuid4().hex
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda i: post_mps(server.url, payloads.mps_workflow(task_id=f"{run}-{i}")), range(500)))
    assert [a.status_code for a in answers if a.status_code != 200] == []
    assert {a.json()["status"] for a in answers} == {"accepted"}
    assert len({a.json()["id"] for a in answers}) == 500
    assert len(inbox_rows(server)) == 500
