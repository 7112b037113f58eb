"""Installed answers: the Describe answers Tencent Cloud publishes, served key for key by the running emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from tests.emulator_fixtures import running_emulator
from tests.realworld import REALWORLD  # the repository's copy of ../shared/realworld: a clean clone has it

DESCRIBE_FILES = sorted(p for p in REALWORLD.glob("*.json") if json.loads(p.read_text())["kind"] == "describe")


def response_of(path: Path) -> dict:
    body = json.loads(path.read_text())["body"]
    return body.get("Response", body)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    yield from running_emulator(tmp_path_factory.mktemp("emu") / "emulator.log",
                                "--rate-limit", "mps.DescribeBatchTaskDetail=3")


@pytest.fixture(autouse=True)
def _reset(emulator):
    emulator.admin("reset", {})


def client(emulator, service: str):
    return {"mps": emulator.mps, "vod": emulator.vod, "ams": emulator.ams}[service]()


def install(emulator, service: str, action: str, task_id: str, response: dict) -> dict:
    return emulator.admin("answers", {"service": service, "action": action, "task_id": task_id,
                                      "response": response})


def without_request_id(response: dict) -> dict:
    return {k: v for k, v in response.items() if k != "RequestId"}


def test_the_realworld_directory_has_describe_answers():
    assert len(DESCRIBE_FILES) >= 8


@pytest.mark.parametrize("path", DESCRIBE_FILES, ids=lambda p: p.stem)
def test_an_installed_realworld_answer_comes_back_key_for_key(emulator, path):
    document, response = json.loads(path.read_text()), response_of(path)
    task_id = f"made-up-{path.stem}"
    assert install(emulator, document["product"], document["action"], task_id, response) == {
        "installed": {"service": document["product"], "action": document["action"], "task_id": task_id}}
    sdk = client(emulator, document["product"])
    first = sdk.call_json(document["action"], {"TaskId": task_id})["Response"]
    second = sdk.call_json(document["action"], {"TaskId": task_id})["Response"]
    assert without_request_id(first) == without_request_id(response)
    assert list(first) == list(response) + ([] if "RequestId" in response else ["RequestId"])  # keys in place
    assert first["RequestId"] != second["RequestId"] != response.get("RequestId")


def test_another_task_id_is_not_answered_with_it(emulator):
    response = response_of(REALWORLD / "mps_describe_taskdetail_workflowtask.json")
    install(emulator, "mps", "DescribeTaskDetail", "installed-id", response)
    with pytest.raises(TencentCloudSDKException) as error:
        emulator.mps().call_json("DescribeTaskDetail", {"TaskId": "other-id"})
    assert error.value.code == "ResourceNotFound"


def test_installed_answers_count_against_the_rate_limit_and_faults(emulator):
    response = response_of(REALWORLD / "mps_describe_batchtaskdetail.json")
    install(emulator, "mps", "DescribeBatchTaskDetail", "batch-1", response)
    codes = []
    for _ in range(6):
        try:
            emulator.mps().call_json("DescribeBatchTaskDetail", {"TaskId": "batch-1"})
            codes.append("ok")
        except TencentCloudSDKException as exc:
            codes.append(exc.code)
    assert codes.count("ok") == 3 and codes.count("RequestLimitExceeded") == 3
    calls = emulator.admin("calls")["calls"]
    assert [c["task_id"] for c in calls if c["action"] == "DescribeBatchTaskDetail"] == ["batch-1"] * 3
    emulator.admin("reset", {})
    install(emulator, "mps", "DescribeBatchTaskDetail", "batch-1", response)
    emulator.admin("faults", {"force_rate_limit": True})
    with pytest.raises(TencentCloudSDKException) as error:
        emulator.mps().call_json("DescribeBatchTaskDetail", {"TaskId": "batch-1"})
    assert error.value.code == "RequestLimitExceeded"


def test_reset_forgets_installed_answers(emulator):
    install(emulator, "ams", "DescribeTaskDetail", "w-audio-made-up",
            response_of(REALWORLD / "ams_describe_taskdetail.json"))
    assert emulator.ams().call_json("DescribeTaskDetail", {"TaskId": "w-audio-made-up"})["Response"]["Status"] \
        == "FINISH"
    emulator.admin("reset", {})
    with pytest.raises(TencentCloudSDKException) as error:
        emulator.ams().call_json("DescribeTaskDetail", {"TaskId": "w-audio-made-up"})
    assert error.value.code == "ResourceNotFound"


@pytest.mark.parametrize("body", [
    [], {"service": "mps", "action": "DescribeTaskDetail", "task_id": "t"},
    {"service": "mps", "action": "DescribeTaskDetail", "task_id": "", "response": {}},
    {"service": "mps", "action": "NoSuchAction", "task_id": "t", "response": {}},
    {"service": "mps", "action": "DescribeTaskDetail", "task_id": "t", "response": [], "extra": 1},
])
def test_a_malformed_answer_is_a_400_json_error(emulator, body):
    answer = requests.post(f"{emulator.url}/_emulator/answers", json=body, timeout=5)
    assert answer.status_code == 400 and answer.json()["error"]
    broken = requests.post(f"{emulator.url}/_emulator/answers", data=b"{not json", timeout=5)
    assert broken.status_code == 400 and broken.json()["error"]


def test_answers_flag_serves_the_files_own_task_ids(tmp_path):
    expected = {  # file -> (service, action, the task id its Response holds)
        "mps_describe_taskdetail_workflowtask.json":
            ("mps", "DescribeTaskDetail", "235303****-WorkflowTask-80108cc3380155d98b2e3573a48a******"),
        "mps_describe_batchtaskdetail.json":
            ("mps", "DescribeBatchTaskDetail", "24xxxxx-BatchTask-e6fefa34fc497xxxxxxx7det20"),
        "vod_describe_taskdetail_editmedia.json":
            ("vod", "DescribeTaskDetail", "12530394xx-procedurev2-61c975da05662fd9d3bf9d89a63361c0t0"),
        "vod_describe_taskdetail_procedure.json":
            ("vod", "DescribeTaskDetail", "12567683xx-Procedure-2e1af2456351812be963e309cc133403t0"),
        "ams_describe_taskdetail.json": ("ams", "DescribeTaskDetail", "w-audio-ZxisIxxxxiui72wo"),
    }
    for emulator in running_emulator(tmp_path / "emulator.log", "--answers", str(REALWORLD)):
        for name, (service, action, task_id) in expected.items():
            response = response_of(REALWORLD / name)
            got = client(emulator, service).call_json(action, {"TaskId": task_id})["Response"]
            assert without_request_id(got) == without_request_id(response), name
        # the start-up answers survive a reset, as the other start-up flags do
        emulator.admin("reset", {})
        service, action, task_id = expected["ams_describe_taskdetail.json"]
        assert client(emulator, service).call_json(action, {"TaskId": task_id})["Response"]["TaskId"] == task_id
