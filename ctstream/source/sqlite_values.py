"""Every SQLite value read exactly through the SQLite ODBC driver, or carried so that the
sink parks it with its reason.

The driver (sqliteodbc) converts each value to text and then to the C type it picked from
the column's *declared* type, whatever the value's storage class: REAL values keep 15
significant digits, SMALLINT and TINYINT keep 32 bits (INTEGER too unless the DSN sets
``BigInt``), a text in an INTEGER column becomes NULL, a BLOB in a TEXT column becomes
the text ``X'..'``, a date column reads anything but a date as NULL. Result columns
without a declared type (expressions) get their C type from the first row.

So each column is selected through an expression that reads the storage class its
declared type usually holds exactly (:func:`column_read`), and one more result column
per row is NULL when every value has that usual storage class, else a JSON array of
every column's storage class and exact text (``typeof``; integers as integers, reals as
``printf('%!.20g')``, which reads back to the same double, blobs as ``quote``'s
literal). Only those rare rows are rebuilt value by value (:func:`exact_value`).

A value is carried in the form its BigQuery column holds exactly, else in a form the
sink refuses, so the row is parked with the reason (``_error_records``, the error
topic): a text in an INTEGER column as that text, a real in an INTEGER column as the
float. Where the sink would take the plain form as some other value (the text ``'1_000'``
as the integer 1000, a blob as text, infinity as base64), the value travels wrapped,
``{"sqlite_text": …}``, ``{"sqlite_blob": <base64>}`` or ``{"sqlite_real": …}``, which
no BigQuery column accepts.

Texts must be UTF-8, as SQLite assumes: the reader takes the driver's UTF-8 as it is
(``SqliteDialect.configure_connection``), since its conversion to UTF-16 garbles
characters from U+100000 up.
"""

from __future__ import annotations

import base64
import decimal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from ctstream.errors import ConfigError
from ctstream.models.column_types import bigquery_type
from ctstream.models.values import normalise
from ctstream.settings import dsn_pairs

# The driver's type for a declared type is decided by the declared type's first letters.
_DRIVER_INT64 = ("int", "mediumint", "bigint")  # with BigInt=1; "inter…" is not one
_DRIVER_BOOL = ("bit", "bool")
_DRIVER_BYTES = ("blob", "varbinary", "longvarbinary")
_DRIVER_TEXT = frozenset(
    {"text", "varchar", "char", "nchar", "nvarchar", "ntext", "clob", "character"}
    | {"varying character", "native character", "nvarchar2", "sysname", "longvarchar"}
)
_TEXT_TARGETS = frozenset({"STRING", "GEOGRAPHY", "DATE", "DATETIME", "TIME", "TIMESTAMP"})
_TRUE = frozenset({"1", "yes", "true", "on"})
_FALSE = frozenset({"0", "no", "false", "off"})
# A JSON array of at most this many columns per json_array() call (SQLite's default
# limit is 127 arguments, two per column).
_CHUNK = 60
_INF = float("inf")


def connection_string(dsn: str) -> str:
    """``dsn`` with ``BigInt=1`` added: the driver then reads INTEGER columns as 64 bits
    (else 32). Refuses a DSN that turns it off (ConfigError saying what to change)."""
    value = dsn_pairs(dsn).get("bigint")
    if value is None:
        return dsn.rstrip("; \t\r\n") + ";BigInt=1"
    setting = value.strip("{}").strip().lower()
    if setting in _TRUE:
        return dsn
    if setting in _FALSE:
        raise ConfigError(
            f"source.dsn sets BigInt={setting}: the SQLite ODBC driver would read INTEGER "
            "columns as 32 bits and change larger values; remove the BigInt key (ctstream "
            "sets BigInt=1) or set BigInt=1"
        )
    raise ConfigError(
        f"source.dsn: BigInt={setting!r} is not a boolean; remove the key or set BigInt=1"
    )


class ColumnRead(NamedTuple):
    """How one column is read: ``expression`` and ``unusual`` are templates over ``{ref}``;
    ``unusual`` is true when a value's storage class is not the one ``expression`` reads
    exactly; ``convert`` turns the expression's value into the carried one (None: as it
    comes)."""

    target: str  # the BigQuery type
    expression: str
    unusual: str
    convert: Callable[[Any], Any] | None


# The empty blob, which sorts before every other blob and after every text.
_NO_BYTES = "CAST('' AS BLOB)"


def _unusual(usual: str) -> str:
    """True when a value's storage class is neither ``usual`` nor NULL.

    By SQLite's sort order (NULL < numbers < text < blob) where it is cheaper than
    ``typeof``: ``COLLATE BINARY`` so that a column's own collation (even one this
    connection lacks) plays no part. A REAL-affinity column never stores an integer.
    """
    if usual == "text":
        return f"({{ref}} COLLATE BINARY < '' OR {{ref}} >= {_NO_BYTES})"
    if usual == "real":
        return "{ref} COLLATE BINARY >= ''"
    if usual == "blob":
        return f"{{ref}} < {_NO_BYTES}"
    return f"typeof({{ref}}) NOT IN ('{usual}', 'null')"


def _real(text: str) -> Any:
    value = float(text)
    return value if -_INF < value < _INF else normalise(value)


def _blob(literal: str) -> bytes:
    """``quote(blob)``'s SQL literal ``X'00FF'`` → the bytes."""
    return bytes.fromhex(literal[2:-1])


def _quoted_bytes(text: str) -> str:
    return base64.b64encode(_blob(text)).decode("ascii")


# Text of the usual storage class only (NULL otherwise: that row takes the exact path), so
# that no blob is cast into text that is not UTF-8.
_INTEGER_TEXT = "CASE typeof({ref}) WHEN 'integer' THEN CAST({ref} AS TEXT) END"
_TEXT = "CASE typeof({ref}) WHEN 'text' THEN {ref} END"


def column_read(
    source_type: str, precision: int | None = None, scale: int | None = None
) -> ColumnRead:
    """How to read a column of ``source_type`` (its declared type) exactly."""
    target = bigquery_type(source_type, precision, scale)
    declared = " ".join(source_type.lower().split())
    first = declared.split("(")[0].strip()
    if target == "INT64":
        native = declared.startswith(_DRIVER_INT64) and not declared.startswith("inter")
        if native and "unsigned" not in declared:
            return ColumnRead(target, "{ref}", _unusual("integer"), None)
        return ColumnRead(target, _INTEGER_TEXT, _unusual("integer"), int)
    if target == "FLOAT64":
        real = "CASE WHEN {ref} IS NULL THEN NULL ELSE printf('%!.20g', {ref}) END"
        return ColumnRead(target, real, _unusual("real"), _real)
    if target == "BOOL":
        unusual = (
            "CASE typeof({ref}) WHEN 'null' THEN 0 "
            "WHEN 'integer' THEN {ref} NOT IN (0, 1) ELSE 1 END"
        )
        if declared.startswith(_DRIVER_BOOL):
            return ColumnRead(target, "{ref}", unusual, None)
        return ColumnRead(target, _INTEGER_TEXT, unusual, lambda text: text == "1")
    if target == "BYTES":
        if declared.startswith(_DRIVER_BYTES):
            return ColumnRead(target, "{ref}", _unusual("blob"), None)
        quoted = "CASE WHEN {ref} IS NULL THEN NULL ELSE quote({ref}) END"
        return ColumnRead(target, quoted, _unusual("blob"), _quoted_bytes)
    if target in _TEXT_TARGETS:
        native = target == "STRING" and first in _DRIVER_TEXT
        return ColumnRead(target, "{ref}" if native else _TEXT, _unusual("text"), None)
    # NUMERIC, BIGNUMERIC: an integer's text is exact; a real takes the exact path.
    return ColumnRead(target, _INTEGER_TEXT, _unusual("integer"), None)


def _exact_json(ref: str) -> str:
    return (
        f"typeof({ref}), CASE typeof({ref}) WHEN 'real' THEN printf('%!.20g', {ref}) "
        f"WHEN 'blob' THEN quote({ref}) ELSE {ref} END"
    )


@dataclass(frozen=True, slots=True)
class ExactRead:
    """The exact read of a result row's columns (key columns, then the others); the
    query selects ``expressions`` and then ``odd_expression``."""

    targets: tuple[str, ...]
    expressions: tuple[str, ...]
    odd_expression: str
    # Positions of the REAL columns (read as printf text; made floats by the caller), and
    # (position, convert) of the other columns whose read value needs converting.
    reals: tuple[int, ...]
    converts: tuple[tuple[int, Callable[[Any], Any]], ...]

    @classmethod
    def of(cls, columns: Sequence[tuple[str, ColumnRead]]) -> ExactRead:
        """``columns``: (quoted reference such as ``t."price"``, its read) in select order."""
        expressions = tuple(read.expression.format(ref=ref) for ref, read in columns)
        flags = " ".join(f"WHEN {read.unusual.format(ref=ref)} THEN 1" for ref, read in columns)
        chunks = [
            "json_array(" + ", ".join(_exact_json(ref) for ref, _ in columns[i : i + _CHUNK]) + ")"
            for i in range(0, len(columns), _CHUNK)
        ]
        exact = chunks[0] if len(chunks) == 1 else "json_array(" + ", ".join(chunks) + ")"
        odd = f"CASE WHEN (CASE {flags} ELSE 0 END) THEN {exact} END" if columns else "NULL"
        converted = [(i, read.convert) for i, (_, read) in enumerate(columns) if read.convert]
        return cls(
            tuple(read.target for _, read in columns),
            expressions,
            odd,
            tuple(i for i, convert in converted if convert is _real),
            tuple((i, convert) for i, convert in converted if convert is not _real),
        )

    def rebuild(self, cells: list[Any], odd: str) -> None:
        """Replace, in place, ``cells`` (a row's first ``len(cells)`` columns: all, or a
        delete's key columns) by the exact values in ``odd`` (the odd-row column's JSON)."""
        pairs: list[Any] = orjson.loads(odd)
        if len(self.targets) > _CHUNK:
            pairs = [item for chunk in pairs for item in chunk]
        targets = self.targets
        for i in range(len(cells)):
            cells[i] = exact_value(targets[i], pairs[2 * i], pairs[2 * i + 1])


def exact_value(target: str, storage_class: str, raw: Any) -> Any:
    """A value of ``storage_class`` as the odd-row path reads it (integers as int, reals
    as ``printf('%!.20g')`` text, texts as str, blobs as ``quote``'s ``X'..'``) → what the
    event carries for a BigQuery ``target`` column: the value itself in the form that
    column holds exactly, else a form the sink refuses (module docstring)."""
    if storage_class == "null":
        return None
    if storage_class == "integer":
        return _integer(target, int(raw))
    if storage_class == "real":
        return _float(target, float(raw))
    if storage_class == "text":
        return _text(target, str(raw))
    blob = base64.b64encode(_blob(str(raw))).decode("ascii")
    return blob if target == "BYTES" else {"sqlite_blob": blob}


def _integer(target: str, value: int) -> Any:
    if target in {"NUMERIC", "BIGNUMERIC", "STRING", "GEOGRAPHY"}:
        return str(value)
    if target == "BOOL" and value in (0, 1):
        return bool(value)
    if target == "FLOAT64" and float(value) != value:
        return str(value)  # FLOAT64 cannot hold it; the sink refuses text
    return value


def _float(target: str, value: float) -> Any:
    if target == "BOOL" and value in (0, 1):
        return bool(value)
    if target in {"NUMERIC", "BIGNUMERIC", "STRING", "GEOGRAPHY"}:
        # The shortest decimal that reads back as this double.
        return repr(value) if -_INF < value < _INF else normalise(value)
    if target == "BYTES" and not -_INF < value < _INF:
        return {"sqlite_real": normalise(value)}  # "Infinity" is valid base64
    return normalise(value)  # FLOAT64 holds it; the sink refuses a float elsewhere


def _text(target: str, value: str) -> Any:
    if target == "BYTES":
        return base64.b64encode(value.encode("utf-8")).decode("ascii")
    if target in _TEXT_TARGETS:
        return value
    # A text where SQLite found no number (it would have stored one): carried as text,
    # which the sink refuses with the text in its reason, unless the sink would read the
    # text as a value of the column's type (Python's int() and Decimal() take '1_000').
    if target == "INT64":
        taken = _parses(int, value)
    elif target == "FLOAT64":
        taken = value in {"NaN", "Infinity", "-Infinity"}
    elif target == "BOOL":
        taken = value in {"true", "false"}
    else:
        taken = _parses(lambda text: decimal.Decimal(text).is_finite() or None, value)
    return {"sqlite_text": value} if taken else value


def _parses(parse: Callable[[str], object], text: str) -> bool:
    try:
        return parse(text) is not None
    except (ValueError, ArithmeticError):
        return False
