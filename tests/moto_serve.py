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

Usage: `python -m tests.moto_serve [moto.server's arguments]`.
"""

from __future__ import annotations

from moto.server import main
from moto.sqs.models import Queue

_delete_message = Queue.delete_message


def _locked_delete_message(self: Queue, receipt_handle: str) -> None:
    with self._messages_lock:  # the lock add_message holds: the list is rebuilt from what it holds now
        _delete_message(self, receipt_handle)


Queue.delete_message = _locked_delete_message  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
