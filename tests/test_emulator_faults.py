"""Rate limits and their counters under concurrent load, and every injectable fault."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from tencentcloud.ams.v20201229 import models as ams_models
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.mps.v20190612 import models as mps_models

from receiver.auth import verify_mps_notification
from tests.emulator_fixtures import EmulatorProcess, callback_sink, req, running_emulator
from tests.servers import wait_until

INPUT = {"Type": "URL", "UrlInputInfo": {"Url": "https://example.com/in.mp4"}}


@pytest.fixture(scope="module")
def sink():
    yield from callback_sink()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    yield from running_emulator(tmp_path_factory.mktemp("emu") / "emulator.log", "--processing-after", "0.1",
                                "--finish-after", "0.3", "--callback-backoff", "0.05",
                                "--rate-limit", "mps.DescribeTasks=5")


@pytest.fixture(autouse=True)
def _reset(emulator):
    emulator.admin("reset", {})



def outcome(call) -> str:
    """"OK" or the error code of one SDK call."""
    try:
        call()
        return "OK"
    except TencentCloudSDKException as exc:
        return exc.get_code()


def mps_task(emulator, sink, path: str, mode: str = "Finish", **extra) -> str:
    notify = {"NotifyType": "URL", "NotifyMode": mode, "NotifyUrl": sink.url + path, "NotifyKey": "fk"}
    return emulator.mps().ProcessMedia(req(mps_models.ProcessMediaRequest, {
        "InputInfo": INPUT, "TaskNotifyConfig": notify, **extra})).TaskId


# --- rate limits ---------------------------------------------------------------------


def test_concurrent_load_is_limited_and_counted(emulator):
    client = emulator.ams()
    created = client.CreateAudioModerationTask(req(ams_models.CreateAudioModerationTaskRequest, {
        "Tasks": [{"DataId": "d", "Input": {"Type": "URL", "Url": "https://example.com/a.mp3"}}]}))
    describe = req(ams_models.DescribeTaskDetailRequest, {"TaskId": created.Results[0].TaskId})
    with ThreadPoolExecutor(max_workers=60) as pool:
        results = list(pool.map(lambda _: outcome(lambda: client.DescribeTaskDetail(describe)), range(60)))
    assert set(results) == {"OK", "RequestLimitExceeded"}
    stats = emulator.admin("stats")["actions"]["ams.DescribeTaskDetail"]
    assert stats["calls"] == 60 and stats["limit"] == 20
    assert stats["errors"]["RequestLimitExceeded"] == results.count("RequestLimitExceeded")
    assert stats["max_1s_window"] <= 20
    assert stats["max_1s_window_attempted"] > 20


def test_limit_override_flag_and_window_recovery(emulator):
    client = emulator.mps()
    results = [outcome(lambda: client.DescribeTasks(mps_models.DescribeTasksRequest())) for _ in range(8)]
    assert results[:5] == ["OK"] * 5 and "RequestLimitExceeded" in results[5:]
    wait_until(lambda: outcome(lambda: client.DescribeTasks(mps_models.DescribeTasksRequest())) == "OK", 3,
               "the window to slide")
    stats = emulator.admin("stats")
    assert stats["limits"]["mps.DescribeTasks"] == 5 and stats["actions"]["mps.DescribeTasks"]["max_1s_window"] <= 5


# --- API faults ------------------------------------------------------------------------


def test_forced_rate_limit_and_error_rate(emulator):
    client = emulator.mps()
    call = lambda: client.DescribeTasks(mps_models.DescribeTasksRequest())  # noqa: E731
    emulator.admin("faults", {"force_rate_limit": True})
    assert outcome(call) == "RequestLimitExceeded"
    emulator.admin("faults", {"force_rate_limit": False, "error_rate": 1.0})
    assert outcome(call) == "InternalError"
    assert emulator.admin("stats")["actions"]["mps.DescribeTasks"]["errors"] == {
        "RequestLimitExceeded": 1, "InternalError": 1}
    emulator.admin("faults", {"error_rate": 0})
    assert outcome(call) == "OK"


def test_latency(emulator):
    client = emulator.mps()
    emulator.admin("faults", {"latency": 0.4})
    started = time.monotonic()
    client.DescribeTasks(mps_models.DescribeTasksRequest())
    assert time.monotonic() - started >= 0.4


def test_calls_in_flight_and_the_admitted_calls_in_order(emulator):
    started = time.time()
    task_id = emulator.mps().ProcessMedia(req(mps_models.ProcessMediaRequest, {"InputInfo": INPUT})).TaskId
    emulator.admin("faults", {"latency": 0.8})
    describe = req(mps_models.DescribeTaskDetailRequest, {"TaskId": task_id})
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = [pool.submit(outcome, lambda: emulator.mps().DescribeTaskDetail(describe)) for _ in range(6)]

        def counters() -> dict:
            return emulator.admin("stats")["actions"].get("mps.DescribeTaskDetail", {})

        # six calls sleeping in the injected latency are in flight, admitted when they arrived
        wait_until(lambda: counters().get("in_flight") == 6, 5, "six calls in flight")
        assert len(emulator.admin("calls")["calls"][1:]) == 6
    assert [a.result() for a in answers] == ["OK"] * 6
    assert (counters()["in_flight"], counters()["max_in_flight"]) == (0, 6)
    emulator.admin("faults", {"latency": 0})
    emulator.vod().call_json("DescribeMediaInfos", {"FileIds": ["1", "2"]})
    mps = emulator.mps()
    results = [outcome(lambda: mps.DescribeTasks(mps_models.DescribeTasksRequest())) for _ in range(7)]
    assert results.count("RequestLimitExceeded") == 2  # refused by the limit of 5/s: not admitted

    calls = emulator.admin("calls")["calls"]
    assert [(c["service"], c["action"], c["task_id"], c["file_ids"]) for c in calls] == [
        ("mps", "ProcessMedia", None, None),
        *[("mps", "DescribeTaskDetail", task_id, None)] * 6,
        ("vod", "DescribeMediaInfos", None, ["1", "2"]),
        *[("mps", "DescribeTasks", None, None)] * 5,
    ]
    times = [c["at"] for c in calls]
    # Logged as admitted, stamped as they arrived (the six concurrent calls may have come in another order).
    assert started <= times[0] <= min(times[1:7]) and max(times[1:7]) <= times[7]
    assert times[7:] == sorted(times[7:]) and times[-1] <= time.time()
    assert times[7] - times[1] >= 0.8  # admitted on arrival: the latency delayed the answers that came between
    only = requests.get(emulator.url + "/_emulator/calls", params={"service": "mps", "action": "DescribeTaskDetail"},
                        timeout=5).json()["calls"]
    assert only == calls[1:7]
    assert emulator.admin("calls?action=DescribeMediaInfos")["calls"] == calls[7:8]
    assert emulator.admin("calls?service=vod&action=DescribeTasks")["calls"] == []
    emulator.admin("reset", {})
    assert emulator.admin("calls") == {"calls": []}
    assert "mps.DescribeTaskDetail" not in emulator.admin("stats")["actions"]


def test_bad_fault_update_is_refused(emulator):
    assert requests.post(emulator.url + "/_emulator/faults", json={"no_such": 1}, timeout=5).status_code == 400
    assert requests.post(emulator.url + "/_emulator/faults", json={"latency": "x"}, timeout=5).status_code == 400


def test_reset_forgets_faults_and_tasks(emulator):
    task_id = emulator.mps().ProcessMedia(req(mps_models.ProcessMediaRequest, {"InputInfo": INPUT})).TaskId
    emulator.admin("faults", {"error_rate": 1.0})
    emulator.admin("reset", {})
    assert emulator.admin("faults")["error_rate"] == 0
    assert outcome(lambda: emulator.mps().DescribeTaskDetail(
        req(mps_models.DescribeTaskDetailRequest, {"TaskId": task_id}))) == "ResourceNotFound"
    assert emulator.admin("stats")["actions"]["mps.DescribeTaskDetail"]["calls"] == 1


# --- callback faults -----------------------------------------------------------------------


def _deliveries(emulator, task_id: str) -> list[dict]:
    return [d for d in emulator.admin("stats")["callbacks"]["deliveries"] if d["task_id"] == task_id]


def test_dropped_callback(emulator, sink):
    emulator.admin("faults", {"callback_drop": 1.0})
    task_id = mps_task(emulator, sink, "/drop")
    wait_until(lambda: _deliveries(emulator, task_id), 5, "the drop to be recorded")
    assert _deliveries(emulator, task_id)[0]["outcome"] == "dropped"
    assert sink.matching(task_id) == []


def test_duplicated_callback(emulator, sink):
    emulator.admin("faults", {"callback_duplicate": 1.0})
    task_id = mps_task(emulator, sink, "/dup")
    first, second = sink.wait_for(task_id, count=2)
    for callback in (first, second):
        verify_mps_notification(callback.body, ["fk"], time.time(), 60)
    assert first.body["WorkflowTaskEvent"] == second.body["WorkflowTaskEvent"]
    assert emulator.admin("stats")["callbacks"]["counts"]["duplicated"] == 1


def test_reordered_callbacks(emulator, sink):
    emulator.admin("faults", {"callback_reorder": True})
    task_id = mps_task(emulator, sink, "/reorder", mode="Change")
    callbacks = sink.wait_for(task_id, count=2)
    assert [c.body["WorkflowTaskEvent"]["Status"] for c in callbacks] == ["FINISH", "PROCESSING"]
    for callback in callbacks:
        verify_mps_notification(callback.body, ["fk"], time.time(), 60)


def test_delayed_callback(emulator, sink):
    emulator.admin("faults", {"callback_delay": 0.6})
    created = time.monotonic()
    task_id = mps_task(emulator, sink, "/delay")
    sink.wait_for(task_id)
    assert time.monotonic() - created >= 0.3 + 0.6


def test_task_that_never_calls_back(emulator, sink):
    silent = mps_task(emulator, sink, "/silent", SessionContext="emulator:no-callback")
    emulator.admin("faults", {"never_callback": True})
    silent_by_fault = mps_task(emulator, sink, "/silent")
    emulator.admin("faults", {"never_callback": False})
    loud = mps_task(emulator, sink, "/loud")
    sink.wait_for(loud)
    client = emulator.mps()
    for task_id in (silent, silent_by_fault):
        describe = req(mps_models.DescribeTaskDetailRequest, {"TaskId": task_id})
        assert client.DescribeTaskDetail(describe).Status == "FINISH"
        assert sink.matching(task_id) == [] and _deliveries(emulator, task_id) == []


def test_faults_from_flags(tmp_path):
    emulator = EmulatorProcess(tmp_path / "flags.log", "--error-rate", "1", "--latency", "0.05",
                               "--callback-delay", "0.1", "--never-callback")
    try:
        emulator.start()
        faults = emulator.admin("faults")
        assert (faults["error_rate"], faults["latency"], faults["callback_delay"], faults["never_callback"]) == \
            (1.0, 0.05, 0.1, True)
        assert outcome(lambda: emulator.mps().DescribeTasks(mps_models.DescribeTasksRequest())) == "InternalError"
        emulator.admin("faults", {"error_rate": 0})
        emulator.admin("reset", {})
        assert emulator.admin("faults")["error_rate"] == 1.0  # reset returns to the start-up faults
    finally:
        emulator.stop()
