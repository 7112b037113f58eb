"""The worker: `loop` reconciles and forwards, `process` runs it (`python -m receiver.worker`)."""

from receiver.worker.loop import Worker, backoff
from receiver.worker.process import build_worker, start_in_web, stop_in_web

__all__ = ["Worker", "backoff", "build_worker", "start_in_web", "stop_in_web"]
