"""Issue 9, finding 5: forged callbacks for tasks that do not exist, at 80% of the Describe limit, cannot
starve genuine ones (SPEC 6).

For 30 s, 8 forged MPS callbacks a second (valid signature, made-up task ids) and one genuine task a second
(the emulator calls back when it finishes), under a 10/s DescribeTaskDetail limit on both sides and the
default 20 s not-found patience. Genuine callbacks' first calls come before every look-again, and
look-agains back off, so genuine events stay prompt and a forged callback costs a few calls.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from datetime import datetime

import pytest

from tests import payloads
from tests.client import post_mps
from tests.pipeline_fixtures import Pipeline
from tests.servers import wait_until

LIMIT = 10
FORGED_PER_SECOND = 8
SECONDS = 30
NOT_FOUND_PATIENCE = 20  # the default
# The look-again schedule within 20 s: 0, 2, 6, 14, 20 (receiver.scheduler.look_again_at).
MAX_CALLS_PER_FORGED = 5


def at_rate(per_second: float, seconds: float, action, stopping: threading.Event) -> list:
    """Call `action` `per_second` times a second, on schedule, for `seconds`; its results."""
    results, start, count = [], time.monotonic(), int(per_second * seconds)
    for i in range(count):
        due = start + i / per_second
        if stopping.wait(max(0.0, due - time.monotonic())):
            break
        results.append(action())
    return results


def parse(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def pipeline(tmp_path):
    pipe = Pipeline(tmp_path, mps_describe_limit=LIMIT)
    pipe.env["NOT_FOUND_PATIENCE_SECONDS"] = str(NOT_FOUND_PATIENCE)
    yield from pipe.running_with_worker()


def test_a_flood_of_forged_callbacks_does_not_delay_genuine_events_nor_exceed_the_limit(pipeline):
    stopping = threading.Event()
    forged_ids: list[str] = []

    def forge() -> str:
        body = payloads.mps_workflow(task_id=f"2500000000-WorkflowTask-{uuid.uuid4().hex}", session_id="",
                                     session_context="")
        answer = post_mps(pipeline.receiver.url, body)
        assert answer.status_code == 200, answer.text
        return answer.json()["id"]

    flood = threading.Thread(target=lambda: forged_ids.extend(at_rate(FORGED_PER_SECOND, SECONDS, forge, stopping)))
    flood.start()
    try:
        genuine = at_rate(1, SECONDS, pipeline.create_mps_workflow, stopping)
    finally:
        stopping.set()
        flood.join()

    events = pipeline.wait_events(genuine, timeout=60)
    delays = sorted(parse(e[0]["reconciled_at"]) - parse(e[0]["received_at"]) for e in events.values())
    p50, p95 = statistics.median(delays), delays[int(0.95 * (len(delays) - 1))]
    assert p95 <= 10, f"genuine accept -> reconcile p50 {p50:.2f}s, p95 {p95:.2f}s"

    wait_until(lambda: {r["state"] for r in pipeline.inbox_rows(reason="unknown_task")} == {"rejected"}
               and len(pipeline.inbox_rows(reason="unknown_task")) == len(forged_ids), 180,
               "every forged callback to be rejected unknown_task")
    stats = pipeline.stats("mps.DescribeTaskDetail")
    assert stats["max_1s_window_attempted"] <= LIMIT and "RequestLimitExceeded" not in stats["errors"]
    genuine_calls = len(genuine)  # one each: their tasks exist and have finished when they call back
    per_forged = (stats["calls"] - genuine_calls) / len(forged_ids)
    assert per_forged <= MAX_CALLS_PER_FORGED
    print(f"\nforged flood: {len(forged_ids)} forged + {len(genuine)} genuine in {SECONDS}s; genuine accept -> "
          f"reconcile p50 {p50:.2f}s p95 {p95:.2f}s max {delays[-1]:.2f}s; {per_forged:.2f} Describe calls per "
          f"forged callback; busiest second {stats['max_1s_window_attempted']} of {LIMIT}")
