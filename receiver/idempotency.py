"""The shared DynamoDB idempotency table (SPEC 8): in-progress / completed records.

Several hosts decide "has this been done?" through one table, partition key
`id` (S), TTL attribute `expires_at`. The algorithm is the one of AWS Lambda
Powertools' idempotency utility, written once here:

1. `claim(key)` is a conditional put of an `in_progress` record that names its
   owner and carries `in_progress_expires_at`. It succeeds when no record is
   there, when the record is past its TTL (DynamoDB deletes expired items
   lazily, up to days later), or when an `in_progress` record ran out (its
   owner crashed: the claim frees itself, nobody has to clean up). Otherwise
   the answer says what is there: a `completed` record (done before, with the
   data stored then) or a live `in_progress` claim - also one of this very
   process, whose threads must exclude each other as much as other hosts.
2. After the work, `complete(key)` turns the record `completed` with a long TTL.
3. When the work failed, `release(key)` deletes our own `in_progress` record,
   so the next try need not wait for the expiry.

Expiry times are compared with the caller's clock: hosts must keep their
clocks in sync (NTP), as with any lease.

A few plain helpers (`put`, `get`, `put_if_absent`, `increment`) share the
table for small shared state: rejections, their counters, worker health.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

IN_PROGRESS = "in_progress"
COMPLETED = "completed"
# Outcomes of claim(): ours now, done before, or someone else is at it.
CLAIMED = "claimed"

# The AWS clients of the inbox and the table. Bounded waits (botocore's default is 60 s a read, each
# attempt): a connection that hangs costs a worker seconds, not minutes; a pool for a web process's threads.
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=20, max_pool_connections=32)
_BATCH_WRITE_LIMIT = 25  # items per BatchWriteItem
_UNPROCESSED_ROUNDS = 8  # DynamoDB may leave some items of a batch unprocessed under load

# Attributes of the record itself; everything else is the caller's data.
_OWN_ATTRIBUTES = frozenset({"id", "status", "owner", "expires_at", "in_progress_expires_at"})

_CLAIM_CONDITION = (
    "attribute_not_exists(id) OR expires_at < :now_int"
    " OR (#status = :in_progress AND in_progress_expires_at < :now)"
)


@dataclass(frozen=True)
class Claim:
    """What claim() found: `claimed` (ours now), `completed` or `in_progress` (a live claim, not this one)."""

    outcome: str
    data: Mapping[str, str] = field(default_factory=dict)
    token: str = ""  # names this claim (owner and a nonce) for release()


class IdempotencyStore:
    """The idempotency table of one deployment, as seen by one process."""

    def __init__(self, table: str, client: Any | None = None, owner: str | None = None):
        self.table = table
        # Unique per instance: two processes never mistake each other's claims for their own.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._client = client
        self._client_pid = os.getpid() if client is not None else None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """A DynamoDB client of this process (boto3 honours AWS_ENDPOINT_URL_DYNAMODB itself)."""
        if self._client is None or self._client_pid != os.getpid():
            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = boto3.client("dynamodb", config=CLIENT_CONFIG)
                    self._client_pid = os.getpid()
        return self._client

    # --- in progress / completed ---------------------------------------------------------

    def claim(self, key: str, in_progress_seconds: float, ttl_seconds: float, now: float,
              data: Mapping[str, str] | None = None) -> Claim:
        """Take `key` for `in_progress_seconds`, or say who holds it (see the module docstring)."""
        token = f"{self.owner}:{uuid.uuid4().hex[:12]}"
        item = self._item(key, IN_PROGRESS, now + ttl_seconds, data)
        item["owner"] = {"S": token}
        item["in_progress_expires_at"] = {"N": repr(now + in_progress_seconds)}
        try:
            self.client.put_item(
                TableName=self.table, Item=item, ConditionExpression=_CLAIM_CONDITION,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":now": {"N": repr(now)}, ":now_int": {"N": str(int(now))}, ":in_progress": {"S": IN_PROGRESS},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            old = error.response.get("Item")
            if old is None:  # an old API answer without the item: read it
                old = self._get_item(key) or {}
            return _claim_of(old) if old else self.claim(key, in_progress_seconds, ttl_seconds, now, data)
        return Claim(CLAIMED, dict(data or {}), token=token)

    def complete(self, key: str, ttl_seconds: float, now: float, data: Mapping[str, str] | None = None) -> None:
        """Record `key` as done for `ttl_seconds`."""
        self.client.put_item(TableName=self.table, Item=self._item(key, COMPLETED, now + ttl_seconds, data))

    def complete_many(self, keys: Iterable[str], ttl_seconds: float, now: float) -> None:
        """complete() for many keys, 25 to a BatchWriteItem."""
        items = [self._item(key, COMPLETED, now + ttl_seconds, None) for key in dict.fromkeys(keys)]
        for start in range(0, len(items), _BATCH_WRITE_LIMIT):
            requests = [{"PutRequest": {"Item": item}} for item in items[start:start + _BATCH_WRITE_LIMIT]]
            for _ in range(_UNPROCESSED_ROUNDS):
                answer = self.client.batch_write_item(RequestItems={self.table: requests})
                requests = answer.get("UnprocessedItems", {}).get(self.table, [])
                if not requests:
                    break
            else:
                raise RuntimeError(f"DynamoDB left {len(requests)} item(s) unprocessed")

    def release(self, key: str, token: str) -> None:
        """Delete the in-progress claim `token` of `key` (a completed record, or a later claim, stays)."""
        try:
            self.client.delete_item(
                TableName=self.table, Key={"id": {"S": key}},
                ConditionExpression="#status = :in_progress AND #owner = :owner",
                ExpressionAttributeNames={"#status": "status", "#owner": "owner"},
                ExpressionAttributeValues={":in_progress": {"S": IN_PROGRESS}, ":owner": {"S": token}},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    # --- copies of a stored callback (SPEC 6: dedup never costs a genuine event) ------------

    def add_copy(self, key: str, now: float) -> bool:
        """Note that a copy of `key`'s callback was answered duplicate; False when the key is gone meanwhile."""
        try:
            self.client.update_item(
                TableName=self.table, Key={"id": {"S": key}}, ConditionExpression="attribute_exists(id)",
                UpdateExpression="ADD copies :one SET patience_from = :now",
                ExpressionAttributeValues={":one": {"N": "1"}, ":now": {"N": repr(now)}},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def release_unless_copied(self, key: str, record_id: str) -> float | None:
        """Let go of `key` held by `record_id`, unless copies were answered duplicate meanwhile.

        None when the key is released (or held by another record); else the time
        of the latest copy, and the copies are forgotten: the caller reconciles
        the record once more instead of letting go.
        """
        while True:
            try:
                self.client.delete_item(
                    TableName=self.table, Key={"id": {"S": key}},
                    ConditionExpression="record_id = :id AND attribute_not_exists(copies)",
                    ExpressionAttributeValues={":id": {"S": record_id}},
                )
                return None
            except ClientError as error:
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
            item = self._get_item(key)
            if item is None or item.get("record_id", {}).get("S") != record_id or "copies" not in item:
                return None
            try:
                self.client.update_item(
                    TableName=self.table, Key={"id": {"S": key}}, UpdateExpression="REMOVE copies, patience_from",
                    ConditionExpression="copies = :seen", ExpressionAttributeValues={":seen": item["copies"]},
                )
            except ClientError as error:
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                continue  # another copy arrived meanwhile: look again
            return float(item.get("patience_from", {}).get("N", "0"))

    # --- plain shared state ----------------------------------------------------------------

    def put_if_absent(self, key: str, data: Mapping[str, str], ttl_seconds: float, now: float) -> bool:
        """Write a completed record unless one is there; whether this call wrote it."""
        try:
            self.client.put_item(
                TableName=self.table, Item=self._item(key, COMPLETED, now + ttl_seconds, data),
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def increment(self, key: str, attribute: str, by: int = 1) -> None:
        """Add `by` to a numeric attribute of a record that never expires (a counter)."""
        self.client.update_item(
            TableName=self.table, Key={"id": {"S": key}}, UpdateExpression="ADD #a :by",
            ExpressionAttributeNames={"#a": attribute}, ExpressionAttributeValues={":by": {"N": str(by)}},
        )

    def set_attribute(self, key: str, attribute: str, value: Mapping[str, str]) -> None:
        """Set one map-valued attribute of a record, leaving its other attributes alone."""
        self.client.update_item(
            TableName=self.table, Key={"id": {"S": key}}, UpdateExpression="SET #a = :v",
            ExpressionAttributeNames={"#a": attribute},
            ExpressionAttributeValues={":v": {"M": {k: {"S": v} for k, v in value.items()}}},
        )

    def get(self, key: str) -> dict[str, Any]:
        """A record's attributes as plain Python values (numbers as int/float, maps as dicts); {} if none."""
        return {name: _plain(value) for name, value in (self._get_item(key) or {}).items()}

    # --- helpers ---------------------------------------------------------------------------

    def _get_item(self, key: str) -> dict[str, Any] | None:
        answer = self.client.get_item(TableName=self.table, Key={"id": {"S": key}}, ConsistentRead=True)
        return answer.get("Item")

    @staticmethod
    def _item(key: str, status: str, expires_at: float, data: Mapping[str, str] | None) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": {"S": key}, "status": {"S": status}, "expires_at": {"N": str(math.ceil(expires_at))},
        }
        for name, value in (data or {}).items():
            if name in _OWN_ATTRIBUTES:
                raise ValueError(f"{name!r} is an attribute of the record itself")
            item[name] = {"S": value}
        return item


def _claim_of(item: Mapping[str, Any]) -> Claim:
    status = item.get("status", {}).get("S", "")
    data = {k: v["S"] for k, v in item.items() if k not in _OWN_ATTRIBUTES and "S" in v}
    return Claim(COMPLETED if status == COMPLETED else IN_PROGRESS, data)


def _plain(value: Mapping[str, Any]) -> Any:
    (kind, raw), = value.items()
    if kind == "N":
        number = float(raw)
        return int(number) if number.is_integer() else number
    if kind == "M":
        return {k: _plain(v) for k, v in raw.items()}
    return raw
