"""Which Describe call says where a record's task really stands (SPEC 6): pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any

from receiver.records import RESOLVE_BY_SESSION_ID, RESOLVE_NOTHING, CallbackRecord
from receiver.tencentcloud import DescribeCall

# MPS media task ids read "<appid>-<TaskType>-<hex>"; ProcessImage ids are a
# bare 64-character token (seed 004). A WorkflowTask callback whose id has no
# task type in it is therefore an image-processing task.
_MPS_MEDIA_TASK_ID = re.compile(r"^\d+-[A-Za-z]+-[0-9a-zA-Z]+")


def is_mps_image_task(task_id: str) -> bool:
    return not _MPS_MEDIA_TASK_ID.match(task_id)


def describe_call(
    record: CallbackRecord, vod_subapp_id: int | None = None, image_tasks: Container[str] = ()
) -> DescribeCall | None:
    """The Describe*TaskDetail call that says where the callback's task really stands.

    None for a callback with no task to describe (VOD file events) or whose
    task must first be found through its SessionId (MPS BatchTask without id).
    `image_tasks` are the ids DescribeImageTaskDetail answered for before.
    """
    if record.resolve_by in (RESOLVE_NOTHING, RESOLVE_BY_SESSION_ID) or record.task_id is None:
        return None
    params: dict[str, Any] = {"TaskId": record.task_id}
    if record.source == "mps":
        if record.event_type == "BatchTask":
            return DescribeCall("mps", "DescribeBatchTaskDetail", params)
        if record.event_type == "WorkflowTask" and (
            is_mps_image_task(record.task_id) or record.task_id in image_tasks
        ):
            return DescribeCall("mps", "DescribeImageTaskDetail", params)
        return DescribeCall("mps", "DescribeTaskDetail", params)
    if record.source == "vod":
        if vod_subapp_id is not None:
            params["SubAppId"] = vod_subapp_id
        return DescribeCall("vod", "DescribeTaskDetail", params)
    return DescribeCall("ams", "DescribeTaskDetail", params)


def image_task_call(call: DescribeCall, event_types: Container[str]) -> DescribeCall | None:
    """Where a WorkflowTask callback's task is asked for next when DescribeTaskDetail does not know it.

    An image task's id can read like a media task's (`<appid>-WorkflowTask-...`
    in Tencent's own DescribeImageTaskDetail examples): SPEC 6 asks
    DescribeImageTaskDetail before the callback is `unknown_task`.
    """
    if call.service == "mps" and call.action == "DescribeTaskDetail" and "WorkflowTask" in event_types:
        return DescribeCall("mps", "DescribeImageTaskDetail", {"TaskId": call.params["TaskId"]})
    return None


def media_infos_call(file_ids: list[str], vod_subapp_id: int | None) -> DescribeCall:
    """One DescribeMediaInfos for up to 20 files (SPEC 6)."""
    params: dict[str, Any] = {"FileIds": file_ids}
    if vod_subapp_id is not None:
        params["SubAppId"] = vod_subapp_id
    return DescribeCall("vod", "DescribeMediaInfos", params)
