"""Callback bodies for tests, built from the seed API pages' real examples."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def seed_response(name: str) -> dict[str, Any]:
    """The ``Response`` object of a seed page's output example (tests/fixtures)."""
    return json.loads((FIXTURES / f"{name}.json").read_text())["Response"]


def mps_workflow(task_id: str = "24000089-WorkflowTask-0723542d0c164c958ba116874fa9b0c4",
                 status: str = "FINISH", session_id: str = "sess-1",
                 session_context: str = "ctx-1") -> dict[str, Any]:
    return {
        "EventType": "WorkflowTask",
        "WorkflowTaskEvent": {
            "TaskId": task_id,
            "Status": status,
            "ErrCode": 0,
            "Message": "",
            "InputInfo": {"Type": "COS", "CosInputInfo": {
                "Bucket": "bucket-test", "Region": "ap-shanghai", "Object": "/video/in.mp4"}},
            "MetaData": None,
            "MediaProcessResultSet": [],
        },
        "EditMediaTaskEvent": None,
        "ScheduleTaskEvent": None,
        "BatchTaskEvent": None,
        "ExtractBlindWatermarkTask": None,
        "SessionId": session_id,
        "SessionContext": session_context,
    }


def mps_batch_from_seed(with_task_id: bool = True) -> dict[str, Any]:
    """Seed 002 (DescribeBatchTaskDetail) as the BatchTask callback MPS sends."""
    seed = seed_response("seed002_mps_describe_batch_task_detail_example1")
    body: dict[str, Any] = {
        "EventType": "BatchTask",
        "BatchTaskEvent": copy.deepcopy(seed["BatchTaskResult"]),
        "SessionId": seed["SessionId"],
        "SessionContext": seed["SessionContext"],
    }
    if with_task_id:
        body["TaskId"] = seed["TaskId"]
    return body


# Seed 001 examples: (fixture, EventType, EventContent field, the Describe field holding the task)
VOD_SEED_EVENTS = [
    ("seed001_vod_describe_task_detail_example1", "EditMediaComplete", "EditMediaCompleteEvent", "EditMediaTask"),
    ("seed001_vod_describe_task_detail_example2", "ProcedureStateChanged",
     "ProcedureStateChangeEvent", "ProcedureTask"),
    ("seed001_vod_describe_task_detail_example3", "TranscodeComplete", "TranscodeCompleteEvent", "TranscodeTask"),
    ("seed001_vod_describe_task_detail_example4", "WechatMiniProgramPublishComplete",
     "WechatMiniProgramPublishCompleteEvent", "WechatMiniProgramPublishTask"),
]


def vod_from_seed(index: int) -> dict[str, Any]:
    fixture, event_type, field, task_field = VOD_SEED_EVENTS[index]
    task = copy.deepcopy(seed_response(fixture)[task_field])
    return {"EventType": event_type, "EventHandle": "handle-1", field: task}


def vod_new_file_upload(file_id: str = "5285890784246869930") -> dict[str, Any]:
    return {
        "EventType": "NewFileUpload",
        "FileUploadEvent": {
            "FileId": file_id,
            "MediaBasicInfo": {"Name": "small", "Type": "mp4"},
            "ProcedureTaskId": "",
            "ReviewAudioVideoTaskId": "",
            "MetaData": None,
        },
    }


def vod_file_deleted(file_ids: tuple[str, ...] = ("5285890784246869930",)) -> dict[str, Any]:
    return {
        "EventType": "FileDeleted",
        "FileDeleteEvent": {"FileIdSet": list(file_ids), "FileDeleteResultInfo": []},
    }


def ams_from_seed() -> dict[str, Any]:
    """Seed 003's TaskData, as the moderation result AMS posts."""
    return copy.deepcopy(seed_response("seed003_ams_describe_tasks_example1")["Data"][0])
