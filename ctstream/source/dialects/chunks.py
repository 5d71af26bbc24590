"""Chunked snapshot reads: the checks of a chunk's limit and bounds, the nested form of
a key range for databases without row-value comparisons (SQL Server), and each dialect's
conversion of a key as read back into the parameters it is compared with.

A chunk is the rows whose key is above the previous chunk's last key (``after``) and at
most the bound fixed when the snapshot began (``upper``), in key order, at most ``limit``
of them. Keys travel between chunks as read (JSON-native values, in key order, as in
``SourceChange.key``); ``Dialect.key_parameters`` turns them back into values that
compare with the key columns exactly as the stored values do.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import re
from collections.abc import Callable, Sequence
from typing import Any

from ctstream.models import ColumnSpec, JsonValue, TableSpec
from ctstream.models.column_types import bigquery_type


def check_limit(limit: int) -> int:
    """``limit`` when it is an int of at least 1; ValueError otherwise."""
    # type() rather than isinstance(): a bool is an int too.
    if type(limit) is not int or limit < 1:
        raise ValueError(f"snapshot chunk limit {limit!r} must be an int of at least 1")
    return limit


def key_columns(spec: TableSpec) -> tuple[ColumnSpec, ...]:
    """The key columns as the catalog describes them (masks and targets ignored: a key is
    compared as the source stores it); ValueError when the table has none."""
    keys = tuple(c for c in spec.catalog_columns if c.key_ordinal is not None)
    if not keys:
        raise ValueError(
            f"table {spec.name!r} has no primary key: chunks are ranges of the key; "
            "add a primary key or remove the table from source.tables"
        )
    return tuple(sorted(keys, key=lambda c: c.key_ordinal or 0))


def chunk_keys(
    spec: TableSpec,
    after: Sequence[object] | None,
    upper: Sequence[object],
    limit: int,
    refusal: str | None,
) -> tuple[ColumnSpec, ...]:
    """The key columns of a chunk query, once ``limit`` is valid (``check_limit``), the
    dialect did not refuse the table (``refusal``, its ``chunk_refusal``) and ``after``
    (unless None) and ``upper`` hold one value each; ValueError saying which is not."""
    check_limit(limit)
    if refusal is not None:
        raise ValueError(refusal)
    columns = key_columns(spec)
    for bound in (upper,) if after is None else (after, upper):
        if len(bound) != len(columns):
            raise ValueError(
                f"table {spec.name!r}: a chunk bound needs {len(columns)} key values, "
                f"not {len(bound)}"
            )
    return columns


def key_targets(
    spec: TableSpec, key: Sequence[JsonValue]
) -> list[tuple[ColumnSpec, str, JsonValue]]:
    """(key column, its BigQuery type, its value in ``key``) in key order; ValueError
    naming the table when ``key`` has another length or a NULL (keys never hold one)."""
    columns = key_columns(spec)
    if isinstance(key, str | bytes) or len(key) != len(columns):
        raise ValueError(
            f"table {spec.name!r}: a key of {len(columns)} columns "
            f"({', '.join(repr(c.name) for c in columns)}) was expected, not {key!r}"
        )
    found: list[tuple[ColumnSpec, str, JsonValue]] = []
    for column, value in zip(columns, key, strict=True):
        if value is None:
            raise ValueError(
                f"table {spec.name!r}: key column {column.name!r} is NULL in {key!r}; "
                "a chunk bound is a key as read, which never holds NULL"
            )
        found.append(
            (column, bigquery_type(column.source_type, column.precision, column.scale), value)
        )
    return found


def nested_range(refs: Sequence[str], markers: Sequence[str], strict: str, last: str) -> str:
    """The row-value comparison ``(refs) <strict or last> (markers)`` as comparisons of
    single columns that an index on ``refs`` can seek on its leading column:
    ``a >= ? AND (a > ? OR (b >= ? AND (b > ? OR c > ?)))`` for ``strict`` ``>`` and
    ``last`` ``>``; ``last`` is the operator of the last column (``<=`` makes the range
    include the key itself). Every column but the last refers to its marker twice: see
    :func:`nested_positions` for the key positions of the ``?`` markers in text order.
    """
    if strict not in {"<", ">"} or last not in {strict, strict + "="} or not refs:
        raise ValueError(f"nested_range: {strict!r}/{last!r} over {len(refs)} columns")
    if len(refs) != len(markers):
        raise ValueError(f"nested_range: {len(refs)} columns and {len(markers)} markers")
    text = f"{refs[-1]} {last} {markers[-1]}"
    for i in range(len(refs) - 2, -1, -1):
        inner = text if i == len(refs) - 2 else f"({text})"
        text = f"{refs[i]} {strict}= {markers[i]} AND ({refs[i]} {strict} {markers[i]} OR {inner})"
    return text


def nested_positions(count: int) -> list[int]:
    """The key position of each ``?`` of :func:`nested_range` over ``count`` columns, in
    text order (each marker holding one ``?``)."""
    return [i for i in range(count - 1) for _ in (0, 1)] + [count - 1]


# --- SQL Server ----------------------------------------------------------------------


# How a chunk bound's parameter is compared with a key column of each base type: the
# value bound (key_parameters) converted to the column's own type, so that the column is
# compared as stored (and an index on it seeks). Times travel as text because pyodbc binds
# a time without its fraction and a datetime with the precision the driver reports; text
# in 'YYYY-MM-DD…' form converts to date, datetime2 and datetimeoffset whatever the
# session's DATEFORMAT, and a datetime is reached through datetime2, since a datetime
# takes at most three fractional digits from text (and its 1/300 s ticks compare with a
# datetime2 by their exact value, not by the milliseconds read). A char or varchar column
# is compared with varchar, or SQL Server would compare its nvarchar form, which a SQL
# collation orders otherwise than the column.
MSSQL_KEY_MARKERS: dict[str, str] = {
    "tinyint": "?",
    "smallint": "?",
    "int": "?",
    "bigint": "?",
    "bit": "?",
    "decimal": "?",
    "numeric": "?",
    "money": "?",
    "smallmoney": "?",
    "float": "?",
    "real": "?",
    "nchar": "?",
    "nvarchar": "?",
    "sysname": "?",
    "binary": "?",
    "varbinary": "?",
    "rowversion": "?",
    "char": "CAST(? AS varchar(max))",
    "varchar": "CAST(? AS varchar(max))",
    "uniqueidentifier": "CAST(? AS uniqueidentifier)",
    "hierarchyid": "CAST(? AS hierarchyid)",
    "date": "CAST(? AS date)",
    "time": "CAST(? AS time(7))",
    "datetime2": "CAST(? AS datetime2(7))",
    "datetimeoffset": "CAST(? AS datetimeoffset(7))",
    "datetime": "CAST(CAST(? AS datetime2(7)) AS datetime)",
    "smalldatetime": "CAST(CAST(? AS datetime2(7)) AS smalldatetime)",
}


def base_type(column: ColumnSpec) -> str:
    """A SQL Server column's type name without its parameters, in lower case."""
    return column.source_type.split("(", 1)[0].strip().lower()


def mssql_uncomparable(column: ColumnSpec) -> str | None:
    """Why a SQL Server column cannot bound chunks (a key column, a chunk column), as a
    phrase after its name; None when a bound parameter compares with it as it is read."""
    base = base_type(column)
    if base in MSSQL_KEY_MARKERS:
        return None
    return f"is {base}, whose values a bound parameter cannot be compared with as they are read"


def _iso(parse: Callable[[str], object]) -> Callable[[Any], object]:
    """The value itself, once ``parse`` took it: text that the marker converts."""

    def check(value: Any) -> object:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not the text of a time")
        parse(value)
        return value

    return check


def _decimal(value: Any) -> object:
    number = decimal.Decimal(value) if isinstance(value, str | int) else None
    if number is None or not number.is_finite():
        raise ValueError(f"{value!r} is not the text of an exact number")
    return number


def _bytes(value: Any) -> object:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not base64 text")
    return base64.b64decode(value, validate=True)


def _typed(*types: type) -> Callable[[Any], object]:
    def check(value: Any) -> object:
        if type(value) not in types:
            raise ValueError(f"{value!r} is not a {' or '.join(t.__name__ for t in types)}")
        return value

    return check


# A key value as read (normalise: JSON-native) → the value bound, by BigQuery type.
_MSSQL_KEY_VALUES: dict[str, Callable[[Any], object]] = {
    "INT64": _typed(int),
    "FLOAT64": _typed(float, int),
    "BOOL": _typed(bool),
    "NUMERIC": _decimal,
    "BIGNUMERIC": _decimal,
    "BYTES": _bytes,
    "DATE": _iso(dt.date.fromisoformat),
    "TIME": _iso(dt.time.fromisoformat),
    "DATETIME": _iso(dt.datetime.fromisoformat),
    "STRING": _typed(str),
}


def mssql_key_value(target: str, value: Any) -> object:
    """One SQL Server key value as read → the value bound against its column, whose
    BigQuery type is ``target`` (compared through ``MSSQL_KEY_MARKERS``'s marker)."""
    return _MSSQL_KEY_VALUES.get(target, _typed(str))(value)


# --- SQLite --------------------------------------------------------------------------


def sqlite_affinity(declared: str) -> str:
    """SQLite's type affinity of a declared column type (datatype3.html §3.1)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if any(s in t for s in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


# The text of a number as the exact read carries an integer (str) or a real (repr) where
# the column's BigQuery type is text or an exact numeric: ASCII digits only.
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?")
_INFINITIES = frozenset({"Infinity", "-Infinity"})
_INT64 = range(-(2**63), 2**63)


def sqlite_key_value(column: ColumnSpec, target: str, value: Any) -> object:
    """One key value as read → the value that compares with the stored one as SQLite
    compares the column's values: the same storage class and value (texts, blobs and
    reals that the read wrapped are unwrapped; numbers the read carried as text are
    numbers again where the column's affinity would have made the text a number)."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, wrapped),) = value.items()
        if kind == "sqlite_text" and isinstance(wrapped, str):
            return wrapped
        if kind == "sqlite_blob" and isinstance(wrapped, str):
            return base64.b64decode(wrapped, validate=True)
        if kind == "sqlite_real" and isinstance(wrapped, str):
            return float(wrapped)
    if isinstance(value, bool):
        return int(value)  # a BOOL column's 0 and 1
    if isinstance(value, int | float):
        return value
    if not isinstance(value, str):
        raise ValueError(f"key column {column.name!r}: {value!r} is no value the read carries")
    if target == "BYTES":
        return base64.b64decode(value, validate=True)
    kind = sqlite_affinity(column.source_type)
    if kind in {"TEXT", "BLOB"}:
        return value
    # A numeric affinity turned every text that reads as a number into that number, and
    # an overflowing one ("1e400") into an infinity: such text was a number when stored.
    if value in _INFINITIES:
        return float(value)
    if _NUMBER.fullmatch(value):
        if "." in value or "e" in value:
            return float(value)
        number = int(value)
        return number if number in _INT64 else float(value)
    return value
