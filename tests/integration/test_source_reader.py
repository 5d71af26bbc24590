"""The source reader over aioodbc and the SQLite ODBC driver, against real files."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from ctstream.errors import SourceError, VersionTooOld
from ctstream.settings import SourceSettings
from ctstream.source.dialects import SqliteDialect, Statement
from ctstream.source.reader import SourceReader
from ctstream.source.sqlite_tracking import cleanup, track_database

pytestmark = pytest.mark.integration

HOSTILE = 'we"ird ]tab;le'


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "src.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            f'CREATE TABLE "{HOSTILE.replace(chr(34), chr(34) * 2)}" '
            '("k""1" TEXT, "k 2" INTEGER, "v;al" TEXT, b BLOB, PRIMARY KEY ("k 2", "k""1"))'
        )
        conn.commit()
    track_database(path, [HOSTILE])
    return path


def reader_for(db: Path, fetch_size: int = 7) -> SourceReader:
    settings = SourceSettings(
        dsn=f"Driver=SQLite3;Database={db}", tables=[HOSTILE], fetch_size=fetch_size
    )
    return SourceReader(settings)


def write(db: Path, sql: str, rows: list[tuple[object, ...]]) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executemany(sql, rows)
        conn.commit()


async def test_hostile_names_composite_key_and_streamed_batches(db: Path) -> None:
    table = '"' + HOSTILE.replace('"', '""') + '"'
    write(
        db,
        f"INSERT INTO {table} VALUES (?, ?, ?, ?)",
        [(f"a{i}", i, f"v{i}", bytes([i])) for i in range(100)],
    )
    write(db, f'UPDATE {table} SET "v;al" = ? WHERE "k 2" = ?', [("changed", 5)])
    write(db, f'DELETE FROM {table} WHERE "k 2" = ?', [(6,)])
    reader = reader_for(db)
    try:
        spec = await reader.describe(HOSTILE)
        assert [c.name for c in spec.key_columns] == ["k 2", 'k"1']  # primary-key order
        start = await reader.min_valid_version(spec)
        batches = []
        async with reader.changes(spec, start) as changes:
            async for batch in changes.batches():
                batches.append(batch)
            current = changes.current_version
    finally:
        await reader.close()
    assert len(batches) == 15  # 100 keys, 7 per fetch: streamed, not loaded whole
    assert all(len(b) <= 7 for b in batches)
    by_key = {c.key: c for b in batches for c in b}
    assert len(by_key) == 100
    assert by_key[(5, "a5")].operation == "I"  # net change relative to the start
    assert by_key[(5, "a5")].row["v;al"] == "changed"
    assert by_key[(6, "a6")].operation == "D"
    assert by_key[(6, "a6")].row == {"k 2": 6, 'k"1': "a6"}  # deletes carry only the key
    assert by_key[(7, "a7")].row["b"] == "Bw=="  # bytes as base64
    assert current == 102


async def test_changes_since_a_version_are_reported_relative_to_it(db: Path) -> None:
    table = '"' + HOSTILE.replace('"', '""') + '"'
    write(db, f"INSERT INTO {table} VALUES (?, ?, ?, ?)", [("x", 1, "one", None)])
    reader = reader_for(db)
    try:
        spec = await reader.describe(HOSTILE)
        async with reader.changes(spec, 0) as changes:
            after_insert = changes.current_version
        write(db, f'UPDATE {table} SET "v;al" = ? WHERE "k 2" = ?', [("two", 1)])
        async with reader.changes(spec, after_insert) as changes:
            seen = [c for b in [b async for b in changes.batches()] for c in b]
    finally:
        await reader.close()
    assert [(c.operation, c.row["v;al"]) for c in seen] == [("U", "two")]


async def test_version_below_min_valid_needs_a_resnapshot(db: Path) -> None:
    table = '"' + HOSTILE.replace('"', '""') + '"'
    write(db, f"INSERT INTO {table} VALUES (?, ?, ?, ?)", [("x", 1, "one", None)])
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE _ctstream_tracked SET retention_seconds = 0.001")
        conn.commit()
        cleanup(conn, now=10**10)
    reader = reader_for(db)
    try:
        spec = await reader.describe(HOSTILE)
        with pytest.raises(VersionTooOld, match="re-snapshot"):
            async with reader.changes(spec, 0):
                pass
    finally:
        await reader.close()


async def test_untracked_and_missing_tables_are_refused(tmp_path: Path, db: Path) -> None:
    reader = reader_for(db)
    try:
        with pytest.raises(SourceError, match="does not exist"):
            await reader.describe("missing")
    finally:
        await reader.close()


async def test_snapshot_reads_every_row_at_the_current_version(db: Path) -> None:
    table = '"' + HOSTILE.replace('"', '""') + '"'
    write(
        db, f"INSERT INTO {table} VALUES (?, ?, ?, ?)", [(f"k{i}", i, "v", None) for i in range(20)]
    )
    write(db, f'DELETE FROM {table} WHERE "k 2" < 5', [()])
    reader = reader_for(db, fetch_size=3)
    try:
        spec = await reader.describe(HOSTILE)
        async with reader.snapshot(spec) as snapshot:
            batches = [b async for b in snapshot.batches()]
            version = snapshot.version
        assert version == 25  # 20 inserts + 5 deletes, one version each
        assert max(len(b) for b in batches) == 3  # streamed in fetch_size chunks
        rows = [c for b in batches for c in b]
        assert sorted(c.key for c in rows) == sorted((i, f"k{i}") for i in range(5, 20))
        assert {(c.operation, c.version) for c in rows} == {("S", 25)}
        async with reader.changes(spec, version) as changes:  # CT continues from there
            assert [b async for b in changes.batches()] == []
    finally:
        await reader.close()


class _NoSnapshotIsolation(SqliteDialect):
    """The SQLite dialect, but reporting a database without snapshot isolation."""

    def database_info(self) -> Statement:
        return Statement("SELECT 1, 0, NULL, NULL")


async def test_a_database_without_snapshot_isolation_is_refused(db: Path) -> None:
    settings = SourceSettings(dsn=f"Driver=SQLite3;Database={db}", tables=[HOSTILE])
    reader = SourceReader(settings, _NoSnapshotIsolation())
    try:
        with pytest.raises(SourceError, match="ALLOW_SNAPSHOT_ISOLATION ON"):
            await reader.check_database()
    finally:
        await reader.close()
    reader = reader_for(db)
    try:
        info = await reader.check_database()
        assert info.change_tracking_on and info.snapshot_isolation_on is None
    finally:
        await reader.close()


async def test_source_statements_get_poll_timeout_as_their_query_timeout(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
        conn.commit()
    track_database(db, ["items"])
    source = SourceSettings(
        dialect="sqlite", dsn=f"Driver=SQLite3;Database={db}", tables=["items"], poll_timeout=7
    )
    reader = SourceReader(source)
    try:
        await reader.database_info()
        # The ODBC statement attribute SQL Server's driver enforces (SQL_ATTR_QUERY_TIMEOUT).
        async with reader._pool.lease() as conn:  # the connection database_info used
            assert conn.timeout == 7
    finally:
        await reader.close()


# A statement that runs for a while in SQLite: a recursive count.
_SLOW = Statement(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) "
    "SELECT COUNT(*) FROM n",
    (),
)


async def test_a_statement_cancelled_midway_is_not_closed_under_itself(db: Path) -> None:
    """A poll cancelled mid-statement (a rebalance): the pool closes its connection, and
    the close must wait for the statement, which goes on in its thread (a close beside it
    on the same ODBC handle can crash the process). The cancelled read returns once the
    statement is over, and the reader goes on with a new connection."""
    reader = reader_for(db)
    try:
        started = time.monotonic()
        assert tuple(await reader._fetch("slow", _SLOW)) == (3000000,)
        whole = time.monotonic() - started
        task = asyncio.create_task(reader._fetch("slow", _SLOW))
        await asyncio.sleep(whole / 5)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The close waited for the rest of the statement (most of its run).
        assert time.monotonic() - started >= whole / 3
        assert tuple(await reader._fetch("after", Statement("SELECT 7", ()))) == (7,)
    finally:
        await reader.close()
