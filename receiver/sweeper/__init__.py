"""The missed-callback sweeper (SPEC 9): finished tasks never called back still give their event.

Every `SWEEP_INTERVAL_SECONDS` it lists the tasks of the last
`SWEEP_LOOKBACK_SECONDS` that are finished, following every page until the
token is empty:

- MPS `DescribeTasks` (`Status` FINISH, `StartTime`/`EndTime`, `ScrollToken`);
- VOD `DescribeTasks` (the `VOD_SUBAPP_ID` application, `Status` FINISH,
  `FinishTime`, `ScrollToken`);
- AMS `DescribeTasks` (`Filter.TaskStatus` FINISH, then ERROR - a failed
  moderation is final too - with `Filter.BizType` for each of `AMS_BIZTYPES`
  when set, `StartTime`/`EndTime`, `PageToken`).

Each task whose final event is not known forwarded becomes an inbox record
(`receiver.records.swept_record`, origin "sweeper"), put in a page at a
time with `inbox.accept_many()`, deduplicated like a callback: its dedup key
is the same for every sweep, so overlapping windows, restarts and one sweeper
per host add each task once.
The worker reconciles it like a callback (Describe*TaskDetail, the notify
configuration check that says an MPS task is ours, no session check) and
forwards the event its callback would have produced: same `event_id`, so a
callback arriving later is a duplicate and no consumer sees the state twice.

Which tasks are ours: for MPS, the worker rejects a swept task whose
`TaskNotifyConfig` is not URL mode pointing at this receiver
(`notify_config_mismatch`), as it would its callback. VOD notifies per
application, so every task of `VOD_SUBAPP_ID` is ours. AMS's `DescribeTasks`
and `DescribeTaskDetail` do not return a task's `CallbackUrl`, so every AMS
task is ours, or those of `AMS_BIZTYPES` when set. MPS image tasks notify
through their orchestration, which their Describe does not return: every
finished image task is ours.

The sweeper calls only `DescribeTasks`. The workers make every
Describe*TaskDetail call, strictly by priority (`receiver.inbox`
`PRIORITY_*`): a callback's first call, then look-agains, then the tasks the
sweeper found, so a swept task never goes before a live callback.
`DescribeTasks` is split: the sweeper has one half of its limit and the
workers the other (`receiver.ratelimit`), so together they never exceed it.

`listing` asks each product's `DescribeTasks`, `loop` enqueues what was never
forwarded (`Sweeper`), `report` counts it, `process` runs it
(`python -m receiver.sweeper [--once]`).
"""

from receiver.sweeper.listing import TaskLister, mps_event_type, vod_event_type
from receiver.sweeper.loop import Sweeper, build_sweeper
from receiver.sweeper.report import ProductReport, SweepReport

__all__ = ["ProductReport", "SweepReport", "Sweeper", "TaskLister", "build_sweeper", "mps_event_type", "vod_event_type"]
