"""Step 4 of the worker: a unit's Describe calls, and the verdict of each of its records.

Runs on the unit's own thread. Callbacks of one task share a call, also
with a call for the task already in flight; a final answer is remembered;
an image task with a media task's id is found where it is known
(DescribeImageTaskDetail) and remembered there.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver.batch_sessions import BatchSessionIndex
from receiver.config import Settings
from receiver.events import FINAL_STATUSES, unreconciled_event
from receiver.inbox import ClaimedRecord
from receiver.reconcile import (
    UNCONFIRMED,
    UNKNOWN_TASK,
    UNRECONCILABLE,
    Forward,
    LookAgain,
    Reject,
    image_task_call,
    judge,
    judge_file_event,
    media_infos_call,
    task_state,
)
from receiver.records import file_ids
from receiver.scheduler import Deferred, DescribeScheduler, look_again_at
from receiver.tencentcloud import DescribeCall, Failure, classify
from receiver.worker.units import Bounded, Bury, Defer, Judged, Retry, Unit, Verdict, backoff, call_key, describe_error
from schemas.describe import UnreadableAnswer

log = logging.getLogger(__name__)

NO_CREDENTIALS_RETRY_SECONDS = 30.0
MEDIA_INFOS_PER_CALL = 20  # DescribeMediaInfos takes at most 20 FileIds


class Reconciler:
    def __init__(self, settings: Settings, scheduler: DescribeScheduler | None, clock: Callable[[], float],
                 report: Callable[[str, str, str], None]):
        """`report(component, status, detail)` tells readiness how Tencent Cloud answers."""
        self.settings = settings
        self.scheduler = scheduler
        self.clock = clock
        self._report = report
        self._final_answers: dict[str, dict[str, Any]] = Bounded()
        self._asking: dict[str, Future[dict[str, Any]]] = {}  # calls in flight, by call
        self.image_tasks: dict[str, bool] = Bounded()  # WorkflowTask ids DescribeImageTaskDetail answered for
        self._memory_lock = threading.Lock()
        self._batch_sessions = BatchSessionIndex(settings.sweep_lookback_seconds, clock)
        self._sessions_lock = threading.Lock()

    def _describe(self, call: DescribeCall, priority: int) -> dict[str, Any]:
        assert self.scheduler is not None
        answer = self.scheduler.call(call, priority)
        self._report("tencentcloud", "ok", "")
        return answer

    def work(self, unit: Unit) -> Judged:
        """The verdicts of one unit; whatever goes wrong stays with its records."""
        if self.scheduler is None and unit.kind not in ("unreconcilable", "broken"):
            now = self.clock()
            return [(item, Retry("no Tencent Cloud credentials", now + NO_CREDENTIALS_RETRY_SECONDS))
                    for item in unit.items]
        if unit.kind == "broken":
            return [(item, self.failed(item, Failure.OTHER, unit.error)) for item in unit.items]
        try:
            if unit.kind == "unreconcilable":
                return [(item, self._unreconcilable(item)) for item in unit.items]
            if unit.kind == "files":
                return self._describe_files(unit.items, unit.priority)
            if unit.kind == "session":
                return self._describe_batch_by_session(unit.items[0], unit.priority)
            assert unit.call is not None
            return self._describe_task(unit.call, unit.items, unit.priority)
        except Deferred:
            return [(item, Defer()) for item in unit.items]
        except TencentCloudSDKException as error:
            failure = classify(error)
            if failure is Failure.OTHER and len(unit.items) > 1 and unit.kind == "files":
                # One file id the API refuses must not hold up the others: ask for each record alone.
                return [judged for item in unit.items for judged in self.work(Unit("files", [item]))]
            if failure is Failure.CREDENTIALS:
                self._report("tencentcloud", "failing", describe_error(error))
            return [(item, self.failed(item, failure, error)) for item in unit.items]
        except Exception as error:  # noqa: BLE001 - an answer this code cannot handle: these records alone
            log.exception("reconciling %d record(s) failed", len(unit.items))
            return [(item, self.failed(item, Failure.OTHER, error)) for item in unit.items]

    def _describe_task(self, call: DescribeCall, items: list[ClaimedRecord], priority: int) -> Judged:
        """One Describe call for every pending callback of one task."""
        call, answer = self._task_or_image_answer(call, items, priority)
        now = self.clock()
        patience = self.settings.consistency_patience_seconds
        judged: Judged = []
        for item in items:
            try:
                verdict = judge(item.record, call, answer, self.settings.receiver_public_url, now,
                                patience_left=now - item.waiting_since < patience)
            except UnreadableAnswer as error:  # Tencent's answer, not our bug: no traceback
                log.warning("callback %s: %s", item.record.id, error)
                judged.append((item, self.failed(item, Failure.OTHER, error)))
                continue
            except Exception as error:  # noqa: BLE001 - an answer this record cannot be judged by
                log.exception("judging callback %s failed", item.record.id)
                judged.append((item, self.failed(item, Failure.OTHER, error)))
                continue
            judged.append((item, self._looked(item, verdict, now, patience)))
        return judged

    def _task_or_image_answer(
        self, call: DescribeCall, items: list[ClaimedRecord], priority: int
    ) -> tuple[DescribeCall, dict[str, Any]]:
        """The task's answer, from DescribeImageTaskDetail when DescribeTaskDetail does not know a WorkflowTask."""
        try:
            return call, self._task_answer(call, priority)
        except TencentCloudSDKException as error:
            image_call = image_task_call(call, {item.record.event_type for item in items})
            if image_call is None or classify(error) is not Failure.NOT_FOUND:
                raise
        answer = self._task_answer(image_call, priority)  # not found here either: the records look again
        with self._memory_lock:  # its next callbacks go straight to the action that knows it
            self.image_tasks[image_call.params["TaskId"]] = True
        return image_call, answer

    def _task_answer(self, call: DescribeCall, priority: int) -> dict[str, Any]:
        """The task's answer: remembered when final, shared with the same call in flight when that says final.

        A final state does not change, so later callbacks of the task need no
        call of their own. Another answer may be older than this unit's
        callbacks: it is not borrowed.
        """
        key = call_key(call)
        with self._memory_lock:
            answer = self._final_answers.get(key)
            asking = self._asking.get(key) if answer is None else None
            mine = answer is None and asking is None
            if mine:
                asking = self._asking[key] = Future()
        if answer is not None:
            return answer
        assert asking is not None
        if not mine:
            shared = asking.result()  # the call in flight: its failure is this unit's too
            return shared if says_final(call, shared) else self._describe(call, priority)
        try:
            answer = self._describe(call, priority)
        except BaseException as error:
            asking.set_exception(error)
            raise
        finally:
            with self._memory_lock:
                del self._asking[key]
                if answer is not None and says_final(call, answer):
                    self._final_answers[key] = answer
        asking.set_result(answer)
        return answer

    def _describe_batch_by_session(self, item: ClaimedRecord, priority: int) -> Judged:
        """A BatchTask callback without task id: its task found through its SessionId (SPEC 6)."""
        record = item.record
        if not record.session_id:
            return [(item, Reject(UNKNOWN_TASK, "a BatchTask callback with neither task id nor SessionId"))]
        with self._sessions_lock:  # one search at a time: they share the index's refreshes
            task_id = self._batch_sessions.find(record.session_id, lambda call: self._describe(call, priority))
        if task_id is None:
            return [(item, self.failed(item, Failure.NOT_FOUND, None))]
        return self._describe_task(DescribeCall("mps", "DescribeBatchTaskDetail", {"TaskId": task_id}), [item],
                                   priority)

    def _describe_files(self, items: list[ClaimedRecord], priority: int) -> Judged:
        """VOD NewFileUpload / FileDeleted: one DescribeMediaInfos per 20 files of the unit.

        VOD deletes one file per DeleteMedia: an event naming more than 20 is
        refused unasked, so that a forged one cannot spend hundreds of calls.
        """
        wanted = {item.record.id: file_ids(item.record) for item in items}
        judged: Judged = []
        asked = []
        for item in items:
            if len(wanted[item.record.id]) > MEDIA_INFOS_PER_CALL:
                judged.append((item, Reject(UNCONFIRMED, f"the event names more than {MEDIA_INFOS_PER_CALL} files")))
            else:
                asked.append(item)
        items = asked
        unique = list(dict.fromkeys(file_id for item in items for file_id in wanted[item.record.id]))
        found: dict[str, dict[str, Any]] = {}
        missing: set[str] = set()
        for start in range(0, len(unique), MEDIA_INFOS_PER_CALL):
            answer = self._describe(media_infos_call(unique[start:start + MEDIA_INFOS_PER_CALL],
                                                     self.settings.vod_subapp_id), priority)
            for info in answer.get("MediaInfoSet") or []:
                if isinstance(info, dict) and isinstance(info.get("FileId"), str):
                    found[info["FileId"]] = info
            missing.update(i for i in answer.get("NotExistFileIdSet") or [] if isinstance(i, str))
        now = self.clock()
        patience = self.settings.not_found_patience_seconds
        for item in items:
            verdict = judge_file_event(item.record, wanted[item.record.id], found, missing, now,
                                       patience_left=now - item.waiting_since < patience)
            judged.append((item, self._looked(item, verdict, now, patience)))
        return judged

    def _unreconcilable(self, item: ClaimedRecord) -> Verdict:
        """A VOD event with neither task nor file: forwarded on its signature only if the operator asks."""
        if self.settings.vod_forward_unreconciled:
            return Forward(unreconciled_event(item.record, json.loads(item.record.body)))
        return Reject(UNRECONCILABLE, f"a {item.record.event_type!r} event names no task or file to describe")

    def _looked(self, item: ClaimedRecord, verdict: Any, now: float, patience: float) -> Verdict:
        """A lagging answer becomes a look-again, backing off within the record's patience."""
        if isinstance(verdict, LookAgain):
            return Retry(verdict.detail, look_again_at(now, item.attempts, item.waiting_since + patience))
        return verdict

    def failed(self, item: ClaimedRecord, failure: Failure, error: BaseException | None) -> Verdict:
        now, message = self.clock(), describe_error(error)
        if failure is Failure.NOT_FOUND:
            # A task created a moment ago may not be visible to Describe yet.
            patience = self.settings.not_found_patience_seconds
            if now - item.waiting_since < patience:
                return Retry(message, look_again_at(now, item.attempts, item.waiting_since + patience))
            return Reject(UNKNOWN_TASK, message)
        if failure is Failure.OTHER and item.attempts >= self.settings.max_attempts:
            log.error("callback %s is a dead letter after %d attempts: %s", item.record.id, item.attempts, message)
            return Bury(message)
        return Retry(message, now + backoff(item.attempts))


def says_final(call: DescribeCall, answer: dict[str, Any]) -> bool:
    """Whether an answer may be remembered and shared as final: it fits its schema and says a final status.

    Never raises: it runs where an answer is handed to the units waiting for
    it. An answer that does not fit is not remembered, so its record's retry
    asks Tencent Cloud afresh (and meets UnreadableAnswer again in `judge` if
    the answer still does not fit).
    """
    try:
        return task_state(call, answer).status in FINAL_STATUSES[call.service]
    except Exception:  # noqa: BLE001 - an unreadable answer is judged (and fails) in its record's own judge()
        return False
