"""SQLite values, exactly: what the event carries for each storage class and BigQuery type
is the source value itself or a form the sink refuses (the row is parked), never another
value. Pure: the SQL of the exact read runs on Python's sqlite3, not over ODBC."""

from __future__ import annotations

import base64
import contextlib
import math
import sqlite3
from decimal import Decimal
from typing import Any

import pytest
from google.cloud.bigquery import SchemaField
from hypothesis import given, settings
from hypothesis import strategies as st

from ctstream.bigquery.schema import RowValidator
from ctstream.errors import ConfigError
from ctstream.models.column_types import bigquery_type
from ctstream.source.sqlite_values import ExactRead, column_read, connection_string, exact_value

TARGETS = (
    "INT64",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "BOOL",
    "STRING",
    "GEOGRAPHY",
    "BYTES",
    "DATE",
    "DATETIME",
    "TIME",
    "TIMESTAMP",
)
# The storage class each BigQuery type holds without loss (NULL aside).
USUAL = {"INT64": "integer", "FLOAT64": "real", "STRING": "text", "BYTES": "blob"}
VALIDATORS = {t: RowValidator([SchemaField("c", t)]) for t in TARGETS}

INT64 = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([2**63 - 1, -(2**63), 2**53 + 1])
REALS = st.floats(allow_nan=False) | st.sampled_from([-0.0, 5e-324, math.inf, -math.inf])
TEXTS = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
TEXTS |= st.sampled_from(["1_000", "١٢", "NaN", "Infinity", "true", "2026-12-07", " 12 "])
BLOBS = st.binary(max_size=24)
# (storage class, value as sqlite3 returns it, the odd-row path's raw form of it)
STORED = st.one_of(
    st.just(("null", None, None)),
    INT64.map(lambda v: ("integer", v, v)),
    REALS.map(lambda v: ("real", v, repr(v))),
    TEXTS.map(lambda v: ("text", v, v)),
    BLOBS.map(lambda v: ("blob", v, f"X'{v.hex().upper()}'")),
)


def accepted(target: str, carried: Any) -> bool:
    return not VALIDATORS[target].problems({"c": carried})


def _same_number(target: str, storage_class: str, value: Any, carried: Any) -> bool:
    numbers = {"INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "STRING", "GEOGRAPHY"}
    if target not in numbers or (storage_class == "real" and target == "INT64"):
        return False
    if storage_class == "real":  # the shortest decimal that reads back as the double
        return bool(float(carried) == value)
    return bool(Decimal(carried) == value and (target != "FLOAT64" or float(carried) == value))


def same(target: str, storage_class: str, value: Any, carried: Any) -> bool:
    """Whether ``carried``, as BigQuery's ``target`` column reads it, is ``value``."""
    if storage_class == "null":
        return carried is None
    if target == "BYTES":
        raw = value.encode("utf-8") if storage_class == "text" else value
        return storage_class in {"blob", "text"} and base64.b64decode(carried) == raw
    if storage_class in {"integer", "real"} and target == "BOOL":
        return value in (0, 1) and carried is bool(value)
    if storage_class == "real" and not math.isfinite(value):
        return carried == ("Infinity" if value > 0 else "-Infinity")
    if storage_class in {"integer", "real"}:
        return _same_number(target, storage_class, value, carried)
    if storage_class == "text":
        return target not in {"INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "BOOL"} and (
            carried == value
        )
    return False


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(TARGETS), STORED)
def test_a_value_is_carried_exactly_or_refused_by_the_sink(target: str, stored: Any) -> None:
    storage_class, value, raw = stored
    carried = exact_value(target, storage_class, raw)
    if accepted(target, carried):
        assert same(target, storage_class, value, carried), (target, stored, carried)
    else:
        # Parked: only values the column's type cannot hold.
        assert USUAL.get(target) != storage_class, (target, stored, carried)
        assert storage_class != "null"


@given(INT64)
def test_integers_keep_all_64_bits(value: int) -> None:
    assert exact_value("INT64", "integer", value) == value
    assert exact_value("NUMERIC", "integer", value) == str(value)


@given(st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([-0.0, 5e-324]))
def test_reals_read_back_as_the_same_double(value: float) -> None:
    assert exact_value("FLOAT64", "real", repr(value)) == value
    assert float(exact_value("STRING", "real", repr(value))) == value


def test_what_the_sink_would_misread_travels_wrapped() -> None:
    assert exact_value("INT64", "text", "abc") == "abc"  # refused, with the text shown
    assert exact_value("INT64", "text", "1_000") == {"sqlite_text": "1_000"}  # int() takes it
    assert exact_value("NUMERIC", "text", "١٢") == {"sqlite_text": "١٢"}
    assert exact_value("BOOL", "text", "true") == {"sqlite_text": "true"}
    assert exact_value("STRING", "blob", "X'00FF'") == {"sqlite_blob": "AP8="}
    assert exact_value("BYTES", "blob", "X'00FF'") == "AP8="
    assert exact_value("BOOL", "integer", 5) == 5  # refused: not 0 or 1
    assert exact_value("FLOAT64", "real", "Inf") == "Infinity"
    assert exact_value("BYTES", "real", "-Inf") == {"sqlite_real": "-Infinity"}


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("Driver=SQLite3;Database=a.db", "Driver=SQLite3;Database=a.db;BigInt=1"),
        ("Driver=SQLite3;Database=a.db; ", "Driver=SQLite3;Database=a.db;BigInt=1"),
        ("Driver=SQLite3;bigint=Yes;Database=a.db", "Driver=SQLite3;bigint=Yes;Database=a.db"),
        ("Driver=SQLite3;BIGINT={1}", "Driver=SQLite3;BIGINT={1}"),
    ],
)
def test_the_driver_reads_integers_as_64_bits(dsn: str, expected: str) -> None:
    assert connection_string(dsn) == expected


@pytest.mark.parametrize("dsn", ["Driver=SQLite3;BigInt=0", "Driver=SQLite3;Bigint=maybe"])
def test_a_dsn_that_turns_64_bit_integers_off_is_refused(dsn: str) -> None:
    with pytest.raises(ConfigError, match="BigInt=1"):
        connection_string(dsn)


DECLARED = ["INTEGER", "SMALLINT", "REAL", "TEXT", "BLOB", "", "DECIMAL(10,2)", "BOOLEAN"]
DECLARED += ["DATE", "BINARY(4)", "uniqueidentifier", "UNSIGNED BIG INT"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[STORED] * len(DECLARED)), min_size=1, max_size=5))
def test_the_odd_row_column_is_set_exactly_when_a_value_is_unusual(rows: list[Any]) -> None:
    columns = ", ".join(f'c{i} "{t}"' if t else f"c{i}" for i, t in enumerate(DECLARED))
    reads = [column_read(t) for t in DECLARED]
    exact = ExactRead.of([(f"c{i}", read) for i, read in enumerate(reads)])
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(f"CREATE TABLE t ({columns})")
        conn.executemany(
            f"INSERT INTO t VALUES ({', '.join('?' * len(DECLARED))})",
            [[value for _, value, _ in row] for row in rows],
        )
        typeofs = ", ".join(f"typeof(c{i})" for i in range(len(DECLARED)))
        stored = conn.execute(f"SELECT {typeofs}, * FROM t ORDER BY rowid").fetchall()
        odd = [r[0] for r in conn.execute(f"SELECT {exact.odd_expression} FROM t ORDER BY rowid")]
    for classes_values, odd_json in zip(stored, odd, strict=True):
        classes, values = classes_values[: len(DECLARED)], classes_values[len(DECLARED) :]
        unusual = [
            c
            for c, read in zip(classes, reads, strict=True)
            if c != "null"
            and USUAL.get(read.target, "integer") != c
            and not (read.target == "BOOL" and c == "integer")
            and not (read.target in {"DATE", "GEOGRAPHY"} and c == "text")
        ]
        bools = [v for v, read in zip(values, reads, strict=True) if read.target == "BOOL" and v]
        if unusual or any(v not in (0, 1) for v in bools):
            assert odd_json is not None
            cells: list[Any] = [None] * len(DECLARED)
            exact.rebuild(cells, odd_json)
            for c, v, read, carried in zip(classes, values, reads, cells, strict=True):
                if accepted(read.target, carried):
                    assert same(read.target, c, v, carried), (read.target, c, v, carried)
        else:
            assert odd_json is None


def test_wide_tables_are_read_in_chunks_of_json_arrays() -> None:
    reads = [(f"c{i}", column_read("INTEGER")) for i in range(130)]
    exact = ExactRead.of(reads)
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(f"CREATE TABLE t ({', '.join(f'c{i} INTEGER' for i in range(130))})")
        conn.execute(f"INSERT INTO t VALUES ({', '.join('?' * 130)})", [*range(129), "x"])
        (odd,) = conn.execute(f"SELECT {exact.odd_expression} FROM t").fetchone()
    cells: list[Any] = [None] * 130
    exact.rebuild(cells, odd)
    assert cells == [*range(129), "x"]
    keys: list[Any] = [None] * 2  # a delete: its key columns only
    exact.rebuild(keys, odd)
    assert keys == [0, 1]


@pytest.mark.parametrize(
    ("declared", "expression"),
    [
        ("INTEGER", "{ref}"),  # the driver's BIGINT (BigInt=1)
        ("bigint", "{ref}"),
        ("SMALLINT", "CASE typeof({ref}) WHEN 'integer' THEN CAST({ref} AS TEXT) END"),
        ("TEXT", "{ref}"),
        ("DATE", "CASE typeof({ref}) WHEN 'text' THEN {ref} END"),  # not parsed by the driver
        ("BLOB", "{ref}"),
    ],
)
def test_columns_the_driver_reads_exactly_are_read_as_they_are(
    declared: str, expression: str
) -> None:
    read = column_read(declared)
    assert read.expression == expression
    assert read.target == bigquery_type(declared)
