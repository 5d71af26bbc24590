"""The change's unique id: table + primary-key tuple + change version.

Encoded as a JSON array, which is injective: every value is typed and quoted, and any
separator inside a value is escaped, so keys ('1', '23') and ('12', '3') — which the seed
system joined into the same string — can never produce the same id.

A snapshot's row is identified by its snapshot instead of a version
(``[table, key, "S:<snapshot id>"]``): a new snapshot's rows are never taken for copies of
earlier changes or of another snapshot's rows, while every copy of one snapshot row (a
chunk read again after a crash, a redundant poller's read of the same requested
snapshot) is one id, whatever version it was read at.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from ctstream.models.values import JsonValue

SNAPSHOT_MARK = "S:"


def unique_id(
    table: str, key: Sequence[JsonValue], version: int, snapshot: str | None = None
) -> str:
    """The id of the change of ``key`` in ``table`` at Change Tracking ``version``, or of
    its row as read by ``snapshot`` (an id; ``version`` is then not part of it)."""
    if snapshot is not None:
        return orjson.dumps([table, _array(key), SNAPSHOT_MARK + snapshot]).decode("utf-8")
    return orjson.dumps([table, _array(key), version]).decode("utf-8")


def snapshot_id_suffix(snapshot: str) -> str:
    """How every unique id of ``snapshot``'s rows ends (to find them with ENDS_WITH)."""
    return "," + orjson.dumps(SNAPSHOT_MARK + snapshot).decode("utf-8") + "]"


def encode_key(key: Sequence[JsonValue]) -> bytes:
    """The Kafka message key for a primary-key tuple (same key → same partition)."""
    return orjson.dumps(_array(key))


def _array(key: Sequence[JsonValue]) -> Sequence[JsonValue]:
    """``key`` as orjson writes an array: a tuple or list as it is, anything else listed."""
    return key if type(key) is tuple or type(key) is list else list(key)


def parse_unique_id(value: str) -> tuple[str, list[JsonValue], int | str]:
    """Inverse of :func:`unique_id` (for inspection and tests): (table, key, version or
    ``"S:<snapshot id>"``)."""
    table, key, version = orjson.loads(value)
    return table, key, version
