"""Turn database values into JSON-native values, the same way everywhere.

The poller normalises every column value once, so that the unique id, the Kafka payload
and the BigQuery row all agree: bytes become base64 (BigQuery's BYTES form), exact
numerics become strings (no float rounding), times become ISO-8601 text.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from typing import Any

JsonValue = None | bool | int | float | str


def iso_utc(epoch: float) -> str:
    """Epoch seconds → ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, microseconds), as BigQuery
    reads a TIMESTAMP."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalise(value: Any) -> JsonValue:
    """One database value → its JSON-native form."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # NaN/Infinity are not JSON; keep them as the strings BigQuery accepts for FLOAT64.
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            utc = value.astimezone(dt.UTC).replace(tzinfo=None)
            return utc.isoformat(timespec="microseconds") + "Z"  # isoformat pads the year
        return str(value.isoformat(timespec="microseconds"))
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value).upper()
    raise TypeError(f"cannot represent a {type(value).__name__} value in a change event")
