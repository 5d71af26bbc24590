"""Every SQLite value through the real reader (SQLite ODBC driver + aioodbc) arrives as it
is stored, or in a form the sink refuses so that its row is parked; and end to end, into
the BigQuery emulator, with the bad row in ``_error_records``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from google.cloud.bigquery import SchemaField
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctstream.bigquery.schema import RowValidator
from ctstream.models.column_types import bigquery_type
from ctstream.settings import SourceSettings
from ctstream.source.reader import SourceReader
from ctstream.source.sqlite_tracking import track_database

pytestmark = pytest.mark.integration

# Declared types: SQL Server names, SQLite affinities, and ones the driver reads oddly.
DECLARED = ["INTEGER", "SMALLINT", "BIGINT", "UNSIGNED BIG INT", "REAL", "DOUBLE", "TEXT"]
DECLARED += ["VARCHAR(10)", "BLOB", "BINARY(4)", "", "DECIMAL(10,2)", "NUMERIC", "BOOLEAN"]
DECLARED += ["DATE", "DATETIME", "uniqueidentifier", "datetimeoffset"]
TARGETS = [bigquery_type(t) for t in DECLARED]
USUAL = {"INT64": "integer", "FLOAT64": "real", "STRING": "text", "BYTES": "blob"}

INT64 = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([2**63 - 1, -(2**63), 2**53 + 1])
# NaN cannot be stored: SQLite stores NULL for it (and reads NULL back); ±infinity is
# stored, and arrives as FLOAT64's "Infinity"/"-Infinity".
SPECIAL = [-0.0, 5e-324, 0.1 + 0.2, 1765108160.1234567, math.inf, -math.inf, math.nan]
REALS = st.floats() | st.sampled_from(SPECIAL)
TEXTS = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
TEXTS |= st.sampled_from(["abc", "1_000", "2026-12-07", "true", "X'00'", "é中😀"])
VALUES = st.one_of(st.none(), INT64, REALS, TEXTS, st.binary(max_size=24))
ROW = st.tuples(*[VALUES] * len(DECLARED))


def carried_is_source(target: str, storage_class: str, value: Any, carried: Any) -> bool:
    """Whether BigQuery's ``target`` column, given ``carried``, holds the stored value."""
    if storage_class == "null":
        return carried is None
    if target == "BYTES":
        raw = value.encode("utf-8") if storage_class == "text" else value
        return storage_class in {"blob", "text"} and base64.b64decode(carried) == raw
    if target == "BOOL":
        return storage_class == "integer" and value in (0, 1) and carried is bool(value)
    if storage_class == "real" and math.isinf(value):
        infinite = "Infinity" if value > 0 else "-Infinity"  # as FLOAT64 reads it, or text
        return target in {"FLOAT64", "STRING", "GEOGRAPHY"} and carried == infinite
    if storage_class == "real":
        # -0.0 == 0.0: SQLite's own text forms drop the sign of zero.
        numbers = {"FLOAT64", "NUMERIC", "BIGNUMERIC", "STRING", "GEOGRAPHY"}
        return target in numbers and float(carried) == value
    if storage_class == "integer":
        numbers = {"INT64", "NUMERIC", "BIGNUMERIC", "STRING", "GEOGRAPHY"}
        return target in numbers and Decimal(carried) == value
    return storage_class == "text" and target in USUAL.keys() | {"DATE", "DATETIME", "TIMESTAMP"}


def make_source(path: Path) -> None:
    columns = ", ".join(f'c{i} "{t}"' if t else f"c{i}" for i, t in enumerate(DECLARED))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"CREATE TABLE vals (id INTEGER PRIMARY KEY, {columns})")
        conn.commit()
    track_database(path, ["vals"])


async def read_all(path: Path, last_version: int, snapshot: bool = False) -> list[Any]:
    reader = SourceReader(SourceSettings(dsn=f"Driver=SQLite3;Database={path}", tables=["vals"]))
    try:
        spec = await reader.describe("vals")
        changes: list[Any] = []
        read = reader.snapshot(spec) if snapshot else reader.changes(spec, last_version)
        async with read as opened:
            async for batch in opened.batches():
                changes += batch
        return changes
    finally:
        await reader.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=st.lists(ROW, min_size=1, max_size=8), snapshot=st.booleans())
def test_every_value_is_read_exactly_or_refused_by_the_sink(
    tmp_path: Path, rows: list[tuple[Any, ...]], snapshot: bool
) -> None:
    path = tmp_path / f"src-{time.monotonic_ns()}.db"
    make_source(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executemany(f"INSERT INTO vals VALUES (NULL, {', '.join('?' * len(DECLARED))})", rows)
        conn.commit()
        classes = ", ".join(f"typeof(c{i}), c{i}" for i in range(len(DECLARED)))
        stored = {r[0]: r[1:] for r in conn.execute(f"SELECT id, {classes} FROM vals")}
    changes = asyncio.run(read_all(path, 0, snapshot))
    assert sorted(c.key[0] for c in changes) == sorted(stored)
    for change in changes:
        source = stored[change.key[0]]
        for i, target in enumerate(TARGETS):
            storage_class, value = source[2 * i], source[2 * i + 1]
            carried = change.row[f"c{i}"]
            where = (DECLARED[i], storage_class, value, carried)
            if RowValidator([SchemaField("c", target)]).problems({"c": carried}):
                assert storage_class not in {"null", USUAL.get(target)}, where  # parked
            else:
                assert carried_is_source(target, storage_class, value, carried), where


async def test_64_bit_keys_stay_distinct_and_exact(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    make_source(path)
    ids = [1, 2**32 + 1, 2**31, -(2**63), 2**63 - 1, 9007199254740993]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executemany(
            "INSERT INTO vals (id, c0, c4) VALUES (?, ?, ?)", [(i, i, 0.1) for i in ids]
        )
        conn.commit()
    changes = await read_all(path, 0)
    assert sorted(c.key for c in changes) == sorted((i,) for i in ids)
    assert all(c.row["c0"] == c.key[0] and c.row["c4"] == 0.1 for c in changes)


async def test_deletes_carry_their_exact_key(tmp_path: Path) -> None:
    path = tmp_path / "deletes.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE vals (k TEXT PRIMARY KEY, r REAL)")
        conn.executemany("INSERT INTO vals VALUES (?, ?)", [(b"\x01", 0.5), ("a", 0.1 + 0.2)])
        conn.commit()
    track_database(path, ["vals"])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE vals SET r = 1e-300")
        conn.execute("DELETE FROM vals WHERE k = 'a'")
        conn.commit()
    changes = await read_all(path, 0)
    by_op = {(c.operation, str(c.key)): c.row for c in changes}
    assert by_op == {
        ("U", str(({"sqlite_blob": "AQ=="},))): {"k": {"sqlite_blob": "AQ=="}, "r": 1e-300},
        ("D", "('a',)"): {"k": "a"},
    }


EXACT = (
    "CREATE TABLE fid (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, d DECIMAL(38,9))"
)
GOOD = [
    (2**63 - 1, 2**63 - 1, 0.1 + 0.2, "é中😀", b"\x00\xff", 12.34),
    (-(2**63), -(2**63), 5e-324, "", b"", -(2**63)),
    (2**32 + 1, 9007199254740993, 1765108160.1234567, "x" * 3000, b"\x01" * 70, None),
    (1, 3000000000, -1.7976931348623157e308, "1.5", bytes(range(256)), 2**63 - 1),
]


async def test_exact_values_reach_bigquery_and_a_misfit_is_parked(make_harness: Any) -> None:
    h = make_harness({"fid": EXACT})
    await h.start_worker()
    h.execute("INSERT INTO fid VALUES (?, ?, ?, ?, ?, ?)", GOOD)
    h.execute("INSERT INTO fid VALUES (?, ?, ?, ?, ?, ?)", [(7, "abc", 1.0, "ok", b"", 1)])
    deadline = time.monotonic() + 90
    while True:
        latest = await h.query("SELECT * FROM `{ds}.fid_latest`")
        parked = await h.query("SELECT reason, payload, source_table FROM `{ds}._error_records`")
        if len(latest) >= len(GOOD) and parked:
            break
        assert time.monotonic() < deadline, f"BigQuery has {latest} and {parked}\n{h.logs()}"
        await asyncio.sleep(0.5)
    got = {r["id"]: r for r in latest}
    assert set(got) == {row[0] for row in GOOD}  # id 7 is parked, not written
    for id_, i, r, t, b, d in GOOD:
        row = got[id_]
        assert (row["i"], row["r"], row["t"]) == (i, r, t)
        blob = row["b"] if isinstance(row["b"], bytes) else base64.b64decode(row["b"])
        assert blob == b
        assert (row["d"] is None) if d is None else Decimal(str(row["d"])) == Decimal(repr(d))
    (record,) = parked
    assert record["source_table"] == "fid"
    assert "column 'i'" in record["reason"] and "'abc'" in record["reason"]
    assert "declared 'INTEGER'" in record["reason"]
    assert '"i":"abc"' in record["payload"]
