"""The worker process (`Procfile` worker:): claim due inbox records, handle, settle.

Until reconciliation lands (issue 4) the worker drains the inbox and logs
each callback; the loop already has its final shape: claim under a lease,
perform, mark done, and on SIGTERM finish the batch in hand and stop.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from receiver.config import ConfigError, load_settings
from receiver.inbox import ClaimedRecord, Inbox, open_inbox
from receiver.logs import configure_logging

log = logging.getLogger(__name__)

BATCH_SIZE = 50
LEASE_SECONDS = 60.0
IDLE_POLL_SECONDS = 0.5


class Worker:
    def __init__(self, inbox: Inbox, owner: str | None = None):
        self.inbox = inbox
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()

    def run_once(self) -> int:
        """Claim one batch and settle it; return how many records it handled."""
        claimed = self.inbox.claim(self.owner, BATCH_SIZE, LEASE_SECONDS, time.time())
        for item in claimed:
            self._handle(item)
        self.inbox.mark_done(self.owner, [c.record.id for c in claimed], time.time())
        return len(claimed)

    def _handle(self, item: ClaimedRecord) -> None:
        r = item.record
        log.info(
            "drained callback id=%s source=%s event_type=%s task_id=%s claimed_status=%s "
            "(not reconciled: reconciliation is not built yet)",
            r.id, r.source, r.event_type, r.task_id, r.claimed_status,
        )

    def run_forever(self) -> None:
        log.info("worker %s started", self.owner)
        while not self.stopping.is_set():
            if self.run_once() == 0:
                self.stopping.wait(IDLE_POLL_SECONDS)
        log.info("worker %s stopped", self.owner)


def main() -> None:
    configure_logging()
    try:
        settings = load_settings()
        inbox = open_inbox(settings)
    except ConfigError as error:
        raise SystemExit(f"configuration error: {error}") from None
    worker = Worker(inbox)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stopping.set())
    worker.run_forever()
    inbox.close()


if __name__ == "__main__":
    main()
