"""`inspect TASK_ID`: everything the deployment knows about one task, oldest first.

From the inbox, each callback received (when, product, event type, claimed
status, the door's answer and how many copies were answered duplicate); from
the task timeline (`receiver.timeline`), each verdict the worker settled for
it: the event forwarded (its `event_id`, the authoritative status, the
Describe call, the sink and its message id), the rejection and its reason,
each look-again or retry (consecutive ones folded, with a count), the
burial. Callbacks the door refused (401, 400, 413) are not kept: their task
ids are unverified. An SQS deployment keeps no records to look up: `inspect`
says so, and lists the dead letters of the task it can see.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from receiver.inbox import StoredRecord
from receiver.timeline import Entry

NOT_KEPT_ON_SQS = ("this deployment's inbox is an SQS queue: callbacks, Describe answers and verdicts are not kept "
                   "per task; dead letters of the task are listed, and forwarded events are in the sink")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def timeline(records: list[StoredRecord], entries: list[Entry]) -> list[dict[str, Any]]:
    """One task's history, oldest first: its callbacks and its verdicts, retries folded."""
    items: list[dict[str, Any]] = []
    with_entries = {entry.record_id for entry in entries}
    for stored in records:
        record = stored.record
        items.append({
            "at": record.received_at, "record_id": record.id, "what": "callback", "source": record.source,
            "event_type": record.event_type, "claimed_status": record.claimed_status, "origin": record.origin,
            "answer": "accepted", "duplicates": stored.duplicates, "state": stored.state,
        })
        if record.id not in with_entries and stored.state in ("rejected", "dead"):
            # Settled before the timeline was kept: what the record itself says.
            items.append({"at": stored.updated_at, "record_id": record.id,
                          "what": stored.state, "reason": stored.reason, "error": stored.last_error})
    for entry in entries:
        items.append({"at": entry.at, "record_id": entry.record_id, "what": entry.kind, **entry.detail})
    items.sort(key=lambda item: item["at"])
    return _fold_retries(items)


def _fold_retries(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    folded: list[dict[str, Any]] = []
    for item in items:
        last = folded[-1] if folded else None
        if (item["what"] == "retry" and last is not None and last["what"] == "retry"
                and last["record_id"] == item["record_id"] and last.get("error") == item.get("error")):
            last["count"] = last.get("count", 1) + 1
            last["until"] = item["at"]
            continue
        folded.append(dict(item))
    return folded


def as_json(task_id: str, items: list[dict[str, Any]], note: str | None = None) -> str:
    shown = [{**item, "at": iso(item["at"]), **({"until": iso(item["until"])} if "until" in item else {})}
             for item in items]
    return json.dumps({"task_id": task_id, "timeline": shown, **({"note": note} if note else {})}, indent=2)


def as_table(task_id: str, items: list[dict[str, Any]], note: str | None = None) -> str:
    """A human table: time, record, what happened, the details."""
    rows = [("time (UTC)", "record", "what", "detail")]
    for item in items:
        rows.append((iso(item["at"]).replace("T", " ").rstrip("Z"), item["record_id"][-12:], item["what"],
                     _describe(item)))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [f"task {task_id}: {len(items)} entr{'y' if len(items) == 1 else 'ies'}"]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3])
    if not items:
        lines.append("(nothing known about this task)")
    if note:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _describe(item: dict[str, Any]) -> str:
    what = item["what"]
    if what == "callback":
        copies = f" (+{item['duplicates']} duplicate{'s' if item['duplicates'] != 1 else ''})" \
            if item["duplicates"] else ""
        origin = " [found by the sweeper]" if item.get("origin") == "sweeper" else ""
        return (f"{item['source']} {item['event_type']} claimed {item.get('claimed_status') or '-'}: "
                f"{item['answer']}{copies}{origin}; now {item['state']}")
    if what in ("forwarded", "already_forwarded"):
        via = f" via {item['sink']}" if item.get("sink") else ""
        message = f" message {item['message_id']}" if item.get("message_id") else ""
        told = "" if item.get("confirmed", True) else " (another status than the callback claimed)"
        return (f"{item.get('reconciled_with') or 'no Describe call'} says {item.get('status')}: "
                f"event {item['event_id']}{via}{message}{told}")
    if what == "rejected":
        return f"{item.get('reason')}" + (f": {item['detail']}" if item.get("detail") else "")
    if what == "retry":
        times = f" x{item['count']}" if item.get("count", 1) > 1 else ""
        return f"looked again{times}: {item.get('error')}"
    if what == "dead":
        return f"buried: {item.get('error')}"
    return json.dumps({k: v for k, v in item.items() if k not in ("at", "record_id", "what")})
