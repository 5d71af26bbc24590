"""Chunked snapshots of SQLite tables through the real reader (aioodbc, the SQLite ODBC
driver): the largest key, then key-ordered chunks, each in its own transaction, read
every row exactly once, in key order, as the whole-table snapshot reads it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctstream.models import ColumnSpec, JsonValue, TableSpec
from ctstream.settings import SourceSettings
from ctstream.source.changes import SourceChange
from ctstream.source.dialects import SqliteDialect, quote_sqlite
from ctstream.source.reader import SourceReader
from ctstream.source.sqlite_tracking import current_version, track_database

q = quote_sqlite
D = SqliteDialect()


def make_db(path: Path, table: str, columns: str, rows: Sequence[Sequence[object]]) -> Path:
    """A tracked SQLite file holding ``table`` (``columns``: its column definitions)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"CREATE TABLE {q(table)} ({columns})")
        if rows:
            marks = ", ".join("?" for _ in rows[0])
            conn.executemany(f"INSERT OR IGNORE INTO {q(table)} VALUES ({marks})", rows)
        conn.commit()
    track_database(path, [table])
    return path


def execute(db: Path, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()
    return rows


@contextlib.asynccontextmanager
async def reader_of(db: Path, table: str, fetch_size: int = 3) -> AsyncIterator[SourceReader]:
    dsn: Any = f"Driver=SQLite3;Database={db}"  # pydantic makes it a SecretStr
    reader = SourceReader(SourceSettings(dsn=dsn, tables=[table], fetch_size=fetch_size))
    try:
        yield reader
    finally:
        await reader.close()


def state(key: Sequence[JsonValue]) -> list[Any]:
    """A key after the round trip through the poll agent's JSON state."""
    loaded: list[Any] = json.loads(json.dumps(list(key)))
    return loaded


async def whole(reader: SourceReader, spec: TableSpec) -> list[SourceChange]:
    async with reader.snapshot(spec) as snapshot:
        return [c async for batch in snapshot.batches() for c in batch]


@dataclass
class Chunked:
    upper: tuple[JsonValue, ...] | None
    bound_version: int
    rows: list[SourceChange]
    chunks: list[list[SourceChange]]
    versions: list[int]


async def chunked(
    reader: SourceReader,
    spec: TableSpec,
    limit: int,
    between: Any = None,
) -> Chunked:
    """The poll agent's loop: the bound, then chunks until one is short or ends at it.
    ``between(chunk_number)`` runs before each chunk after the first."""
    upper, version = await reader.snapshot_bound(spec)
    result = Chunked(upper, version, [], [], [])
    if upper is None:
        return result
    after: list[Any] | None = None
    for number in range(10_000):
        if number and between is not None:
            between(number)
        async with reader.snapshot_chunk(spec, after, state(upper), limit) as chunk:
            rows = [c async for batch in chunk.batches() for c in batch]
            result.versions.append(chunk.version)
        assert len(rows) <= limit
        assert {(c.operation, c.version) for c in rows} <= {("S", chunk.version)}
        result.chunks.append(rows)
        result.rows.extend(rows)
        if len(rows) < limit or rows[-1].key == upper:
            return result
        after = state(rows[-1].key)
    raise AssertionError("the chunks never ended")


def by_key(changes: Sequence[SourceChange]) -> dict[str, SourceChange]:
    keyed = {json.dumps(c.key): c for c in changes}
    assert len(keyed) == len(changes), "a key was read twice"
    return keyed


def key_order(db: Path, table: str, keys: Sequence[str], number: str) -> list[Any]:
    """The ``number`` column of every row, in the order SQLite sorts the key."""
    order = ", ".join(q(k) for k in keys)
    return [r[0] for r in execute(db, f"SELECT {q(number)} FROM {q(table)} ORDER BY {order}")]


async def check_chunks(
    db: Path, table: str, keys: Sequence[str], number: str, limits: Sequence[int]
) -> None:
    """Every limit reads every row once, in key order, with the whole snapshot's values,
    and the last chunk ends with the bound."""
    async with reader_of(db, table) as reader:
        spec = await reader.describe(table)
        assert reader.chunk_refusal(spec) is None
        expected = await whole(reader, spec)
        for limit in limits:
            got = await chunked(reader, spec, limit)
            assert by_key(got.rows) == by_key(expected), limit
            assert [c.row[number] for c in got.rows] == key_order(db, table, keys, number)
            if expected:
                assert got.rows[-1].key == got.upper
            else:
                assert got.upper is None and not got.rows


LIMITS = (1, 2, 7, 1000)
HOSTILE_TABLE = 'we"ird ]tab;le'
HOSTILE_KEYS = ('k"1', "k 2;--", "select")

CASES: dict[str, tuple[str, list[str], list[tuple[object, ...]]]] = {
    "integer primary key": (
        "id INTEGER PRIMARY KEY, n INTEGER, v TEXT",
        ["id"],
        [
            (i, n, f"v{i}")
            for n, i in enumerate([-(2**63), -5, 0, 1, 2, 3, 40, 2**53 + 1, 2**63 - 1])
        ],
    ),
    "text, integer": (
        "a TEXT NOT NULL, b INTEGER NOT NULL, n INTEGER, PRIMARY KEY (a, b)",
        ["a", "b"],
        [
            (a, b, n)
            for n, (a, b) in enumerate(
                (a, b)
                for a in ("", "A", "a", "ab", "é", "\U0010fffd", "\U0001f600", "z z")
                for b in (-3, 0, 7)
            )
        ],
    ),
    "integer, real": (
        "a INTEGER NOT NULL, r REAL NOT NULL, n INTEGER, PRIMARY KEY (a, r)",
        ["a", "r"],
        [
            (a, r, n)
            for n, (a, r) in enumerate(
                (a, r)
                for a in (-1, 0, 1)
                for r in (-math.inf, -1e300, -0.5, 0.0, 5e-324, 0.1, 1 / 3, 2.0, 1e300, math.inf)
            )
        ],
    ),
    "blob": (
        "b BLOB NOT NULL PRIMARY KEY, n INTEGER",
        ["b"],
        [
            (b, n)
            for n, b in enumerate(
                [b"", b"\x00", b"\x00\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"\xff\x00", b"ab"]
            )
        ],
    ),
    "hostile names": (
        ", ".join(f"{q(k)} TEXT NOT NULL" for k in HOSTILE_KEYS)
        + f", {q('n;')} INTEGER, PRIMARY KEY ({q(HOSTILE_KEYS[2])}, {q(HOSTILE_KEYS[0])}, "
        f"{q(HOSTILE_KEYS[1])})",
        [HOSTILE_KEYS[2], HOSTILE_KEYS[0], HOSTILE_KEYS[1]],
        [
            (f"{i % 2}'", f'"{i % 3}', f"]{i % 5}; --", i)
            for i in range(30)  # 30 distinct keys: (i % 2, i % 3, i % 5) is i mod 30
        ],
    ),
}


@pytest.mark.parametrize("case", CASES)
async def test_chunks_read_every_row_once_in_key_order(tmp_path: Path, case: str) -> None:
    columns, keys, rows = CASES[case]
    table = HOSTILE_TABLE if case == "hostile names" else "items"
    number = "n;" if case == "hostile names" else "n"
    db = make_db(tmp_path / "src.db", table, columns, rows)
    assert len(execute(db, f"SELECT * FROM {q(table)}")) == len(rows)
    await check_chunks(db, table, keys, number, LIMITS)


# Values of each storage class that a key column of each declared type holds; the type's
# affinity converts some on the way in (a text reading as a number into that number).
INTEGERS = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, 1, -1, 2**53 + 1])
REALS = st.floats(allow_nan=False) | st.sampled_from([math.inf, -math.inf, 0.5, 1e300])
TEXTS = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=6
) | st.sampled_from(["1_000", "١٢", " 12 ", "1e5", "0x10", "NaN", "true", "2024-01-01", "Z", "z"])
BLOBS = st.binary(max_size=6)
# A real infinity and the text 'Infinity' read alike where the type is not REAL or text;
# keys holding both are beyond what a chunk bound can tell apart (see key_parameters).
NOT_INFINITY = TEXTS.filter(lambda t: t not in {"Infinity", "-Infinity"})
KEY_TYPES: dict[str, st.SearchStrategy[object]] = {
    "TEXT": INTEGERS | REALS | TEXTS | BLOBS,
    "INTEGER": INTEGERS | REALS | NOT_INFINITY | BLOBS,
    "REAL": INTEGERS | REALS | TEXTS | BLOBS,
    "NUMERIC": INTEGERS | REALS | NOT_INFINITY | BLOBS,
    "DECIMAL(10,2)": INTEGERS | REALS | NOT_INFINITY | BLOBS,
    "BOOLEAN": st.sampled_from([0, 1, 2]) | REALS | NOT_INFINITY,
    "DATE": INTEGERS | REALS | NOT_INFINITY,
    "sysname": INTEGERS | REALS | NOT_INFINITY | BLOBS,
    "BLOB": INTEGERS | REALS | BLOBS,  # a text in a BLOB key reads as its bytes' base64
    "VARCHAR(8) COLLATE NOCASE": TEXTS | BLOBS,
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[tuple[object, ...]], int]:
    types = draw(st.lists(st.sampled_from(sorted(KEY_TYPES)), min_size=1, max_size=3))
    # A key of one INTEGER column is the rowid, which holds integers only.
    values = [INTEGERS] if types == ["INTEGER"] else [KEY_TYPES[t] for t in types]
    row = st.tuples(*values)
    # Few distinct values per column, so that keys share prefixes.
    pools = [draw(st.lists(v, min_size=1, max_size=5)) for v in values]
    keys = draw(st.lists(st.tuples(*(st.sampled_from(p) for p in pools)) | row, max_size=25))
    # A value column of any storage class: a row whose value is odd is read whole through
    # the odd-row path, its key too, which must still equal the bound read of that key.
    others = st.none() | INTEGERS | REALS | TEXTS | BLOBS
    rows = [(*k, i, draw(others)) for i, k in enumerate(keys)]
    return types, rows, draw(st.integers(1, 8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_random_composite_keys_of_mixed_storage_classes(
    table: tuple[list[str], list[tuple[object, ...]], int],
) -> None:
    types, rows, limit = table
    names = [f"k{i}" for i in range(len(types))]
    columns = ", ".join(f"{q(n)} {t} NOT NULL" for n, t in zip(names, types, strict=True))
    columns += f", n INTEGER, v INTEGER, PRIMARY KEY ({', '.join(q(n) for n in names)})"
    with tempfile.TemporaryDirectory() as tmp:
        db = make_db(Path(tmp) / "src.db", "items", columns, rows)
        asyncio.run(check_chunks(db, "items", names, "n", (limit,)))


async def test_rows_above_the_bound_are_left_to_change_tracking(tmp_path: Path) -> None:
    db = make_db(
        tmp_path / "src.db",
        "items",
        "id INTEGER PRIMARY KEY, v TEXT",
        [(i, "v") for i in range(10)],
    )
    async with reader_of(db, "items") as reader:
        spec = await reader.describe("items")

        def write(number: int) -> None:
            if number == 1:
                execute(db, "INSERT INTO items VALUES (100, 'above the bound')")
                execute(db, "INSERT INTO items VALUES (-1, 'below the chunks read')")
                execute(db, "DELETE FROM items WHERE id IN (6, 7)")  # not read yet
                execute(db, "UPDATE items SET v = 'changed' WHERE id = 9")

        got = await chunked(reader, spec, 3, write)
    assert got.upper == (9,)
    assert [c.key for c in got.rows] == [(i,) for i in (0, 1, 2, 3, 4, 5, 8, 9)]
    assert got.rows[-1].row == {"id": 9, "v": "changed"}  # read at its chunk's version


async def test_each_chunk_reads_at_its_own_version(tmp_path: Path) -> None:
    db = make_db(
        tmp_path / "src.db", "items", "id INTEGER PRIMARY KEY, v TEXT", [(i, "v") for i in range(9)]
    )
    seen: list[int] = []

    def write(number: int) -> None:
        execute(db, "UPDATE items SET v = ? WHERE id = 8", (f"v{number}",))
        with contextlib.closing(sqlite3.connect(db)) as conn:
            seen.append(current_version(conn))

    async with reader_of(db, "items") as reader:
        spec = await reader.describe("items")
        with contextlib.closing(sqlite3.connect(db)) as conn:
            start = current_version(conn)
        got = await chunked(reader, spec, 2, write)
    assert got.bound_version == start
    assert got.versions == [start, *seen] and seen == sorted(set(seen)) and len(seen) == 4
    assert got.rows[-1].row == {"id": 8, "v": "v4"}


async def test_an_empty_table_has_no_bound(tmp_path: Path) -> None:
    db = make_db(
        tmp_path / "src.db", "items", "a TEXT NOT NULL, b INT NOT NULL, PRIMARY KEY (a, b)", []
    )
    async with reader_of(db, "items") as reader:
        spec = await reader.describe("items")
        with contextlib.closing(sqlite3.connect(db)) as conn:
            version = current_version(conn)
        assert await reader.snapshot_bound(spec) == (None, version)
        assert await reader.row_estimate(spec) == 0
        # A bound taken earlier: the table emptied since, the chunk is empty.
        async with reader.snapshot_chunk(spec, None, ["z", 9], 5) as chunk:
            assert [b async for b in chunk.batches()] == []


@pytest.mark.parametrize(
    ("columns", "refused"),
    [
        ("a TEXT, b INTEGER, v TEXT, PRIMARY KEY (a, b)", "'a'"),  # nullable composite key
        ("a TEXT NOT NULL, b INTEGER, PRIMARY KEY (a, b)", "'b'"),
        ("id INT PRIMARY KEY", "'id'"),  # INT: no rowid alias, SQLite lets it hold NULL
        ("id NOT NULL PRIMARY KEY", "no declared type"),
        ("id INTEGER PRIMARY KEY", None),  # the rowid: never NULL
        ("id TEXT NOT NULL PRIMARY KEY", None),
        ("a TEXT NOT NULL, b BLOB NOT NULL, PRIMARY KEY (b, a)", None),
    ],
)
async def test_chunk_refusal(tmp_path: Path, columns: str, refused: str | None) -> None:
    db = make_db(tmp_path / "src.db", "items", columns, [])
    async with reader_of(db, "items") as reader:
        spec = await reader.describe("items")
        refusal = reader.chunk_refusal(spec)
        if refused is None:
            assert refusal is None
            return
        assert refusal is not None and refused in refusal and "whole table" in refusal
        assert "'items'" in refusal
        key = ["x"] * len(spec.key_columns)
        with pytest.raises(ValueError, match="whole table"):
            async with reader.snapshot_chunk(spec, None, key, 5):
                pass


def spec_of(*columns: tuple[str, str, int | None]) -> TableSpec:
    cols = tuple(ColumnSpec(n, t, nullable=False, key_ordinal=k) for n, t, k in columns)
    return TableSpec("items", None, "items", cols, change_table="_ct__items")


def test_key_parameters_undo_what_the_read_carries() -> None:
    spec = spec_of(
        ("v", "TEXT", None), ("f", "REAL", 2), ("b", "BLOB", 3), ("i", "INTEGER", 1),
        ("n", "NUMERIC", 4), ("t", "TEXT", 5), ("o", "BOOLEAN", 6),
    )  # fmt: skip
    assert D.key_parameters(spec, [5, 1.5, "AP8=", "12", "12", True]) == (
        5, 1.5, b"\x00\xff", 12, "12", 1,
    )  # fmt: skip
    # Wrapped values (carried beside JsonValue) are unwrapped; reals carried as text are
    # reals again.
    wrapped: list[Any] = [
        {"sqlite_text": "1_000"}, "Infinity", {"sqlite_real": "-Infinity"}, "1e+20", "x", False,
    ]  # fmt: skip
    assert D.key_parameters(spec, wrapped) == ("1_000", math.inf, -math.inf, 1e20, "x", 0)
    wrapped = [{"sqlite_blob": "AA=="}, {"sqlite_text": "NaN"}, 3, "-0.5", "Infinity", 2]
    assert D.key_parameters(spec, wrapped) == (b"\x00", "NaN", 3, -0.5, "Infinity", 2)
    assert D.key_parameters(spec, [1.5, "-Infinity", 2.5, "99999999999999999999", "", 0])[3] == (
        1e20
    )


@pytest.mark.parametrize(
    "key", [[], [1], [1, 2.0, "AA==", "1", "t"], "abcdef", [1, None, "AA==", "1", "t", 1]]
)
def test_key_parameters_refuse_what_is_no_key(key: Any) -> None:
    spec = spec_of(
        ("i", "INTEGER", 1), ("f", "REAL", 2), ("b", "BLOB", 3), ("n", "NUMERIC", 4),
        ("t", "TEXT", 5), ("o", "BOOLEAN", 6),
    )  # fmt: skip
    with pytest.raises(ValueError, match="'items'"):
        D.key_parameters(spec, key)


def test_key_parameters_refuse_bad_base64_and_unknown_values() -> None:
    spec = spec_of(("b", "BLOB", 1))
    keys: list[list[Any]] = [["not base64!"], [[1]], [{"other": "x"}]]
    for key in keys:
        with pytest.raises(ValueError, match="'items'"):
            D.key_parameters(spec, key)


@pytest.mark.parametrize("limit", [0, -1, True, 1.0, "5", None])
def test_chunk_limit_must_be_a_positive_int(limit: Any) -> None:
    spec = spec_of(("i", "INTEGER", 1))
    with pytest.raises(ValueError, match="limit"):
        D.snapshot_chunk_query(spec, None, (1,), limit)


def test_chunk_and_bound_sql() -> None:
    spec = spec_of(("v", "TEXT", None), ("b", "INTEGER", 2), ('a"', "TEXT", 1))
    bound = D.snapshot_upper_bound(spec)
    assert bound.key_count == 2 and bound.value_columns == () and bound.params == ()
    assert bound.sql.startswith('SELECT t."a""", t."b", CASE WHEN')
    assert bound.sql.endswith('FROM "items" AS t ORDER BY t."a""" DESC, t."b" DESC LIMIT 1')
    chunk = D.snapshot_chunk_query(spec, ("x", 1), ("y", 2), 10)
    assert chunk.params == ("x", 1, "y", 2, 10)
    assert chunk.key_count == 2 and chunk.value_columns == ("v",)
    assert chunk.sql.endswith(
        'FROM "items" AS t WHERE (t."a""", t."b") > (?, ?) AND (t."a""", t."b") <= (?, ?) '
        'ORDER BY t."a""", t."b" LIMIT ?'
    )
    snapshot = D.snapshot_query(spec).sql
    assert chunk.sql.startswith(snapshot.removesuffix(' FROM "items" AS t'))
    first = D.snapshot_chunk_query(spec_of(("id", "INTEGER", 1)), None, (7,), 1)
    assert first.sql.endswith('FROM "items" AS t WHERE t."id" <= ? ORDER BY t."id" LIMIT ?')
    assert first.params == (7, 1)
    with pytest.raises(ValueError, match="2 key values"):
        D.snapshot_chunk_query(spec, ("x",), ("y", 2), 10)
