"""Step 2 of the worker's loop: plan claimed records into units, the records one Describe call answers.

The callbacks of one task share a call: a later callback of a task whose
unit still waits to start joins that unit. VOD file events share one
DescribeMediaInfos per 20 files. A record that cannot even be planned (a
stored body that no longer parses) is a unit of its own, and fails alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from receiver.config import Settings
from receiver.inbox import ClaimedRecord
from receiver.reconcile import describe_call
from receiver.records import RESOLVE_BY_SESSION_ID, RESOLVE_BY_TASK_ID, VOD_FILE_EVENTS, file_ids
from receiver.tencentcloud import DescribeCall
from receiver.worker.reconciling import MEDIA_INFOS_PER_CALL
from receiver.worker.units import Unit, call_key

log = logging.getLogger(__name__)


class Planner:
    def __init__(self, settings: Settings, image_tasks: Any):
        self.settings = settings
        self.image_tasks = image_tasks  # the image tasks the worker has recognised (their Describe differs)
        self._waiting_tasks: dict[str, Unit] = {}  # task units not started yet, by call

    def plan(self, claimed: list[ClaimedRecord]) -> Iterator[Unit]:
        """The new units of these records (a record joining a waiting unit makes none)."""
        files: list[tuple[ClaimedRecord, list[str]]] = []
        for item in claimed:
            try:  # a record that cannot even be planned fails alone
                unit = self._unit_of(item, files)
            except Exception as error:  # noqa: BLE001 - e.g. a stored body that no longer parses
                log.exception("callback %s cannot be planned", item.record.id)
                unit = Unit("broken", [item], error=error)
            if unit is not None:
                yield unit
        yield from file_units(files)

    def started(self, call: DescribeCall) -> None:
        """The unit of this call has started: a later callback of its task makes a unit of its own."""
        self._waiting_tasks.pop(call_key(call), None)

    def clear(self) -> None:
        self._waiting_tasks.clear()

    def _unit_of(self, item: ClaimedRecord, files: list[tuple[ClaimedRecord, list[str]]]) -> Unit | None:
        """The new unit of one record, or None when it joins a unit (its task's, or the files')."""
        record = item.record
        if record.resolve_by == RESOLVE_BY_TASK_ID and record.task_id:
            call = describe_call(record, self.settings.vod_subapp_id, self.image_tasks)
            assert call is not None
            key = call_key(call)
            unit = self._waiting_tasks.get(key)
            if unit is not None:  # its task's unit waits already: one call for both
                unit.items.append(item)
                return None
            self._waiting_tasks[key] = unit = Unit("task", [item], call)
            return unit
        if record.resolve_by == RESOLVE_BY_SESSION_ID:
            return Unit("session", [item])
        if record.source == "vod" and record.event_type in VOD_FILE_EVENTS:
            files.append((item, file_ids(record)))
            return None
        return Unit("unreconcilable", [item])


def file_units(files: list[tuple[ClaimedRecord, list[str]]]) -> Iterator[Unit]:
    """File events packed, in order, into units of at most 20 distinct files (one call each)."""
    unit, in_unit = Unit("files"), set()
    for item, ids in files:
        if unit.items and len(in_unit | set(ids)) > MEDIA_INFOS_PER_CALL:
            yield unit
            unit, in_unit = Unit("files"), set()
        unit.items.append(item)
        in_unit |= set(ids)
    if unit.items:
        yield unit
