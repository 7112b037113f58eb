"""The worker: `loop` claims, plans, starts and forwards; `reconciling` makes a unit's calls and judges them;
`units` holds what the steps hand each other; `process` runs it (`python -m receiver.worker`)."""

from receiver.worker.loop import Worker
from receiver.worker.process import build_worker, start_in_web, stop_in_web
from receiver.worker.units import backoff

__all__ = ["Worker", "backoff", "build_worker", "start_in_web", "stop_in_web"]
