"""The T-SQL reader against a real SQL Server: runs only when CTSTREAM_TEST_MSSQL_DSN is set.

The DSN names a database the test may change: it turns on snapshot isolation and change
tracking for it if they are off, and creates (then drops) a schema with hostile names.
docker/README.md shows how to get such a server with docker compose.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from ctstream.errors import SourceError
from ctstream.settings import SourceSettings
from ctstream.source.dialects.mssql import quote_mssql
from ctstream.source.odbc_driver import resolve_driver
from ctstream.source.reader import SourceReader

DSN = os.environ.get("CTSTREAM_TEST_MSSQL_DSN")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.mssql,
    pytest.mark.skipif(
        not DSN,
        reason="CTSTREAM_TEST_MSSQL_DSN is not set: no SQL Server to test against "
        "(see docker/README.md)",
    ),
]

# Hostile on purpose: brackets, quotes, a statement end, a comment, a parameter marker.
SCHEMA = f"ct]s;--{int(time.time()) % 10**6}"
TABLE = "we]]ird ?tab'"
K1, K2, NAME, WHEN = "k]1", "k 2;--", "na?me", "at/*x*/"
_counter = itertools.count()


def _execute(conn: Any, sql: str, *params: Any) -> None:
    conn.cursor().execute(sql, *params)


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    import pyodbc

    assert DSN is not None
    # The DSN ctstream would open: the driver from the mssql extra when none is registered.
    conn = pyodbc.connect(resolve_driver(DSN), autocommit=True)
    q = quote_mssql
    try:
        db = conn.cursor().execute("SELECT DB_NAME()").fetchone()[0]
        info = (
            conn.cursor()
            .execute(
                "SELECT snapshot_isolation_state FROM sys.databases WHERE database_id = DB_ID()"
            )
            .fetchone()
        )
        if info[0] != 1:
            _execute(conn, f"ALTER DATABASE {q(db)} SET ALLOW_SNAPSHOT_ISOLATION ON")
        tracked = (
            conn.cursor()
            .execute("SELECT 1 FROM sys.change_tracking_databases WHERE database_id = DB_ID()")
            .fetchone()
        )
        if tracked is None:
            _execute(
                conn,
                f"ALTER DATABASE {q(db)} SET CHANGE_TRACKING = ON "
                "(CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)",
            )
        _execute(conn, f"CREATE SCHEMA {q(SCHEMA)}")
        _execute(
            conn,
            f"CREATE TABLE {q(SCHEMA)}.{q(TABLE)} ({q(K1)} int NOT NULL, "
            f"{q(K2)} nvarchar(20) NOT NULL, {q(NAME)} nvarchar(100) NULL, "
            f"{q(WHEN)} datetimeoffset NULL, CONSTRAINT {q('pk' + SCHEMA)} "
            f"PRIMARY KEY ({q(K2)}, {q(K1)}))",
        )
        _execute(conn, f"ALTER TABLE {q(SCHEMA)}.{q(TABLE)} ENABLE CHANGE_TRACKING")
        _execute(conn, f"CREATE TABLE {q(SCHEMA)}.[untracked] (id int PRIMARY KEY)")
        yield conn
    finally:
        for table in (TABLE, "untracked"):
            _execute(conn, f"DROP TABLE IF EXISTS {q(SCHEMA)}.{q(table)}")
        _execute(conn, f"DROP SCHEMA IF EXISTS {q(SCHEMA)}")
        conn.close()


def reader() -> SourceReader:
    assert DSN is not None
    name = f"{SCHEMA}.{TABLE}"
    return SourceReader(
        SourceSettings(dialect="mssql", dsn=SecretStr(DSN), tables=[name], fetch_size=2)
    )


def write(conn: Any, sql: str, *params: Any) -> None:
    q = quote_mssql
    _execute(conn, sql.replace("{t}", f"{q(SCHEMA)}.{q(TABLE)}"), *params)


async def test_database_checks_and_catalog(server: Any) -> None:
    r = reader()
    try:
        info = await r.check_database()
        assert info.change_tracking_on and info.snapshot_isolation_on
        assert info.retention_seconds and info.retention_seconds > 0
        spec = await r.describe(f"{SCHEMA}.{TABLE}")
        assert [c.name for c in spec.key_columns] == [K2, K1]
        assert {c.name: c.source_type for c in spec.columns}[WHEN] == "datetimeoffset"
        assert spec.object_id is not None
        with pytest.raises(SourceError, match="not change-tracked"):
            await r.describe(f"{SCHEMA}.untracked")
        with pytest.raises(SourceError, match="does not exist"):
            await r.describe(f"{SCHEMA}.missing")
    finally:
        await r.close()


async def test_changes_and_snapshot_at_one_version(server: Any) -> None:
    q = quote_mssql
    r = reader()
    try:
        spec = await r.describe(f"{SCHEMA}.{TABLE}")
        start = await r.min_valid_version(spec)
        async with r.changes(spec, start) as changes:
            before = changes.current_version
        when = dt.datetime(2026, 11, 22, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
        cols = f"({q(K1)}, {q(K2)}, {q(NAME)}, {q(WHEN)})"
        write(server, f"INSERT INTO {{t}} {cols} VALUES (?, ?, ?, ?)", 1, "23", "first", when)
        write(server, f"INSERT INTO {{t}} {cols} VALUES (?, ?, ?, ?)", 12, "3", "second", None)
        write(server, f"INSERT INTO {{t}} {cols} VALUES (?, ?, ?, ?)", 5, "x", "gone", None)
        write(server, f"UPDATE {{t}} SET {q(NAME)} = ? WHERE {q(K1)} = ?", "first!", 1)
        write(server, f"DELETE FROM {{t}} WHERE {q(K1)} = ?", 5)
        async with r.changes(spec, before) as changes:
            got = [c for batch in [b async for b in changes.batches()] for c in batch]
            current = changes.current_version
        by_key = {c.key: c for c in got}
        assert set(by_key) == {("23", 1), ("3", 12), ("x", 5)}
        assert by_key[("23", 1)].operation == "I"
        assert by_key[("23", 1)].row[NAME] == "first!"
        # Its local time, all seven digits and its offset (docs/types.md).
        assert by_key[("23", 1)].row[WHEN] == "2026-11-22 09:30:00.0000000 -05:00"
        assert by_key[("x", 5)].operation == "D"
        assert by_key[("x", 5)].row == {K2: "x", K1: 5}
        async with r.snapshot(spec) as snapshot:
            rows = [c for batch in [b async for b in snapshot.batches()] for c in batch]
            assert snapshot.version >= current
        assert {c.key for c in rows} >= {("23", 1), ("3", 12)}
        assert all(c.operation == "S" and c.version == snapshot.version for c in rows)
        async with r.changes(spec, snapshot.version) as changes:
            assert [b async for b in changes.batches()] == []
        health = await r.table_health(spec, before)
        assert health.oldest_unpolled_change_age_s is not None
        assert health.oldest_unpolled_change_age_s < 3600
    finally:
        await r.close()


async def test_values_arrive_exactly(server: Any) -> None:
    """Each type docs/types.md lists as read through an expression, with a value the
    plain read would change: 100 ns digits, a float's 17th digit, a Z value, an SRID."""
    q = quote_mssql
    table = f"types{next(_counter)}"
    name = f"{SCHEMA}.{table}"
    ref = f"{q(SCHEMA)}.{q(table)}"
    _execute(
        server,
        f"CREATE TABLE {ref} (id int PRIMARY KEY, d2 datetime2(7), d6 datetime2(6), "
        "t7 time(7), dto datetimeoffset(7), v1 sql_variant, v2 sql_variant, v3 sql_variant, "
        "g geography, g2 geography, m geometry, h hierarchyid)",
    )
    try:
        _execute(server, f"ALTER TABLE {ref} ENABLE CHANGE_TRACKING")
        _execute(
            server,
            f"INSERT INTO {ref} VALUES (1, '2026-12-07 14:08:19.1234567', "
            "'2026-12-07 14:08:19.123456', '23:59:59.9999999', "
            "'2026-12-07 14:08:19.1234567 +05:30', CAST(0.1 AS float) + CAST(0.2 AS float), "
            "CAST('2026-12-07 14:08:19.1234567' AS datetime2(7)), CAST(0x00ff AS varbinary(2)), "
            "geography::STGeomFromText('POINT(-122.349 47.651)', 4326), "
            "geography::STGeomFromText('POINT(-122.349 47.651 10)', 4269), "
            "geometry::STGeomFromText('LINESTRING(0 0 1 2, 0.1 0.7 3 4)', 0), "
            "hierarchyid::Parse('/1/3/'))",
        )
        r = SourceReader(SourceSettings(dialect="mssql", dsn=SecretStr(DSN or ""), tables=[name]))
        try:
            spec = await r.describe(name)
            async with r.snapshot(spec) as snapshot:
                [row] = [c.row for b in [b async for b in snapshot.batches()] for c in b]
        finally:
            await r.close()
    finally:
        _execute(server, f"DROP TABLE IF EXISTS {ref}")
    assert row["d2"] == "2026-12-07 14:08:19.1234567"
    assert row["d6"] == "2026-12-07T14:08:19.123456"
    assert row["t7"] == "23:59:59.9999999"
    assert row["dto"] == "2026-12-07 14:08:19.1234567 +05:30"
    assert row["v1"] == '{"base_type":"float","value":"3.0000000000000004E-1"}'
    assert row["v2"] == '{"base_type":"datetime2","value":"2026-12-07 14:08:19.1234567"}'
    assert row["v3"] == '{"base_type":"varbinary","value":"0x00FF"}'
    assert row["g"] == "POINT (-122.349 47.651)"
    assert row["g2"] == "SRID=4269;POINT Z (-122.349 47.651 10)"
    assert row["m"] == "SRID=0;LINESTRING ZM (0 0 1 2, 0.1 0.7 3 4)"
    assert row["h"] == "/1/3/"


async def test_chunks_read_every_row_once_in_key_order(server: Any) -> None:
    """Keyset chunks over a composite key of several types (hostile names): every row
    once, in the server's key order, the last key equal to the bound; each chunk its own
    transaction at its own version."""
    q = quote_mssql
    table = f"chunks{next(_counter)}"
    name = f"{SCHEMA}.{table}"
    ref = f"{q(SCHEMA)}.{q(table)}"
    k1, k2, k3 = "k]1;--", "k 2'", "k?3"
    _execute(
        server,
        f"CREATE TABLE {ref} ({q(k1)} varchar(20) NOT NULL, {q(k2)} datetime2(7) NOT NULL, "
        f"{q(k3)} uniqueidentifier NOT NULL, v int NULL, "
        f"PRIMARY KEY ({q(k1)}, {q(k2)}, {q(k3)}))",
    )
    try:
        _execute(server, f"ALTER TABLE {ref} ENABLE CHANGE_TRACKING")
        for i in range(57):
            _execute(
                server,
                f"INSERT INTO {ref} VALUES (?, DATEADD(NANOSECOND, ? * 100, "
                "CAST('2026-12-07 00:00:00' AS datetime2(7))), NEWID(), ?)",
                ["a", "B", "b", "é"][i % 4],
                i % 5,
                i,
            )
        r = SourceReader(SourceSettings(dialect="mssql", dsn=SecretStr(DSN or ""), tables=[name]))
        try:
            spec = await r.describe(name)
            assert r.chunk_refusal(spec) is None
            async with r.snapshot(spec) as whole:
                expected = [c.key for b in [b async for b in whole.batches()] for c in b]
            upper, _ = await r.snapshot_bound(spec)
            assert upper is not None
            got: list[Any] = []
            after = None
            while True:
                async with r.snapshot_chunk(spec, after, upper, 7) as chunk:
                    rows = [c.key for b in [b async for b in chunk.batches()] for c in b]
                got += rows
                if len(rows) < 7 or rows[-1] == upper:
                    break
                after = rows[-1]
        finally:
            await r.close()
    finally:
        _execute(server, f"DROP TABLE IF EXISTS {ref}")
    assert sorted(got) == sorted(expected) and len(set(got)) == len(got) == 57
    assert got[-1] == upper
