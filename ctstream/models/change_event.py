"""The change event: one changed source row, as it travels through Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Literal, cast

import orjson

from ctstream.errors import BadEvent
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

# An encoded event as a Kafka record: key, value, timestamp in seconds (None: when sent).
Record = tuple[bytes | None, bytes | None, float | None]


@dataclass(slots=True, frozen=True, init=False)
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

    def __init__(
        self,
        message_unique_id: str,
        table_name: str,
        changetrack_interval: float,
        changetrack_start_time: str,
        changetrack_type: Operation,
        changetrack_ver: int,
        key: list[JsonValue],
        row: dict[str, JsonValue],
    ) -> None:
        # A frozen dataclass's own __init__ sets each field through object.__setattr__
        # (2.1 µs an event, measured); the slots' descriptors set them in a third of that.
        _set_uid(self, message_unique_id)
        _set_table(self, table_name)
        _set_interval(self, changetrack_interval)
        _set_start(self, changetrack_start_time)
        _set_op(self, changetrack_type)
        _set_ver(self, changetrack_ver)
        _set_key(self, key)
        _set_row(self, row)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.as_payload())

    def as_payload(self) -> dict[str, Any]:
        """The fields as ``parse_payload`` returns them (``to_bytes`` writes this dict)."""
        return payload_of(
            self.message_unique_id,
            self.table_name,
            self.changetrack_interval,
            self.changetrack_start_time,
            self.changetrack_type,
            self.changetrack_ver,
            self.key,
            self.row,
        )

    @classmethod
    def from_bytes(cls, data: bytes | None) -> ChangeEvent:
        """Parse and check a payload; raise BadEvent with the reason if it is not one."""
        p = parse_payload(data)
        return cls(
            p["message_unique_id"],
            p["table_name"],
            float(p["changetrack_interval"]),
            p["changetrack_start_time"],
            p["changetrack_type"],
            p["changetrack_ver"],
            p["key"],
            p["row"],
        )


def payload_of(
    message_unique_id: str,
    table_name: str,
    changetrack_interval: float,
    changetrack_start_time: str,
    changetrack_type: str,
    changetrack_ver: int,
    key: Sequence[JsonValue],
    row: dict[str, JsonValue],
) -> dict[str, Any]:
    """An event's payload dict, in the field order every event is written in.

    The poller encodes this directly, without a ChangeEvent between; dedup's
    ``peek_unique_id`` relies on the order. ``key`` may be a tuple: orjson writes it as
    the same array.
    """
    return {
        "message_unique_id": message_unique_id,
        "table_name": table_name,
        "changetrack_interval": changetrack_interval,
        "changetrack_start_time": changetrack_start_time,
        "changetrack_type": changetrack_type,
        "changetrack_ver": changetrack_ver,
        "key": key,
        "row": row,
    }


def parse_payload(data: bytes | None) -> dict[str, Any]:
    """A change event's fields as a dict, checked as ``from_bytes`` checks them.

    For the sink, which turns them into a BigQuery row and needs no ChangeEvent between.
    ``changetrack_interval`` may be an int (``from_bytes`` makes it a float). Raises
    BadEvent with the reason if the payload is not a change event.
    """
    if data is None:
        raise BadEvent("empty message (no value)")
    try:
        obj: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadEvent(f"not JSON: {exc}") from None
    # Every event the sink writes is parsed here, so the common case is one test of exact
    # types (orjson makes no subclasses; bool is not int by type); the reason for a bad
    # event is worked out only then.
    get = obj.get if type(obj) is dict else None
    if get is not None:
        uid, table, op = get("message_unique_id"), get("table_name"), get("changetrack_type")
        ver, interval = get("changetrack_ver"), get("changetrack_interval")
        start, key, row = get("changetrack_start_time"), get("key"), get("row")
        if (
            type(uid) is str
            and uid
            and type(table) is str
            and table
            and type(op) is str
            and op in OPERATIONS
            and type(ver) is int
            and (type(interval) is float or type(interval) is int)
            and type(start) is str
            and type(key) is list
            and type(row) is dict
        ):
            return cast(dict[str, Any], obj)
    raise BadEvent(_problem(obj))


def _problem(obj: Any) -> str:
    """Why a parsed payload is not a change event."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    for name in FIELDS:
        if name not in obj:
            return f"missing field {name!r}"
    uid, table, op = obj["message_unique_id"], obj["table_name"], obj["changetrack_type"]
    if not isinstance(uid, str) or not uid:
        return "message_unique_id must be a non-empty string"
    if not isinstance(table, str) or not table:
        return "table_name must be a non-empty string"
    if not isinstance(op, str) or op not in OPERATIONS:
        return f"changetrack_type must be I, U, D or S, not {op!r}"
    ver, interval = obj["changetrack_ver"], obj["changetrack_interval"]
    if not isinstance(ver, int) or isinstance(ver, bool):
        return "changetrack_ver must be an integer"
    if not isinstance(interval, int | float) or isinstance(interval, bool):
        return "changetrack_interval must be a number"
    if not isinstance(obj["changetrack_start_time"], str):
        return "changetrack_start_time must be an ISO-8601 string"
    return "key must be a list and row an object"


# The payload's fields, in the order ChangeEvent declares them.
FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ChangeEvent))

# The slots' own setters, which a frozen class's __setattr__ does not stand in front of.
(
    _set_uid,
    _set_table,
    _set_interval,
    _set_start,
    _set_op,
    _set_ver,
    _set_key,
    _set_row,
) = (getattr(ChangeEvent, name).__set__ for name in FIELDS)


# ChangeEvent.to_bytes writes the id first and the table name second (orjson keeps a
# dict's order), so an event's id can be read from its first bytes.
_ID_OPENING = b'{"message_unique_id":"'
_QUOTE, _BACKSLASH, _ESCAPED_QUOTE = b'"', b"\\", b'\\"'


@lru_cache(maxsize=1024)
def _after_id(table: str) -> bytes:
    """What follows the id in an event of ``table``: its closing quote, the table name."""
    return b'","table_name":' + orjson.dumps(table) + b","


def peek_unique_id(data: bytes | None, table: str) -> bytes | None:
    """The UTF-8 unique id of an event of ``table``, read from the payload's start only.

    For the dedup stage, which needs nothing else; the sink parses and checks the whole
    event. The id's only escapes may be quotes (an id is JSON text: ``unique_id``). None
    when the payload does not begin as ``to_bytes`` writes one — another field order,
    another table, other escapes — so the caller parses it in full (``from_bytes``), which
    gives the same id or the reason it is not an event.
    """
    if data is None or not data.startswith(_ID_OPENING):
        return None
    start = len(_ID_OPENING)
    end = data.find(_after_id(table), start)
    if end <= start:
        return None
    uid = data[start:end]
    # Every quote escaped and every backslash escaping one: a JSON string of this id.
    quotes = uid.count(_ESCAPED_QUOTE)
    if uid.count(_QUOTE) != quotes or uid.count(_BACKSLASH) != quotes:
        return None
    return uid.replace(_ESCAPED_QUOTE, _QUOTE) if quotes else uid
