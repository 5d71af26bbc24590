"""The change event: one changed source row, as it travels through Kafka."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from ctstream.models.values import JsonValue

# I/U/D as Change Tracking reports them; S: the row as read by a snapshot of the table.
Operation = Literal["I", "U", "D", "S"]
OPERATIONS: frozenset[str] = frozenset({"I", "U", "D", "S"})

# Metadata every BigQuery change table carries beside the source columns; a source column
# may not use one of these names.
METADATA_COLUMNS: tuple[str, ...] = (
    "message_unique_id",
    "table_name",
    "changetrack_interval",
    "changetrack_start_time",
    "changetrack_type",
    "changetrack_ver",
    "bigquery_insert_time",
)


class BadEvent(ValueError):
    """A message that is not a valid change event (the reason says why)."""


@dataclass(slots=True, frozen=True)
class ChangeEvent:
    """One changed row. ``row`` holds the source columns (deletes: key columns only)."""

    message_unique_id: str
    table_name: str
    changetrack_interval: float  # seconds since the previous poll of this table started
    changetrack_start_time: str  # ISO-8601 UTC: when the poll that read it started
    changetrack_type: Operation
    changetrack_ver: int
    key: list[JsonValue]
    row: dict[str, JsonValue]

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "message_unique_id": self.message_unique_id,
                "table_name": self.table_name,
                "changetrack_interval": self.changetrack_interval,
                "changetrack_start_time": self.changetrack_start_time,
                "changetrack_type": self.changetrack_type,
                "changetrack_ver": self.changetrack_ver,
                "key": self.key,
                "row": self.row,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes | None) -> ChangeEvent:
        """Parse and check a payload; raise BadEvent with the reason if it is not one."""
        if data is None:
            raise BadEvent("empty message (no value)")
        try:
            obj: Any = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BadEvent(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise BadEvent("not a JSON object")
        try:
            uid, table, interval = (
                obj["message_unique_id"],
                obj["table_name"],
                obj["changetrack_interval"],
            )
            start, op, ver = (
                obj["changetrack_start_time"],
                obj["changetrack_type"],
                obj["changetrack_ver"],
            )
            key, row = obj["key"], obj["row"]
        except KeyError as exc:
            raise BadEvent(f"missing field {exc.args[0]!r}") from None
        if not isinstance(uid, str) or not uid:
            raise BadEvent("message_unique_id must be a non-empty string")
        if not isinstance(table, str) or not table:
            raise BadEvent("table_name must be a non-empty string")
        if not isinstance(op, str) or op not in OPERATIONS:
            raise BadEvent(f"changetrack_type must be I, U, D or S, not {op!r}")
        if not isinstance(ver, int) or isinstance(ver, bool):
            raise BadEvent("changetrack_ver must be an integer")
        if not isinstance(interval, int | float) or isinstance(interval, bool):
            raise BadEvent("changetrack_interval must be a number")
        if not isinstance(start, str):
            raise BadEvent("changetrack_start_time must be an ISO-8601 string")
        if not isinstance(key, list) or not isinstance(row, dict):
            raise BadEvent("key must be a list and row an object")
        operation = cast(Operation, op)
        return cls(uid, table, float(interval), start, operation, ver, key, row)


def peek_unique_id(data: bytes | None) -> str:
    """The unique id of a payload, checking no more than the dedup stage needs."""
    event = ChangeEvent.from_bytes(data)
    return event.message_unique_id
