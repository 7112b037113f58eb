"""The worker as a process: `python -m receiver.worker`, or a thread of one web process (WORKER_IN_WEB=true).

The loop itself is `receiver.worker.loop.Worker`; this module builds it from
the settings, starts it, stops it on SIGTERM / SIGINT (the records in hand
are settled or put back, none stay leased), and releases the leases of this
host's worker processes that died without a stop (kill -9, OOM).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import socket
import tempfile
import threading

from receiver.config import Settings
from receiver.inbox import Inbox, open_configured_inbox
from receiver.logs import configure_logging
from receiver.sinks import open_sink
from receiver.tencentcloud import TencentCloud
from receiver.worker.loop import Worker

log = logging.getLogger(__name__)


def build_worker(settings: Settings, inbox: Inbox) -> Worker:
    tencentcloud = None
    if settings.has_tencentcloud_credentials:
        tencentcloud = TencentCloud(settings, connections=settings.tencentcloud_max_in_flight)
        tencentcloud.warm_connections()
    else:
        log.warning("no Tencent Cloud credentials: callbacks stay in the inbox until they are set")
    return Worker(settings, inbox, open_sink(settings), tencentcloud)


def release_dead_workers_leases(worker: Worker) -> None:
    """Leases of this host's worker processes that died need not run out first."""
    host = socket.gethostname()
    for owner in worker.inbox.lease_owners():
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or owner == worker.owner or not pid.isdigit() or _process_alive(int(pid)):
            continue
        released = worker.inbox.release_leases(owner, worker.clock())
        log.warning("released %d record(s) leased by %s, which is no longer running", released, owner)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(worker: Worker) -> None:
    release_dead_workers_leases(worker)
    worker.run_forever()


_in_web: tuple[Worker, threading.Thread] | None = None


def stop_in_web(timeout: float) -> None:
    """gunicorn's worker_exit hook: let the in-web worker finish its calls in flight, so it leaves no lease."""
    if _in_web is not None:
        worker, thread = _in_web
        worker.stopping.set()
        thread.join(timeout)


def start_in_web(settings: Settings, inbox: Inbox) -> threading.Thread | None:
    """WORKER_IN_WEB=true: one web process per host runs the worker as a thread.

    The process that takes the host's worker lock runs it; if it dies, the
    kernel drops the lock and the process gunicorn starts in its place takes over.
    """
    path = settings.sqlite_path
    if path is not None:
        lock_path = f"{path}.worker.lock"
    else:  # an SQS inbox: one worker per host and inbox queue
        digest = hashlib.sha256(settings.inbox_url.encode()).hexdigest()[:16]
        lock_path = os.path.join(tempfile.gettempdir(), f"receiver-worker-{digest}.lock")
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        return None
    global _in_web
    worker = build_worker(settings, inbox)
    thread = threading.Thread(target=_run, args=(worker,), name="worker-in-web", daemon=True)
    thread.start()
    _in_web = (worker, thread)
    return thread


def main() -> None:
    configure_logging()
    settings, inbox = open_configured_inbox()
    worker = build_worker(settings, inbox)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stopping.set())
    _run(worker)
    inbox.close()
