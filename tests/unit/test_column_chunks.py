"""Snapshot chunks bounded by a column's values (``source.chunk_columns``) on SQLite
through the real reader: chunk after chunk reads every row exactly once, ties whole, rows
changed after the start left to Change Tracking; columns that cannot bound chunks are
refused with a message saying what to do, and the refused table's polling stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctstream.agents.poll import TablePoller
from ctstream.agents.snapshots import SnapshotRunner
from ctstream.agents.stats import PollStats
from ctstream.devstack.crash_points import CrashPoints
from ctstream.errors import ChunkColumnRefused, ConfigError
from ctstream.models import ColumnSpec, JsonValue, SourceState, TableSpec
from ctstream.models.source_state import SnapshotProgress
from ctstream.settings import SourceSettings, load_settings
from ctstream.source.changes import SourceChange
from ctstream.source.dialects import SqliteDialect, quote_sqlite
from ctstream.source.reader import SourceReader
from tests.unit.test_snapshot_chunks import (
    BLOBS,
    INTEGERS,
    KEY_TYPES,
    REALS,
    TEXTS,
    execute,
    make_db,
    state,
    whole,
)

q = quote_sqlite
D = SqliteDialect()


@contextlib.asynccontextmanager
async def reader_of(
    db: Path, table: str, column: str | None, fetch_size: int = 3
) -> AsyncIterator[SourceReader]:
    dsn: Any = f"Driver=SQLite3;Database={db}"  # pydantic makes it a SecretStr
    columns = {} if column is None else {table: column}
    source = SourceSettings(dsn=dsn, tables=[table], fetch_size=fetch_size, chunk_columns=columns)
    reader = SourceReader(source)
    try:
        yield reader
    finally:
        await reader.close()


@dataclass
class Chunked:
    upper: tuple[JsonValue, ...] | None
    version: int
    chunks: list[list[SourceChange]] = field(default_factory=list)

    @property
    def rows(self) -> list[SourceChange]:
        return [c for chunk in self.chunks for c in chunk]


async def chunked(
    reader: SourceReader,
    spec: TableSpec,
    limit: int,
    between: Callable[[int], None] | None = None,
) -> Chunked:
    """The snapshot runner's loop: the bound, then chunks until one is short or ends at
    the bound; cursors and the bound go through the JSON state as the agent saves them.
    ``between(chunk_number)`` runs before each chunk after the first."""
    upper, version = await reader.snapshot_bound(spec)
    result = Chunked(upper, version)
    if upper is None:
        return result
    cursor = reader.chunk_cursor(spec)
    after: list[Any] | None = None
    for number in range(10_000):
        if number and between is not None:
            between(number)
        async with reader.snapshot_chunk(spec, after, state(upper), limit, version) as chunk:
            rows = [c async for batch in chunk.batches() for c in batch]
        assert {c.operation for c in rows} <= {"S"}
        result.chunks.append(rows)
        if len(rows) < limit or cursor(rows[-1]) == upper:
            return result
        after = state(cursor(rows[-1]))
    raise AssertionError("the chunks never ended")


def ranks(db: Path, table: str, column: str) -> dict[int, int]:
    """id → how many distinct values of ``column`` SQLite orders below the row's."""
    c, t = q(column), q(table)
    found = execute(
        db, f"SELECT id, (SELECT COUNT(DISTINCT o.{c}) FROM {t} AS o WHERE o.{c} < r.{c}) "
        f"FROM {t} AS r"
    )  # fmt: skip
    return {int(i): int(r) for i, r in found}


def check_ties_whole(got: Chunked, rank: dict[int, int], limit: int) -> None:
    """Every row once; chunks follow each other in the column's order without sharing a
    value; each holds the next ``limit`` rows and every row tied with its last one."""
    ids = [c.row["id"] for c in got.rows]
    assert sorted(ids, key=repr) == sorted(rank, key=repr), "a row was read twice or never"
    previous = -1
    for number, chunk in enumerate(got.chunks):
        values = [rank[c.row["id"]] for c in chunk]  # type: ignore[index]
        assert values == sorted(values), "a chunk out of the column's order"
        if not chunk:
            assert number == len(got.chunks) - 1, "an empty chunk before the last"
            continue
        assert values[0] > previous, "two chunks share a value"
        previous = values[-1]
        below_last = sum(v < values[-1] for v in values)
        assert below_last < limit, "a chunk read more than the next rows and their ties"
        if number < len(got.chunks) - 1:
            assert len(chunk) >= limit, "a chunk before the last read fewer than the limit"


@st.composite
def tied_tables(draw: st.DrawFn) -> tuple[str, str, list[tuple[object, ...]], int]:
    """A declared type for the chunk column, a key declaration, rows whose chunk values
    come from a pool of at most 4 (many ties), and a chunk limit."""
    declared = draw(st.sampled_from(sorted(KEY_TYPES)))
    key = draw(st.sampled_from(["id INTEGER PRIMARY KEY", "id INT PRIMARY KEY"]))
    pool = draw(st.lists(KEY_TYPES[declared], min_size=1, max_size=4))
    values = draw(st.lists(st.sampled_from(pool), max_size=30))
    # A value column of any storage class: a row whose value is odd is read whole through
    # the odd-row path, its chunk column too, which must still equal the bound's read.
    others = st.none() | INTEGERS | REALS | TEXTS | BLOBS
    rows: list[tuple[object, ...]] = [(i, value, draw(others)) for i, value in enumerate(values)]
    return declared, key, rows, draw(st.integers(1, 6))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tied_tables())
def test_chunks_of_a_tied_column_read_every_row_exactly_once(
    table: tuple[str, str, list[tuple[object, ...]], int],
) -> None:
    declared, key, rows, limit = table
    columns = f'{key}, "c" {declared} NOT NULL, v'

    async def check(db: Path) -> None:
        async with reader_of(db, "items", "c") as reader:
            spec = await reader.describe("items")
            got = await chunked(reader, spec, limit)
            expected = await whole(reader, spec)
        assert {c.key: c.row for c in got.rows} == {c.key: c.row for c in expected}
        check_ties_whole(got, ranks(db, "items", "c"), limit)
        if rows:
            assert got.rows[-1].row["c"] == got.upper[0]  # type: ignore[index]
        else:
            assert got.upper is None and not got.chunks

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(check(make_db(Path(tmp) / "src.db", "items", columns, rows)))


async def test_a_value_shared_by_many_rows_is_one_chunk(tmp_path: Path) -> None:
    """A nullable key cannot bound chunks; its chunk column can, and a value held by 30
    rows makes one chunk of 30 at a limit of 4."""
    rows = [(i, 1 if i < 5 else 2 if i < 35 else 3, f"v{i}") for i in range(40)]
    db = make_db(tmp_path / "src.db", "items", "id INT PRIMARY KEY, g INTEGER NOT NULL, v", rows)
    async with reader_of(db, "items", "g") as reader:
        spec = await reader.describe("items")
        assert D.chunk_refusal(spec) is not None  # the key alone: read whole
        assert reader.chunk_refusal(spec) is None
        got = await chunked(reader, spec, 4)
    assert got.upper == (3,)
    assert [len(chunk) for chunk in got.chunks] == [5, 30, 5]
    assert sorted(c.row["id"] for c in got.rows) == list(range(40))  # type: ignore[type-var]


async def test_rows_changed_after_the_start_are_left_to_change_tracking(tmp_path: Path) -> None:
    """A row read, then moved into the range not read yet, is not read again (it would be
    counted twice and the snapshot would wait for it forever); rows changed after the
    start are not read at all: their changes carry them."""
    rows = [(i, i // 2, "v") for i in range(20)]  # g: 0 0 1 1 2 2 … 9 9
    db = make_db(tmp_path / "src.db", "items", "id INT PRIMARY KEY, g INTEGER NOT NULL, v", rows)

    def write(number: int) -> None:
        if number == 1:
            execute(db, "UPDATE items SET g = 8 WHERE id = 0")  # read in chunk 0
            execute(db, "UPDATE items SET v = 'changed' WHERE id = 15")  # not read yet
            execute(db, "INSERT INTO items VALUES (100, 5, 'new')")  # within the bound
            execute(db, "INSERT INTO items VALUES (101, 50, 'above the bound')")
            execute(db, "DELETE FROM items WHERE id = 12")

    async with reader_of(db, "items", "g") as reader:
        spec = await reader.describe("items")
        got = await chunked(reader, spec, 3, write)
    ids = [c.row["id"] for c in got.rows]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == [i for i in range(20) if i not in (12, 15)]  # type: ignore[type-var]
    assert got.upper == (9,)


async def test_the_bound_and_cursor_are_the_column_value(tmp_path: Path) -> None:
    rows = [(i, f"name {i % 3}", i) for i in range(7)]
    db = make_db(tmp_path / "src.db", "items", "id INTEGER PRIMARY KEY, g TEXT NOT NULL, v", rows)
    async with reader_of(db, "items", "g") as reader:
        spec = await reader.describe("items")
        upper, _ = await reader.snapshot_bound(spec)
        assert upper == ("name 2",)
        cursor = reader.chunk_cursor(spec)
        assert cursor(SourceChange("S", 1, (4,), {"id": 4, "g": "x", "v": 1})) == ("x",)
        with pytest.raises(ValueError, match="start version"):
            async with reader.snapshot_chunk(spec, None, upper, 2):
                pass
    async with reader_of(db, "items", None) as reader:
        spec = await reader.describe("items")
        assert (await reader.snapshot_bound(spec))[0] == (6,)
        assert reader.chunk_cursor(spec)(SourceChange("S", 1, (4,), {})) == (4,)


async def test_an_empty_table_has_no_bound(tmp_path: Path) -> None:
    db = make_db(tmp_path / "src.db", "items", "id INT PRIMARY KEY, g INTEGER NOT NULL", [])
    async with reader_of(db, "items", "g") as reader:
        spec = await reader.describe("items")
        got = await chunked(reader, spec, 5)
    assert got.upper is None and got.chunks == []


@pytest.mark.parametrize(
    ("columns", "column", "problem"),
    [
        ("id INT PRIMARY KEY, g INTEGER", "g", "may hold NULL"),
        ("id INT PRIMARY KEY, g INTEGER", "missing", "has no column 'missing'"),
        ("id INT PRIMARY KEY, g NOT NULL", "g", "has no declared type"),
        ("id INT PRIMARY KEY, g INTEGER", "id", "may hold NULL"),  # a nullable key column
    ],
)
async def test_a_column_that_cannot_bound_chunks_is_refused(
    tmp_path: Path, columns: str, column: str, problem: str
) -> None:
    db = make_db(tmp_path / "src.db", "items", columns, [])
    async with reader_of(db, "items", column) as reader:
        spec = await reader.describe("items")
        for check in (reader.chunk_column, reader.chunk_refusal, reader.chunk_cursor):
            with pytest.raises(ChunkColumnRefused) as info:
                check(spec)
            message = str(info.value)
            assert message.startswith(f'source.chunk_columns."items" = {column!r}: ')
            assert problem in message and "the snapshot of 'items' is refused" in message
            assert "set it to a NOT NULL column" in message and "remove the entry" in message
        with pytest.raises(ChunkColumnRefused):
            await reader.snapshot_bound(spec)
        with pytest.raises(ChunkColumnRefused):
            async with reader.snapshot_chunk(spec, None, [1], 5, 1):
                pass
        with pytest.raises(ValueError, match="refused"):
            D.column_chunk_query(spec, column, None, (1,), 5, 1)


async def test_the_rowid_and_a_chunkable_key_may_be_chunk_columns(tmp_path: Path) -> None:
    """An INTEGER PRIMARY KEY is never NULL; a chunk column is used where the key could
    bound chunks too."""
    db = make_db(tmp_path / "src.db", "items", "id INTEGER PRIMARY KEY, g REAL NOT NULL", [])
    for column in ("id", "g"):
        async with reader_of(db, "items", column) as reader:
            spec = await reader.describe("items")
            found = reader.chunk_column(spec)
            assert found is not None and found.name == column


async def test_a_key_read_whole_names_the_setting(tmp_path: Path) -> None:
    db = make_db(tmp_path / "src.db", "items", "id INT PRIMARY KEY, g INTEGER NOT NULL", [])
    async with reader_of(db, "items", None) as reader:
        spec = await reader.describe("items")
        refusal = reader.chunk_refusal(spec)
    assert refusal is not None and "whole table" in refusal
    assert 'set source.chunk_columns."items" to a NOT NULL column' in refusal


def spec_of(*columns: tuple[str, str, int | None, bool]) -> TableSpec:
    cols = tuple(ColumnSpec(n, t, nullable=z, key_ordinal=k) for n, t, k, z in columns)
    return TableSpec("items", None, "items", cols, change_table='_ct__it"ems')


def test_chunk_sql_exactly() -> None:
    bound_of = spec_of(("g", "INTEGER", None, False), ("k", "TEXT", 1, False))
    bound = D.column_upper_bound(bound_of, "g")
    assert bound.key_count == 1 and bound.value_columns == () and bound.params == ()
    assert bound.sql.startswith('SELECT t."g", CASE WHEN')
    assert bound.sql.endswith('FROM "items" AS t ORDER BY t."g" DESC LIMIT 1')
    g = spec_of(("v", "TEXT", None, True), ("g", "INTEGER", None, False), ('a"', "TEXT", 1, False))
    chunk = D.column_chunk_query(g, "g", (4,), (9,), 10, 77)
    assert chunk.key_count == 1 and chunk.value_columns == ("v", "g")
    assert chunk.params == (4, 4, 9, 77, 10, 77)
    unchanged = (
        'NOT EXISTS (SELECT 1 FROM "_ct__it""ems" AS c WHERE c."a""" = {}."a""" '
        "AND c.sys_change_version > ?)"
    )
    assert chunk.sql.endswith(
        'FROM "items" AS t WHERE t."g" > ? AND t."g" <= (SELECT x."g" FROM (SELECT n."g" '
        'FROM "items" AS n WHERE n."g" > ? AND n."g" <= ? AND '
        + unchanged.format("n")
        + ' ORDER BY n."g" LIMIT ?) AS x ORDER BY x."g" DESC LIMIT 1) AND '
        + unchanged.format("t")
        + ' ORDER BY t."g"'
    )
    assert chunk.sql.startswith(D.snapshot_query(g).sql.removesuffix(' FROM "items" AS t'))
    first = D.column_chunk_query(g, "g", None, (9,), 10, 77)
    assert first.params == (9, 77, 10, 77)
    assert first.sql == chunk.sql.replace('t."g" > ? AND ', "").replace('n."g" > ? AND ', "")
    for after, upper in (((1, 2), (3,)), (None, ()), (None, (1, 2))):
        with pytest.raises(ValueError, match="one value"):
            D.column_chunk_query(g, "g", after, upper, 10, 77)
    with pytest.raises(ValueError, match="limit"):
        D.column_chunk_query(g, "g", None, (1,), 0, 77)
    with pytest.raises(ValueError, match="start version"):
        D.column_chunk_query(g, "g", None, (1,), 5, True)


def test_column_parameters_undo_what_the_read_carries() -> None:
    spec = spec_of(
        ("k", "INTEGER", 1, False), ("b", "BLOB", None, False), ("n", "NUMERIC", None, False)
    )
    assert D.column_parameters(spec, "b", ["AP8="]) == (b"\x00\xff",)
    assert D.column_parameters(spec, "n", ["12"]) == (12,)
    wrapped: list[Any] = [{"sqlite_text": "x1"}]  # carried beside JsonValue
    assert D.column_parameters(spec, "n", wrapped) == ("x1",)
    bad: list[tuple[str, Any]] = [
        ("b", ["not base64!"]), ("b", []), ("b", [None]), ("b", "AP8="), ("b", ["AA==", "AA=="]),
        ("nope", [1]),
    ]  # fmt: skip
    for column, cursor in bad:
        with pytest.raises(ValueError, match="'items'"):
            D.column_parameters(spec, column, cursor)


BASE = """
[source]
dialect = "sqlite"
dsn = "Driver=SQLite3;Database=./x.db"
{lines}
[bigquery]
project = "p"
dataset = "d"
"""


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ('tables = ["items"]\nchunk_columns = { "other" = "g" }', "does not select: 'other'"),
        ('tables = ["items"]\nchunk_columns = { "items" = "" }', "source.chunk_columns.items"),
        ('tables = ["items"]\nchunk_columns = { "items" = 3 }', "source.chunk_columns.items"),
        ('tables = ["orders_*"]\nchunk_columns = { "items" = "g" }', "does not select"),
    ],
)
def test_bad_chunk_columns_fail_at_start(tmp_path: Path, lines: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(BASE.format(lines=lines), "utf-8")
    with pytest.raises(ConfigError, match=expected):
        load_settings(path)


def test_chunk_columns_may_name_tables_a_pattern_selects(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    lines = 'tables = ["orders_*"]\nchunk_columns = { "orders_2" = "created at" }'
    path.write_text(BASE.format(lines=lines), "utf-8")
    assert load_settings(path).source.chunk_columns == {"orders_2": "created at"}


# --- the refused table's polling stops --------------------------------------------------


def poller_of(
    spec: TableSpec, saved: dict[str, Any], column: str, polled: list[str], db: Path
) -> TablePoller:
    """A poller of ``spec`` whose reader notes each poll in ``polled`` (and reads none)."""
    dsn: Any = f"Driver=SQLite3;Database={db}"
    source = SourceSettings(dsn=dsn, tables=[spec.name], chunk_columns={spec.name: column})
    reader = SourceReader(source)

    def changes(spec: TableSpec, last_version: int) -> Any:
        polled.append(spec.name)
        raise AssertionError("a refused table was polled")

    reader.changes = changes  # type: ignore[method-assign]
    fake: Any = SimpleNamespace
    return TablePoller(
        fake(should_stop=False),
        fake(source=source),
        fake(specs={spec.name: spec}),
        fake(versions=saved),
        reader,
        None,  # type: ignore[arg-type]
        PollStats(),
        CrashPoints(),
    )


@pytest.mark.parametrize(
    "saved",
    [
        None,  # no saved version: the initial snapshot is due
        SourceState(version=5).requesting("requested by ctstream snapshot", "r1").to_value(),
        SourceState(version=5)
        .snapshot_started(SnapshotProgress("s1", "r", 4, (9,), 0.0, chunk_column="g"), 5)
        .to_value(),
    ],
)
async def test_a_refused_snapshot_stops_the_table_and_says_so_once(
    caplog: pytest.LogCaptureFixture, saved: Any, tmp_path: Path
) -> None:
    spec = spec_of(("id", "INT", 1, True), ("g", "INTEGER", None, True))
    versions = {} if saved is None else {"items": saved}
    polled: list[str] = []
    poller = poller_of(spec, versions, "g", polled, tmp_path / "never-opened.db")
    with caplog.at_level(logging.INFO, logger="ctstream.poll"):
        await poller.run("items")
        await poller.run("items")  # the next tick: still stopped, not logged again
    [record] = [r for r in caplog.records if r.name == "ctstream.poll"]
    assert record.levelno == logging.ERROR
    reason = poller.stats.stopped["items"]
    assert reason in record.getMessage() and "'g'" in reason and "may hold NULL" in reason
    assert "items" not in poller.stats.failures  # stopped, not failing
    assert versions == ({} if saved is None else {"items": saved})  # nothing saved
    assert polled == []


async def test_a_chunk_column_refused_while_no_snapshot_is_due_leaves_polls_alone(
    tmp_path: Path,
) -> None:
    spec = spec_of(("id", "INT", 1, True), ("g", "INTEGER", None, True))
    saved = {"items": SourceState(version=5).to_value()}
    poller = poller_of(spec, saved, "g", [], tmp_path / "never-opened.db")
    poller.snapshots.check(spec, SourceState(version=5), snapshot_due=False)  # no raise
    with pytest.raises(ChunkColumnRefused):
        poller.snapshots.check(spec, SourceState(version=5), snapshot_due=True)


def test_chunk_column_survives_the_saved_state() -> None:
    progress = SnapshotProgress("s", "r", 3, ("x",), 1.0, after=("a",), chunk_column="g")
    assert SnapshotProgress.from_value(progress.to_value()) == progress
    keyed = SnapshotProgress("s", "r", 3, (1,), 1.0)
    assert SnapshotProgress.from_value(keyed.to_value()) == keyed
    old = keyed.to_value()
    del old["chunk_column"]  # saved before the setting existed: chunks of the key
    assert SnapshotProgress.from_value(old) == keyed


# --- a masked chunk column's values stay in the worker ----------------------------------


def runner_of(spec: TableSpec, column: str, saved: dict[str, Any], db: Path) -> SnapshotRunner:
    dsn: Any = f"Driver=SQLite3;Database={db}"
    source = SourceSettings(dsn=dsn, tables=[spec.name], chunk_columns={spec.name: column})
    none: Any = None
    return SnapshotRunner(
        SimpleNamespace(source=source),  # type: ignore[arg-type]
        SourceReader(source),
        none,
        PollStats(),
        CrashPoints(),
        lambda name: SourceState.from_value(saved.get(name)),
        lambda name, state: saved.__setitem__(name, state.to_value()),
        lambda: False,
    )


@pytest.mark.parametrize(("masked", "withheld"), [("g", True), ("id", False), (None, False)])
async def test_a_masked_chunk_columns_values_are_withheld(
    masked: str | None, withheld: bool, tmp_path: Path
) -> None:
    """The cursor holds chunk column values: withheld when that column is masked (not
    when only the key is), and restored from the worker for the next chunk."""
    spec = spec_of(("id", "INT", 1, False), ("g", "TEXT", None, False))
    spec = replace(
        spec,
        columns=tuple(replace(c, mask="hash" if c.name == masked else None) for c in spec.columns),
    )
    saved: dict[str, Any] = {}
    runner = runner_of(spec, "g", saved, tmp_path / "never-opened.db")
    progress = SnapshotProgress("s1", "r", 4, ("secret z",), 0.0, chunk_column="g")
    progress = progress.chunk_sent(("secret a",), 40, done=False)
    runner._store(spec, SourceState(version=4).with_progress(progress))
    kept = SourceState.from_value(saved["items"]).snapshot
    assert kept is not None and kept.keys_withheld is withheld
    assert ("secret" in str(saved)) is not withheld
    assert await runner._progress(spec) == progress  # restored here


async def test_a_snapshot_whose_chunk_column_changed_reads_again_from_the_first_chunk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Saved cursors of the key mean nothing as values of a chunk column (nor the other
    way round): the snapshot starts its chunks over, with the new column's bound."""
    rows = [(i, i % 4, "v") for i in range(10)]
    db = make_db(tmp_path / "src.db", "items", "id INT PRIMARY KEY, g INTEGER NOT NULL, v", rows)
    saved: dict[str, Any] = {}
    async with reader_of(db, "items", None) as reader:
        spec = await reader.describe("items")
    runner = runner_of(spec, "g", saved, db)
    by_key = SnapshotProgress("s1", "r", 4, (9,), 0.0).chunk_sent((5,), 6, done=False)
    saved["items"] = SourceState(version=4).with_progress(by_key).to_value()
    try:
        with caplog.at_level(logging.INFO, logger="ctstream.snapshot"):
            again = await runner._progress(spec)
    finally:
        await runner.reader.close()
    assert again == replace(by_key, upper=(3,), after=None, chunks=0, rows=0, chunk_column="g")
    assert "reads again from its first chunk: its chunks are now ranges of 'g'" in caplog.text
