"""Helpers for programs that consume the events the SQS sink sends.

A message holds the event inline, or (when the event was over the queue's
size limit) the AWS SQS extended client's pointer to the event in S3.
`read_event` returns the event in both cases; `validate_event` checks it
against the JSON Schema published in schemas/event-v1.schema.json.

Only boto3 is needed to read events. Validation needs `jsonschema`, which
the receiver itself does not install: consumers `pip install jsonschema`.

Two things consumers should know:
- delivery is at least once: dedupe on `event_id` (the same id is the same
  state change of the same task);
- do not delete an S3 payload when its message is processed (the extended
  clients' `delete_payload_from_s3`): a resent event points at the same S3
  key, so a duplicate message would find it gone. Expire payloads with a
  bucket lifecycle rule instead, longer than the queue's retention.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from receiver.sinks.encoding import LEGACY_POINTER_CLASS, POINTER_CLASS

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "event-v1.schema.json"
_POINTER_CLASSES = (POINTER_CLASS, LEGACY_POINTER_CLASS)


def s3_pointer(body: Any) -> tuple[str, str] | None:
    """(bucket, key) when a decoded message body is an extended-client S3 pointer, else None.

    Recognised by its shape, not by the ExtendedPayloadSize attribute, so a
    consumer that did not ask for message attributes still follows it (an
    event is a JSON object, a pointer a two-item array).
    """
    if (
        isinstance(body, list)
        and len(body) == 2
        and body[0] in _POINTER_CLASSES
        and isinstance(body[1], dict)
        and isinstance(body[1].get("s3BucketName"), str)
        and isinstance(body[1].get("s3Key"), str)
    ):
        return body[1]["s3BucketName"], body[1]["s3Key"]
    return None


def read_event(message: dict[str, Any], s3_client: Any) -> dict[str, Any]:
    """The event of one SQS message (as boto3's receive_message returns it), following an S3 pointer.

    Raises ValueError when the body is neither an event nor a pointer, and the
    S3 client's error when the payload cannot be read (leave the message on
    the queue then: it comes back after its visibility timeout).
    """
    body = json.loads(message["Body"])
    pointer = s3_pointer(body)
    if pointer is not None:
        bucket, key = pointer
        answer = s3_client.get_object(Bucket=bucket, Key=key)
        body = json.loads(answer["Body"].read().decode("utf-8"))
    if not isinstance(body, dict):
        raise ValueError(f"message {message.get('MessageId')} holds no event object")
    return body


def validate_event(event: dict[str, Any], schema_path: Path | str = SCHEMA_PATH) -> None:
    """Raise jsonschema.ValidationError unless `event` is a valid normalized event v1.

    jsonschema is imported here, not at module level, because the receiver's
    runtime does not install it: only consumers that validate need it.
    """
    _validator(str(schema_path)).validate(event)


@lru_cache(maxsize=4)
def _validator(schema_path: str) -> Any:
    import jsonschema  # lazily: see validate_event

    schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
