"""`python -m receiver.deadletters list | replay [ID ...]`: kept for scripts; `tc-receiver dead-letters list` and
`tc-receiver replay --state dead` are the same commands.

A record becomes a dead letter after MAX_ATTEMPTS failures the worker could
not explain away (a sink that keeps refusing, an unexpected API error). Fix
the cause, then replay: the records go back to pending with fresh attempts.
"""

from __future__ import annotations

import sys

from receiver.cli import main


def translate(argv: list[str]) -> list[str]:
    """The old command line in the new one's words."""
    if argv[:1] == ["list"]:
        return ["dead-letters", "list", *argv[1:]]
    if argv[:1] == ["replay"]:
        return ["replay", "--state", "dead", *argv[1:]]
    return ["dead-letters", *argv]


if __name__ == "__main__":
    main(translate(sys.argv[1:]))
