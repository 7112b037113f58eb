"""Where a deployment keeps its state: the inbox INBOX_URL names, and beside it the ledger and the health board.

One host (`sqlite:///path`): all three in that SQLite file. Several hosts
(`sqs+<queue url>`): the queue, and the ledger and health board in the
DynamoDB table IDEMPOTENCY_TABLE.
"""

from __future__ import annotations

from receiver.health import DynamoHealthBoard, HealthBoard, SqliteHealthBoard
from receiver.inbox import Inbox
from receiver.ledger import ForwardedLedger
from receiver.timeline import SqliteTimeline, Timeline


def ledger_beside(inbox: Inbox) -> ForwardedLedger:
    from receiver.inbox.sqlite import SqliteInbox

    if isinstance(inbox, SqliteInbox):
        from receiver.ledger.sqlite import SqliteLedgerStore

        return ForwardedLedger(SqliteLedgerStore(inbox.path))
    from receiver.inbox.sqs import SqsInbox  # boto3 only where SQS is used
    from receiver.ledger.dynamodb import DynamoLedgerStore

    if isinstance(inbox, SqsInbox):
        return ForwardedLedger(DynamoLedgerStore(inbox.store))
    raise TypeError(f"no forwarded-events ledger is known beside a {type(inbox).__name__}")


def health_board_beside(inbox: Inbox) -> HealthBoard:
    from receiver.inbox.sqlite import SqliteInbox

    if isinstance(inbox, SqliteInbox):
        return SqliteHealthBoard(inbox.path)
    from receiver.inbox.sqs import SqsInbox

    if isinstance(inbox, SqsInbox):
        return DynamoHealthBoard(inbox.store)
    raise TypeError(f"no health board is known beside a {type(inbox).__name__}")


def timeline_beside(inbox: Inbox) -> Timeline:
    """The task timeline in a SQLite inbox's file; an SQS deployment keeps none."""
    from receiver.inbox.sqlite import SqliteInbox

    if isinstance(inbox, SqliteInbox):
        return SqliteTimeline(inbox.path)
    return Timeline()
