"""How each SQL Server type is read so that its value arrives exactly (docs/types.md).

pyodbc returns most types as Python values that hold them exactly. The others are read
through a T-SQL expression in the column's place (:func:`select_expression`) and, for
spatial types, converted in Python (:func:`value_converter`):

- ``datetime2(7)`` and ``time(7)``: SQL Server's own text (style 121, seven fractional
  digits), because a Python ``datetime`` holds microseconds; lower precisions are read
  natively (exact).
- ``datetimeoffset``: the driver's struct, written as text with its offset and seven
  fractional digits (:func:`decode_datetimeoffset`).
- ``sql_variant``: JSON text ``{"base_type": …, "value": …}``, the value written by a
  conversion style that keeps it (17 digits for a float, style 121 for times, ``0x…``
  for binary).
- ``geography``, ``geometry``: SRID and WKB with Z and M (``AsBinaryZM``), written as
  WKT whose coordinates read back as the same doubles (``source.spatial_values``).
- ``hierarchyid``, ``xml``: their text.

Every expression names its column through ``ref`` (already quoted) and yields NULL for a
NULL value. SQL Server's CLR method names are case-sensitive.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

from ctstream.models import ColumnSpec, JsonValue
from ctstream.source.spatial_values import spatial_text

# pyodbc hands SQL Server's datetimeoffset (SQL_SS_TIMESTAMPOFFSET) over as raw bytes:
# SQL_SS_TIMESTAMPOFFSET_STRUCT = year, month, day, hour, minute, second (SQLSMALLINT /
# SQLUSMALLINT), fraction in nanoseconds (SQLUINTEGER), timezone hour, minute (SQLSMALLINT).
SQL_SS_TIMESTAMPOFFSET = -155
_DATETIMEOFFSET = struct.Struct("<6hI2h")

# The fractional-second precision a Python datetime (and BigQuery) holds.
_MICROSECOND_SCALE = 6


def decode_datetimeoffset(raw: bytes | None) -> str | None:
    """pyodbc output converter: datetimeoffset bytes → ``YYYY-MM-DD hh:mm:ss.fffffff
    +hh:mm``, SQL Server's own text of a datetimeoffset(7): the local time, all seven
    fractional digits and the offset (both offset parts carry its sign: -05:30 is
    (-5, -30))."""
    if raw is None:
        return None
    year, month, day, hour, minute, second, fraction_ns, tz_hour, tz_minute = (
        _DATETIMEOFFSET.unpack(raw)
    )
    sign = "-" if tz_hour < 0 or tz_minute < 0 else "+"
    return (
        f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}."
        f"{fraction_ns // 100:07d} {sign}{abs(tz_hour):02d}:{abs(tz_minute):02d}"
    )


def _sql_variant(ref: str) -> str:
    base = f"CAST(SQL_VARIANT_PROPERTY({ref}, 'BaseType') AS nvarchar(128))"
    by_type = {
        # Style 3: 17 (float) or 9 (real) significant digits, enough to read back the
        # same value; the default style keeps 6.
        "float": f"CONVERT(nvarchar(30), CAST({ref} AS float), 3)",
        "real": f"CONVERT(nvarchar(30), CAST({ref} AS real), 3)",
        "money": f"CONVERT(nvarchar(30), CAST({ref} AS money), 2)",
        "smallmoney": f"CONVERT(nvarchar(30), CAST({ref} AS smallmoney), 2)",
        # Style 121 keeps every fractional digit the type holds; the default style
        # rounds to the minute.
        "datetime": f"CONVERT(nvarchar(23), CAST({ref} AS datetime), 121)",
        "smalldatetime": f"CONVERT(nvarchar(23), CAST({ref} AS smalldatetime), 121)",
        "datetime2": f"CONVERT(nvarchar(27), CAST({ref} AS datetime2(7)), 121)",
        "date": f"CONVERT(nvarchar(10), CAST({ref} AS date), 23)",
        "time": f"CONVERT(nvarchar(16), CAST({ref} AS time(7)), 121)",
        "datetimeoffset": f"CONVERT(nvarchar(34), CAST({ref} AS datetimeoffset(7)), 121)",
        # Style 1: 0x followed by the bytes in hexadecimal.
        "binary": f"CONVERT(nvarchar(max), CAST({ref} AS varbinary(8000)), 1)",
        "varbinary": f"CONVERT(nvarchar(max), CAST({ref} AS varbinary(8000)), 1)",
    }
    cases = " ".join(f"WHEN '{name}' THEN {text}" for name, text in by_type.items())
    value = f"CASE {base} {cases} ELSE CONVERT(nvarchar(max), {ref}) END"
    return (
        f'CASE WHEN {ref} IS NULL THEN NULL ELSE CONCAT(N\'{{"base_type":"\', {base}, '
        f"N'\",\"value\":\"', STRING_ESCAPE({value}, 'json'), N'\"}}') END"
    )


def _spatial(ref: str) -> str:
    # binary(4) of an int is big-endian; a NULL shape has a NULL SRID, and NULL + anything
    # is NULL. A shape without WKB (a FullGlobe) arrives as its SRID alone, which the
    # conversion refuses: its row is parked rather than carried as NULL.
    no_wkb = "CAST('' AS varbinary(max))"
    return f"CAST({ref}.STSrid AS binary(4)) + COALESCE({ref}.AsBinaryZM(), {no_wkb})"


_CONVERSIONS: dict[str, Callable[[str], str]] = {
    "geography": _spatial,
    "geometry": _spatial,
    "hierarchyid": lambda ref: f"{ref}.ToString()",
    "xml": lambda ref: f"CONVERT(nvarchar(max), {ref})",
    "sql_variant": _sql_variant,
}


def _base_type(column: ColumnSpec) -> str:
    return column.source_type.split("(", 1)[0].strip().lower()


def select_expression(ref: str, column: ColumnSpec) -> str:
    """The T-SQL that reads ``column`` (quoted as ``ref``) exactly."""
    base = _base_type(column)
    if base in {"datetime2", "time"} and (column.scale or 0) > _MICROSECOND_SCALE:
        width = 27 if base == "datetime2" else 16
        return f"CONVERT(varchar({width}), {ref}, 121)"
    convert = _CONVERSIONS.get(base)
    return convert(ref) if convert else ref


def _geography(raw: Any) -> Any:
    return _shape(raw, geography=True)


def _geometry(raw: Any) -> Any:
    return _shape(raw, geography=False)


def _shape(raw: Any, *, geography: bool) -> Any:
    try:
        return spatial_text(raw, geography=geography)
    except ValueError:
        # A shape with no exact WKT (a non-finite coordinate, a type WKB lacks) travels
        # wrapped, as no BigQuery column accepts it: the sink parks its row.
        return {"mssql_shape": base64.b64encode(bytes(raw)).decode("ascii")}


def value_converter(column: ColumnSpec) -> Callable[[Any], JsonValue] | None:
    """The Python conversion of ``column``'s non-NULL values, when the driver's value is
    not yet the one carried (spatial types' bytes); None for every other type."""
    base = _base_type(column)
    if base == "geography":
        return _geography
    if base == "geometry":
        return _geometry
    return None
