"""The change's unique id: table + primary-key tuple + change version.

Encoded as a JSON array, which is injective: every value is typed and quoted, and any
separator inside a value is escaped, so keys ('1', '23') and ('12', '3') — which the seed
system joined into the same string — can never produce the same id.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from ctstream.models.values import JsonValue


def unique_id(table: str, key: Sequence[JsonValue], version: int) -> str:
    """The id of the change of ``key`` in ``table`` at Change Tracking ``version``."""
    return orjson.dumps([table, _array(key), version]).decode("utf-8")


def encode_key(key: Sequence[JsonValue]) -> bytes:
    """The Kafka message key for a primary-key tuple (same key → same partition)."""
    return orjson.dumps(_array(key))


def _array(key: Sequence[JsonValue]) -> Sequence[JsonValue]:
    """``key`` as orjson writes an array: a tuple or list as it is, anything else listed."""
    return key if type(key) is tuple or type(key) is list else list(key)


def parse_unique_id(value: str) -> tuple[str, list[JsonValue], int]:
    """Inverse of :func:`unique_id` (for inspection and tests)."""
    table, key, version = orjson.loads(value)
    return table, key, version
