"""The intake benchmark's callback: a signed ~3 KB MPS WorkflowTask, with a placeholder for its task id."""

from __future__ import annotations

import json
import secrets
from typing import Any

from receiver.auth import sign_mps_notification

NOTIFY_KEY = "bench-key"
CALLBACK_PATH = "/callbacks/mps"
TASK_ID_PLACEHOLDER = "@@TASK_ID@@"  # also in mps_callbacks.lua
TYPICAL_TASK_ID = "bench-1-12345-r1a1b2c3d4"  # what mps_callbacks.lua sends: bench-<thread>-<n>-<nonce>
TARGET_BODY_BYTES = 3000
JSON_HEADERS = {"Content-Type": "application/json"}


def _transcode_result(definition: int, height: int, width: int, bitrate: int, size: int) -> dict[str, Any]:
    """One MediaProcessResultSet entry, shaped like MPS's TranscodeTask result."""
    path = f"/outputs/2024/05/17/a7c3e9/transcode_{definition}.mp4"
    storage = {"Type": "COS", "CosOutputStorage": {"Bucket": "media-out-1250000000", "Region": "ap-guangzhou"}}
    return {
        "Type": "Transcode",
        "TranscodeTask": {
            "Status": "SUCCESS",
            "ErrCodeExt": "",
            "ErrCode": 0,
            "Message": "SUCCESS",
            "Output": {
                "OutputStorage": storage,
                "Path": path,
                "Definition": definition,
                "Bitrate": bitrate,
                "Height": height,
                "Width": width,
                "Size": size,
                "Duration": 63.5,
                "Container": "mov,mp4,m4a,3gp,3g2,mj2",
                "Md5": secrets.token_hex(16),
                "VideoStreamSet": [
                    {"Bitrate": bitrate - 128000, "Height": height, "Width": width,
                     "Codec": "h264", "Fps": 25, "CodecTag": "avc1"},
                ],
                "AudioStreamSet": [
                    {"Bitrate": 128000, "SamplingRate": 44100, "Codec": "aac", "Channel": 2},
                ],
            },
            "Progress": 100,
            "BeginProcessTime": "2024-05-17T08:12:03Z",
            "FinishTime": "2024-05-17T08:13:41Z",
        },
        "AnimatedGraphicTask": None,
        "SnapshotByTimeOffsetTask": None,
    }


def _workflow_event() -> dict[str, Any]:
    """The WorkflowTaskEvent of a finished two-rendition transcode, TASK_ID_PLACEHOLDER as its task id."""
    return {
        "TaskId": TASK_ID_PLACEHOLDER,
        "Status": "FINISH",
        "ErrCode": 0,
        "Message": "",
        "InputInfo": {
            "Type": "COS",
            "CosInputInfo": {
                "Bucket": "media-in-1250000000",
                "Region": "ap-guangzhou",
                "Object": "/uploads/2024/05/17/a7c3e9/product-launch-keynote.mp4",
            },
            "UrlInputInfo": None,
        },
        "MetaData": {
            "Size": 187_654_321,
            "Container": "mov,mp4,m4a,3gp,3g2,mj2",
            "Bitrate": 23_645_000,
            "Height": 2160,
            "Width": 3840,
            "Duration": 63.5,
            "Rotate": 0,
            "VideoStreamSet": [
                {"Bitrate": 23_445_000, "Height": 2160, "Width": 3840, "Codec": "h264", "Fps": 25},
            ],
            "AudioStreamSet": [{"Bitrate": 192_000, "SamplingRate": 48000, "Codec": "aac"}],
            "VideoDuration": 63.5,
            "AudioDuration": 63.49,
        },
        "MediaProcessResultSet": [
            _transcode_result(100030, 720, 1280, 1_928_000, 15_302_114),
            _transcode_result(100040, 1080, 1920, 3_128_000, 24_830_927),
        ],
        "AiContentReviewResultSet": [],
        "AiAnalysisResultSet": [],
        "AiRecognitionResultSet": [],
        "AiQualityControlTaskResult": None,
    }


def build_body_template(notify_key: str = NOTIFY_KEY, now: float | None = None) -> str:
    """A signed ~3 KB WorkflowTask callback, as JSON, with TASK_ID_PLACEHOLDER as its task id.

    Real MPS callbacks of a finished transcode are about this size; a tiny body
    would understate parsing and validation. The signature covers only the
    expiry, so this one Timestamp/Sign stays valid for every task id.
    """
    body: dict[str, Any] = {
        "EventType": "WorkflowTask",
        "WorkflowTaskEvent": _workflow_event(),
        "EditMediaTaskEvent": None,
        "ScheduleTaskEvent": None,
        "BatchTaskEvent": None,
        "ExtractBlindWatermarkTask": None,
        "SessionId": "bench-session-" + secrets.token_hex(8),
        "SessionContext": "",
    }
    signed = sign_mps_notification(body, notify_key, now=now)
    # The business context a caller attaches to its task (SessionContext, at most
    # 1000 characters) brings the body to the target size.
    base = len(json.dumps(signed).replace(TASK_ID_PLACEHOLDER, TYPICAL_TASK_ID).encode())
    context = {"tenant": "bench", "asset": "a7c3e9", "pipeline": "vod-standard", "note": ""}
    padding = TARGET_BODY_BYTES - base - len(json.dumps(json.dumps(context)))
    context["note"] = ("transcode for web and mobile renditions; " * 40)[: max(padding, 0)]
    signed["SessionContext"] = json.dumps(context)
    return json.dumps(signed)
