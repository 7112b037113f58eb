"""The README's run command on a machine without credentials: events flow from the emulator to the log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import jsonschema

from receiver.demo import EXPECTED_EVENTS
from schemas.event import JSON_SCHEMA_PATH
from tests.servers import ROOT, free_port, sink_events, wait_until


def test_local_trial_shows_every_product_end_to_end(tmp_path):
    events_path = tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENCENTCLOUD_", "PROMETHEUS_"))}
    env.update(PORT=str(free_port()), EMULATOR_PORT=str(free_port()), INBOX_URL=f"sqlite:///{tmp_path}/inbox.db",
               LOG_SINK_PATH=str(events_path))
    with open(tmp_path / "run.log", "w") as output:
        launcher = subprocess.Popen([sys.executable, "-m", "receiver"], cwd=ROOT, env=env, stdout=output,
                                    stderr=subprocess.STDOUT)
    try:
        def events() -> list[dict]:
            return sink_events(events_path)

        def shown() -> str:
            return (tmp_path / "run.log").read_text()

        wait_until(lambda: len(events()) >= EXPECTED_EVENTS, 60, f"{EXPECTED_EVENTS} events in the log sink")
        # ... and the launcher shows each of them as it arrives
        wait_until(lambda: shown().count("\nevent ") >= EXPECTED_EVENTS, 10, "the events to be shown")
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=30)
    assert launcher.returncode == 0
    schema = json.loads(JSON_SCHEMA_PATH.read_text())
    for event in events():
        jsonschema.validate(event, schema)
    seen = {(e["reconciled_with"], e["status"]) for e in events()}
    assert seen == {
        ("mps:DescribeTaskDetail", "PROCESSING"), ("mps:DescribeTaskDetail", "FINISH"),
        ("mps:DescribeBatchTaskDetail", "FINISH"), ("mps:DescribeImageTaskDetail", "FINISH"),
        ("vod:DescribeTaskDetail", "FINISH"), ("ams:DescribeTaskDetail", "FINISH"),
    }
    assert len({e["event_id"] for e in events()}) == len(events())
    assert "Traceback" not in shown()
