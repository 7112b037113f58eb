"""`200` means durable: SIGKILL every gunicorn process mid-burst, nothing answered 200 is lost."""

from __future__ import annotations

import threading
import uuid

import requests

from tests import payloads
from tests.client import post_mps
from tests.conftest import WORKER_CLASSES
from tests.servers import GunicornServer, inbox_rows, wait_until


@WORKER_CLASSES
def test_kill_9_of_every_gunicorn_process_loses_no_accepted_callback(start_receiver, worker_class):
    server = start_receiver(workers=2, threads=8, GUNICORN_WORKER_CLASS=worker_class)
    run = uuid.uuid4().hex
    accepted: dict[str, str] = {}  # task id -> inbox id, for every 200 received
    lock = threading.Lock()
    stop = threading.Event()

    def sender(n: int) -> None:
        i = 0
        while not stop.is_set():
            task_id = f"{run}-{n}-{i}"
            i += 1
            try:
                answer = post_mps(server.url, payloads.mps_workflow(task_id=task_id))
            except requests.RequestException:
                continue  # the server died under us: this one was never acknowledged
            if answer.status_code == 200:
                with lock:
                    accepted[task_id] = answer.json()["id"]

    threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(12)]
    for t in threads:
        t.start()
    try:
        # Kill in the middle of the burst, right after a run of accepted answers.
        wait_until(lambda: len(accepted) >= 300, 60, "300 accepted callbacks")
        server.kill9()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    with lock:
        acknowledged = dict(accepted)

    # Restart on the same inbox: every acknowledged callback is there, with its id.
    restarted = GunicornServer(server.env, server.log_path).start()
    try:
        rows = {r["task_id"]: r["id"] for r in inbox_rows(restarted)}
        missing = {t for t in acknowledged if rows.get(t) != acknowledged[t]}
        assert not missing, f"{len(missing)} of {len(acknowledged)} accepted callbacks lost"
        # And the receiver knows them: a retry from Tencent is a duplicate of the same id.
        sample = list(acknowledged.items())[:20]
        for task_id, inbox_id in sample:
            retry = post_mps(restarted.url, payloads.mps_workflow(task_id=task_id))
            assert retry.json() == {"status": "duplicate", "id": inbox_id}
    finally:
        restarted.stop()
