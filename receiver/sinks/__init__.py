"""Sinks: where forwarded events go, and the one encoding every sink carries.

`open_sink()` picks the sink SINK names: `log.LogSink` (JSON lines) or
`sqs.SqsSink` (SendMessageBatch, S3 pointers for large events).
"""

from __future__ import annotations

from typing import Any, Protocol

from receiver.config import Settings
from receiver.sinks.encoding import NOT_ALLOWED_BY_SQS, UnencodableEvent, encode_event
from receiver.sinks.log import RECOVERY_TAIL_BYTES, LogSink


class Sink(Protocol):
    def send(self, events: list[dict[str, Any]]) -> None:
        """Deliver every event or raise; a raise keeps them all in the inbox."""

    def recover_forwarded_ids(self) -> set[str]:
        """Event ids the sink holds already, where it can tell (after a crash between send and mark)."""


def open_sink(settings: Settings) -> Sink:
    """The sink SINK names."""
    if settings.sink == "sqs":
        from receiver.sinks.sqs import SqsSink  # boto3 only where SQS is used

        return SqsSink.from_settings(settings)
    return LogSink(settings.log_sink_path)




__all__ = [
    "NOT_ALLOWED_BY_SQS", "RECOVERY_TAIL_BYTES", "LogSink", "Sink", "UnencodableEvent", "encode_event", "open_sink",
]
