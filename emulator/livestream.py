"""Live-stream notifications: what MPS posts to a ``ProcessLiveStream`` task's NotifyUrl while it runs.

Shaped as ``ParseLiveStreamProcessNotification`` answers (``NotificationType`` instead of ``EventType``),
one result object filled and the others null, as in Tencent's example
(../shared/realworld/mps_cb_livestream_aireviewresult.json).
"""

from __future__ import annotations

import copy
from typing import Any

from emulator.tasks import FINISH, PROCESSING, Task

AI_REVIEW_RESULT = "AiReviewResult"
PROCESS_EOF = "ProcessEof"
# The result set of Tencent's AiReviewResult example: what a review of the stream found.
AI_REVIEW_RESULT_SET: list[dict[str, Any]] = [{
    "Type": "VoicePorn", "ImagePornResultSet": [], "ImageTerrorismResultSet": [], "ImagePoliticalResultSet": [],
    "VoicePornResultSet": [{"StartPtsTime": 0.266, "EndPtsTime": 4.146, "Confidence": 98, "Suggestion": "block",
                            "Label": "sexual_moan"}],
}]
RESULT_KEYS = ("ProcessEofInfo", "AiReviewResultInfo", "AiRecognitionResultInfo", "AiAnalysisResultInfo",
               "AiQualityControlResultInfo")


def notification(task: Task, notification_type: str) -> dict[str, Any]:
    """One notification (before ``Timestamp``/``Sign``) of `notification_type`: AiReviewResult or ProcessEof."""
    results: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    if notification_type == AI_REVIEW_RESULT:
        results["AiReviewResultInfo"] = {"ResultSet": copy.deepcopy(AI_REVIEW_RESULT_SET)}
    elif notification_type == PROCESS_EOF:
        results["ProcessEofInfo"] = {"ErrCode": task.err_code, "Message": task.message}
    else:
        raise ValueError(f"unknown live-stream notification {notification_type!r}")
    return {"NotificationType": notification_type, "TaskId": task.task_id, **results,
            "SessionId": task.session_id, "SessionContext": task.session_context}


def notification_type(task: Task, status: str) -> str | None:
    """Which notification a transition of a live-stream task sends: the review result once it runs (when an
    AiContentReviewTask was asked for), the end of the stream when it finishes (the task is FINISH by then)."""
    if status == FINISH:
        return PROCESS_EOF
    if status == PROCESSING and task.params.get("AiContentReviewTask") is not None:
        return AI_REVIEW_RESULT
    return None
