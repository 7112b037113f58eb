"""`python -m moto.server`, with the one repair the tests need: SQS deletes that cannot lose other messages.

moto 5.2's `Queue.delete_message` rebuilds the queue's message list outside
the lock its `add_message` takes, so under concurrent requests (its server is
threaded) a message sent, or another one deleted, between the copy and the
assignment is lost: the sent message vanishes, the deleted one comes back
when its visibility runs out. Real SQS does neither. Seen here on 3 runs of
12 of `test_scale_out` (an event never arrived; a deleted record came back),
and by sending 1,500 messages while four consumers delete them: 2 to 6 deleted
messages came back each run, none with this repair. Receives stay as moto has
them: two consumers may get the same message, as SQS's at-least-once
delivery allows, and the product must (and does) absorb that.

With `MOTO_SQS_TRACE=FILE`, each SQS message's life (sent, received,
visibility changed, deleted: one line each, with the task id its body names)
is written to FILE: how a stalled record of `test_scale_out` was traced to a
lease extension racing its settle (tests/test_sqs_inbox.py).

Usage: `python -m tests.moto_serve [moto.server's arguments]`.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

from moto.server import main
from moto.sqs.models import Message, Queue

_delete_message = Queue.delete_message


def _locked_delete_message(self: Queue, receipt_handle: str) -> None:
    with self._messages_lock:  # the lock add_message holds: the list is rebuilt from what it holds now
        _delete_message(self, receipt_handle)


Queue.delete_message = _locked_delete_message  # type: ignore[method-assign]


def trace_messages(path: str) -> None:
    """One line per step of each message, appended to `path`."""
    lock = threading.Lock()
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open while the server runs

    def write(step: str, message: Message, *details: Any) -> None:
        task = re.search(r"Task-([0-9a-f]{32})", message.body or "")
        with lock:
            out.write(" ".join(map(str, (f"{time.time():.3f}", threading.get_ident(), step, message.id,
                                         task.group(1) if task else "-", *details))) + "\n")

    def wrap(cls: type, name: str, step: str, after: Any) -> None:
        original = getattr(cls, name)

        def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            after(step, self, *args, *kwargs.values())
            return result

        setattr(cls, name, traced)

    wrap(Queue, "add_message", "sent", lambda step, queue, message: write(step, message, queue.name))
    wrap(Message, "mark_received", "received",
         lambda step, message, *timeout: write(step, message, *timeout, message.approximate_receive_count))
    wrap(Message, "change_visibility", "visibility", write)
    original_delete = Queue.delete_message

    def traced_delete(self: Queue, receipt_handle: str) -> None:
        deleted = [message for message in self._messages if message.had_receipt_handle(receipt_handle)]
        original_delete(self, receipt_handle)
        for message in deleted:
            write("deleted", message, self.name)

    Queue.delete_message = traced_delete  # type: ignore[method-assign]


if __name__ == "__main__":
    if os.environ.get("MOTO_SQS_TRACE"):
        trace_messages(os.environ["MOTO_SQS_TRACE"])
    main()
