"""The normalized event, schema version 1 (SPEC 7), and its published JSON Schema.

`NormalizedEventSchema` validates every event before it is forwarded.
`json_schema()` derives the JSON Schema consumers validate against; the copy
checked in at `schemas/event-v1.schema.json` is regenerated with
``python -m schemas.event`` and a test fails when the two drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

SCHEMA_VERSION = 1
JSON_SCHEMA_PATH = Path(__file__).with_name("event-v1.schema.json")
SOURCES = ("mps", "vod", "ams")


def _nullable_string(description: str) -> fields.String:
    return fields.String(required=True, allow_none=True, metadata={"description": description})


def _nullable_time(description: str) -> fields.String:
    return fields.String(
        required=True, allow_none=True, metadata={"description": description, "format": "date-time"}
    )


class NormalizedEventSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True

    schema_version = fields.Integer(
        required=True, validate=validate.Equal(SCHEMA_VERSION), metadata={"const": SCHEMA_VERSION}
    )
    event_id = fields.String(
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "Same state change of the same task, same id, whichever callback led to it."},
    )
    source = fields.String(required=True, validate=validate.OneOf(SOURCES), metadata={"enum": list(SOURCES)})
    event_type = fields.String(
        required=True, metadata={"description": "The callback's EventType; AudioModeration for AMS."}
    )
    task_id = _nullable_string("Null only for VOD events about files (NewFileUpload, FileDeleted).")
    task_type = _nullable_string("TaskType (MPS, VOD) or Type (AMS) of the Describe answer.")
    status = _nullable_string("Authoritative status from the Describe answer.")
    succeeded = fields.Boolean(
        required=True, allow_none=True, metadata={"description": "Null while the task is not finished."}
    )
    error_code = _nullable_string("The task's error code, as a string; null when it succeeded.")
    error_message = _nullable_string("The task's error message; null when it succeeded.")
    session_id = _nullable_string("SessionId of the task (null for AMS).")
    session_context = _nullable_string("SessionContext of the task (null for AMS).")
    created_at = _nullable_time("When the task was created (ISO 8601).")
    started_at = _nullable_time("When the task started processing (ISO 8601).")
    finished_at = _nullable_time("When the task finished (ISO 8601).")
    received_at = _nullable_time(
        "When the first callback for this state was accepted; null for a task recovered by the sweeper."
    )
    reconciled_at = _nullable_time("When the Describe answer was read; null when nothing was described.")
    reconciled_with = _nullable_string('The Describe call, e.g. "mps:DescribeBatchTaskDetail".')
    detail = fields.Dict(
        required=True,
        allow_none=True,
        metadata={
            "description": "The Describe answer's Response object as returned, RequestId removed, secrets "
            "redacted; for an unreconciled VOD event, the callback body without its signature."
        },
    )
    # Only in the events of MPS live-stream notifications: absent, not null, elsewhere.
    notification = fields.Dict(
        required=False,
        allow_none=True,
        metadata={
            "description": "Only for MPS live-stream notifications: the notification's own result object "
            "(AiReviewResultInfo, ProcessEofInfo, ...), which no Describe call returns, secrets redacted."
        },
    )


_JSON_TYPES = {fields.String: "string", fields.Integer: "integer", fields.Boolean: "boolean", fields.Dict: "object"}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `NormalizedEventSchema`."""
    properties: dict[str, Any] = {}
    for name, field in NormalizedEventSchema().fields.items():
        json_type = _JSON_TYPES[type(field)]
        prop: dict[str, Any] = {"type": [json_type, "null"] if field.allow_none else json_type}
        prop.update(field.metadata)
        properties[name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:tencent-media-callback-receiver:event:v1",
        "title": "Normalized media task event, version 1",
        "type": "object",
        "additionalProperties": False,
        "required": [name for name, field in NormalizedEventSchema().fields.items() if field.required],
        "properties": properties,
    }


def render_json_schema() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    JSON_SCHEMA_PATH.write_text(render_json_schema())
    sys.stdout.write(f"wrote {JSON_SCHEMA_PATH}\n")
