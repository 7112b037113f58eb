"""`python -m receiver.deadletters list | replay [ID ...]`: the dead-letter store from the command line.

A record becomes a dead letter after MAX_ATTEMPTS failures the worker could
not explain away (a sink that keeps refusing, an unexpected API error). Fix
the cause, then replay: the records go back to pending with fresh attempts.
"""

from __future__ import annotations

import argparse
import sys
import time

from receiver.config import ConfigError, load_settings
from receiver.events import (
    iso,
)
from receiver.inbox import open_inbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m receiver.deadletters", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="show dead letters, newest first")
    listing.add_argument("--limit", type=int, default=100)
    replay = commands.add_parser("replay", help="make dead letters pending again")
    replay.add_argument("ids", nargs="*", help="record ids (default: every dead letter)")
    args = parser.parse_args(argv)
    try:
        inbox = open_inbox(load_settings())
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    if args.command == "list":
        letters = inbox.dead_letters(args.limit)
        for record, attempts, error in letters:
            print(f"{record.id}  {record.source} {record.event_type} task={record.task_id} "
                  f"received={iso(record.received_at)} attempts={attempts}  last error: {error}")
        print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    else:
        replayed = inbox.replay_dead(args.ids or None, time.time())
        print(f"replayed {replayed} dead letter(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
