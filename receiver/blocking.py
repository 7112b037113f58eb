"""Run blocking calls (flock, SQLite's fsync) without stalling a gevent worker's event loop.

Under gunicorn's gevent worker every "thread" is a greenlet on one OS thread,
so a commit that waits for the disk or for another process's lock would stop
every request of the process. There, the call runs on gevent's pool of real
threads while the calling greenlet yields; elsewhere it simply runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _greenlets_stand_in_for_threads() -> bool:
    if "gevent" not in sys.modules:  # never import gevent just to ask
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("threading"))


def run_blocking(call: Callable[..., T], *args: object) -> T:
    """`call(*args)`, off the event loop when greenlets stand in for threads."""
    if _greenlets_stand_in_for_threads():
        from gevent import get_hub

        return get_hub().threadpool.apply(call, args)
    return call(*args)
