"""Image tasks in the WorkflowTask id form: known to DescribeImageTaskDetail only, as Tencent's examples show."""

from __future__ import annotations

import re
import time

import pytest
import requests
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.mps.v20190612 import models as mps_models

from receiver.auth import verify_mps_notification
from tests.emulator_fixtures import callback_sink, req, running_emulator
from tests.servers import wait_until

INPUT = {"Type": "URL", "UrlInputInfo": {"Url": "https://example.com/in.jpeg"}}
WORKFLOW_ID = re.compile(r"\d+-WorkflowTask-[0-9a-f]{32}")


@pytest.fixture(scope="module")
def sink():
    yield from callback_sink()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory, sink):
    yield from running_emulator(tmp_path_factory.mktemp("emu") / "emulator.log", "--processing-after", "0.05",
                                "--finish-after", "0.1", "--image-task-ids", "workflow",
                                "--image-notify-url", sink.url + "/image", "--image-notify-key", "ik")


def process_image(emulator) -> str:
    return emulator.mps().ProcessImage(req(mps_models.ProcessImageRequest, {"InputInfo": INPUT})).TaskId


def test_a_workflow_form_image_task_is_found_by_describe_image_task_detail_only(emulator, sink):
    assert emulator.admin("faults")["image_task_ids"] == "workflow"
    task_id = process_image(emulator)
    assert WORKFLOW_ID.fullmatch(task_id), task_id
    client = emulator.mps()
    describe = req(mps_models.DescribeImageTaskDetailRequest, {"TaskId": task_id})
    done = wait_until(lambda: (a := client.DescribeImageTaskDetail(describe)).Status == "FINISH" and a, 5, "FINISH")
    assert done.TaskType == "WorkflowTask" and done.ImageProcessTaskResultSet[0].Status == "SUCCESS"
    with pytest.raises(TencentCloudSDKException) as error:
        client.DescribeTaskDetail(req(mps_models.DescribeTaskDetailRequest, {"TaskId": task_id}))
    assert error.value.code == "ResourceNotFound"
    [callback] = sink.wait_for(task_id)
    verify_mps_notification(callback.body, ["ik"], time.time(), 60)
    assert callback.body["EventType"] == "WorkflowTask" and callback.body["WorkflowTaskEvent"]["TaskId"] == task_id


def test_the_id_form_is_a_runtime_setting_that_reset_returns_to_its_flag(emulator):
    assert emulator.admin("faults", {"image_task_ids": "token"})["image_task_ids"] == "token"
    token_id = process_image(emulator)
    assert len(token_id) == 64 and token_id.isalnum()
    emulator.admin("reset", {})
    assert WORKFLOW_ID.fullmatch(process_image(emulator))


@pytest.mark.parametrize("value", ["bare", 1, None])
def test_an_unknown_id_form_is_refused(emulator, value):
    answer = requests.post(f"{emulator.url}/_emulator/faults", json={"image_task_ids": value}, timeout=5)
    assert answer.status_code == 400 and "image_task_ids" in answer.json()["error"]
