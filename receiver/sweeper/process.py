"""`python -m receiver.sweeper [--once]`: the sweeper as a process, stopped by SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading

import receiver.sweeper
from receiver.inbox import open_configured_inbox
from receiver.logs import configure_logging
from receiver.sweeper.loop import build_sweeper

log = logging.getLogger("receiver.sweeper")


def main(argv: list[str] | None = None) -> int:
    """0 once stopped; with --once 0 when every product was listed, 1 when one failed, 2 without credentials."""
    parser = argparse.ArgumentParser(prog="python -m receiver.sweeper",
                                     description=receiver.sweeper.__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true", help="sweep once, print the report as JSON, and exit")
    args = parser.parse_args(argv)
    configure_logging()
    settings, inbox = open_configured_inbox()
    sweeper = build_sweeper(settings, inbox)
    stopping = sweeper.stopping if sweeper else threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    if sweeper is None:
        log.warning("no Tencent Cloud credentials: the sweeper has nothing to list and waits to be stopped")
        if not args.once:
            stopping.wait()
        inbox.close()
        return 0 if not args.once else 2
    if args.once:
        report = sweeper.sweep_once()
        print(json.dumps(report.as_dict()), flush=True)
        inbox.close()
        return 0 if report.ok else 1
    # A stop lets the page in hand be enqueued, then the process exits.
    sweeper.run_forever()
    inbox.close()
    return 0
