"""How an event is written: the one JSON every sink carries, and the SQS message around it.

`encode_event` is the body of every sink. The rest is the SQS message's
shape, pure functions the SQS sink sends and `receiver.consumer` reads back:
the filterable attributes, a FIFO queue's group, the size SQS counts against
its limit, and the AWS extended client's pointer to a large event in S3.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Characters SQS accepts in a body or attribute value: #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF.
# Outside them (a lone surrogate, U+FFFE, control characters) a body is written with JSON escapes.
NOT_ALLOWED_BY_SQS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class UnencodableEvent(ValueError):
    """The event cannot be written as standard JSON (NaN or Infinity, nesting past the encoder's limit)."""


def encode_event(event: dict[str, Any]) -> str:
    """The event as compact, standard JSON that every sink can carry.

    UTF-8 is kept as is (smaller than \\u escapes, which matters against SQS's
    size limit), unless the text holds a character that UTF-8 or SQS refuses:
    then the whole text is ASCII with JSON escapes, which decodes to the very
    same event. NaN and Infinity, which JSON has no words for, raise
    UnencodableEvent: the worker then retries and buries that event's record
    alone.
    """
    try:
        text = json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        if NOT_ALLOWED_BY_SQS.search(text):
            text = json.dumps(event, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (ValueError, RecursionError) as error:
        raise UnencodableEvent(f"event {event.get('event_id')} is not standard JSON: {error}") from None
    return text


# --- the SQS message around it ---------------------------------------------------------

# The extended client's wire format (payloadoffloading-common, PayloadS3Pointer).
POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
LEGACY_POINTER_CLASS = "com.amazon.sqs.javamessaging.MessageS3Pointer"  # written by old Java clients
PAYLOAD_SIZE_ATTRIBUTE = "ExtendedPayloadSize"
LEGACY_PAYLOAD_SIZE_ATTRIBUTE = "SQSLargePayloadSize"

# The event's fields a consumer can filter on without parsing the body (SNS, EventBridge Pipes).
ATTRIBUTE_KEYS = ("source", "event_type", "status", "task_id")
S3_KEY_PREFIX = "events/"


def message_attributes(event: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The `source`, `event_type`, `status`, `task_id` String attributes of an event.

    A null or empty value is left out: SQS refuses empty attribute values, and
    a missing attribute is how filters see "no value". So is a value with a
    character SQS refuses; the body still holds it exactly.
    """
    attributes = {}
    for key in ATTRIBUTE_KEYS:
        value = event.get(key)
        if value is None or value == "":
            continue
        text = str(value)
        if NOT_ALLOWED_BY_SQS.search(text):
            continue
        attributes[key] = {"DataType": "String", "StringValue": text}
    return attributes


def message_group(event: dict[str, Any]) -> str:
    """A FIFO queue's group: the task, or for a VOD file event its file (SPEC 7), so each stays in order."""
    if event.get("task_id"):
        return str(event["task_id"])
    detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
    files = detail.get("NotExistFileIdSet") if isinstance(detail.get("NotExistFileIdSet"), list) else []
    file_id = detail.get("FileId") or (sorted(map(str, files))[0] if files else None)
    return str(file_id) if file_id else event["event_id"]


def message_size(body: str, attributes: dict[str, dict[str, str]]) -> int:
    """The size SQS checks against MaximumMessageSize: the body plus each attribute's name, type and value."""
    size = len(body.encode("utf-8"))
    for name, attribute in attributes.items():
        size += len(name.encode("utf-8")) + len(attribute["DataType"].encode("utf-8"))
        size += len(attribute.get("StringValue", "").encode("utf-8"))
    return size


def s3_pointer_body(bucket: str, key: str) -> str:
    """The body of a message whose payload is in S3, exactly as the extended client libraries write it.

    Written here rather than through the `amazon-sqs-extended-client` package
    (1.0.1), which does not fit a sink: importing it replaces `boto3.Session`
    in the whole process (every SQS client of the receiver, the inbox's too,
    would be patched); its offload threshold is a fixed 256 KiB rather than the
    queue's `MaximumMessageSize` (1 KiB to 1 MiB); its S3 keys are random
    unless an extra `S3Key` attribute is sent along on every message; and it
    rewrites the batch entries in place, so a retried entry that was offloaded
    once is refused the second time ("ExtendedPayloadSize" already present).
    The format itself is two lines; tests check that the library reads it.
    """
    return json.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}], separators=(",", ":"))


def s3_key_for(event_id: str) -> str:
    """Deterministic, so that a resent event overwrites its payload instead of leaving a second copy."""
    return f"{S3_KEY_PREFIX}{event_id}.json"
