"""The SQLite dialect's generated SQL: quoted identifiers, bound versions, real results."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctstream.models import ColumnSpec, TableSpec
from ctstream.source.changes import exact_rows_to_changes
from ctstream.source.dialects import SqliteDialect, Statement, dialect_for, quote_sqlite
from ctstream.source.dialects.sqlite import ExactChangeQuery, ExactSnapshotQuery
from ctstream.source.sqlite_tracking import enable_tracking

TABLE = 'we"ird;tab'
K1 = 'k"1'
K2 = "k 2"
V1 = "v al"
V2 = 'x"y'

# Hostile names; the primary key order (K2, K1) differs from the column order (K1, K2).
CREATE = (
    f"CREATE TABLE {quote_sqlite(TABLE)} ("
    f"{quote_sqlite(K1)} INTEGER NOT NULL, {quote_sqlite(K2)} TEXT NOT NULL, "
    f"{quote_sqlite(V1)} TEXT, {quote_sqlite(V2)} REAL, "
    f"PRIMARY KEY ({quote_sqlite(K2)}, {quote_sqlite(K1)}))"
)

_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_LITERAL = re.compile(r"'(?:[^']|'')*'")


def hostile_spec(change_table: str | None = "_ct__" + TABLE) -> TableSpec:
    return TableSpec(
        name=TABLE,
        schema=None,
        table=TABLE,
        columns=(
            ColumnSpec(K1, "INTEGER", nullable=False, key_ordinal=2),
            ColumnSpec(K2, "TEXT", nullable=False, key_ordinal=1),
            ColumnSpec(V1, "TEXT"),
            ColumnSpec(V2, "REAL"),
        ),
        change_table=change_table,
    )


def spec_from_catalog(conn: sqlite3.Connection, name: str) -> TableSpec:
    """Build the spec the way the reader does, through the dialect's catalog SQL."""
    d = SqliteDialect()
    schema, table = d.split_name(name)
    assert schema is None
    stmt = d.tracked_table(schema, table)
    tracked = conn.execute(stmt.sql, stmt.params).fetchone()
    stmt = d.columns(schema, table)
    rows = conn.execute(stmt.sql, stmt.params).fetchall()
    assert tracked is not None
    columns = tuple(
        ColumnSpec(str(n), str(t or ""), nullable=bool(nullable), key_ordinal=pk)
        for n, t, nullable, pk, _precision, _scale, _length in rows
    )
    return TableSpec(name, None, name, columns, change_table=str(tracked[0]))


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(tmp_path / "source.db", isolation_level=None)
    try:
        c.execute(CREATE)
        enable_tracking(c, TABLE)
        yield c
    finally:
        c.close()


def decoded(
    rows: list[tuple[Any, ...]], spec: TableSpec, query: ExactChangeQuery | ExactSnapshotQuery
) -> list[tuple[Any, ...]]:
    """Result rows as the reader decodes them: (operation, version, keys, other columns)."""
    changes = exact_rows_to_changes(rows, spec, query.key_count, query.value_columns, query.exact)
    return [
        (c.operation, c.version, *c.key, *(c.row.get(n) for n in query.value_columns))
        for c in changes
    ]


def run(conn: sqlite3.Connection, spec: TableSpec, last: int) -> list[tuple[Any, ...]]:
    query = SqliteDialect().changes_query(spec)
    assert isinstance(query, ExactChangeQuery)
    rows = conn.execute(query.sql, (last,) * query.last_version_params).fetchall()
    return decoded(rows, spec, query)


def insert(conn: sqlite3.Connection, k1: int, k2: str, v1: str, v2: float) -> None:
    q = quote_sqlite
    conn.execute(
        f"INSERT INTO {q(TABLE)} ({q(K1)}, {q(K2)}, {q(V1)}, {q(V2)}) VALUES (?, ?, ?, ?)",
        (k1, k2, v1, v2),
    )


# --- quoting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("a", '"a"'), ('a"b', '"a""b"'), ('""', '""""""'), ("a b;--", '"a b;--"'), ("", '""')],
)
def test_quote_sqlite(name: str, quoted: str) -> None:
    assert quote_sqlite(name) == quoted


@pytest.mark.parametrize("name", ["\x00", "a\x00b", 'x"\x00'])
def test_quote_sqlite_refuses_nul(name: str) -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote_sqlite(name)


def test_quoted_names_work_in_sqlite() -> None:
    with sqlite3.connect(":memory:") as c:
        for name in [TABLE, "a b", '"', "select", "x]y", "日本"]:
            c.execute(f"CREATE TABLE {quote_sqlite(name)} ({quote_sqlite(name)} INTEGER)")
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
    assert {TABLE, "a b", '"', "select", "x]y", "日本"} <= names


# --- the generated SQL -----------------------------------------------------------------


def test_changes_query_shape() -> None:
    query = SqliteDialect().changes_query(hostile_spec())
    assert query.last_version_params == 2
    assert query.key_count == 2
    assert query.value_columns == (V1, V2)
    assert query.sql.count("?") == 2


def test_changes_query_quotes_every_identifier() -> None:
    sql = SqliteDialect().changes_query(hostile_spec()).sql
    assert '"we""ird;tab"' in sql
    assert '"_ct__we""ird;tab"' in sql
    for name in ('"k""1"', '"k 2"', '"v al"', '"x""y"'):
        assert name in sql
    # With quoted identifiers and string literals removed, nothing of the names is left:
    # no name was pasted unquoted, and the ';' inside the table name is not a statement end.
    bare = _LITERAL.sub("''", _QUOTED.sub('""', sql))
    for fragment in ("ird", "tab", "k 2", "v al", ";", "x"):
        assert fragment not in bare, f"{fragment!r} appears unquoted in {sql}"


def test_changes_query_selects_keys_from_change_table_and_values_from_table() -> None:
    sql = SqliteDialect().changes_query(hostile_spec()).sql
    query = SqliteDialect().changes_query(hostile_spec())
    assert isinstance(query, ExactChangeQuery)
    items = sql[: sql.index(" FROM ")].removeprefix("SELECT ").split(", ", 2)
    # operation CASE, version, keys in key order (K2 has ordinal 1), then other columns,
    # each read exactly (the REAL through printf), then the odd-row column.
    assert items[0].startswith("CASE ")
    assert items[1] == "c.sys_change_version"
    reads = ", ".join((*query.exact.expressions, query.exact.odd_expression))
    assert items[2] == reads
    assert query.exact.expressions[:3] == ('c."k 2"', 'c."k""1"', 't."v al"')
    assert 'printf(\'%!.20g\', t."x""y")' in query.exact.expressions[3]
    assert 'AS c LEFT JOIN "we""ird;tab" AS t' in sql
    assert 't."k 2" = c."k 2"' in sql
    assert 't."k""1" = c."k""1"' in sql


def test_changes_query_is_valid_for_sqlite(conn: sqlite3.Connection) -> None:
    # EXPLAIN compiles the statement without running it: every name resolves.
    sql = SqliteDialect().changes_query(hostile_spec()).sql
    conn.execute(f"EXPLAIN {sql}", (0, 0)).fetchall()


def test_changes_query_needs_a_change_table() -> None:
    with pytest.raises(ValueError, match="no change table"):
        SqliteDialect().changes_query(hostile_spec(change_table=None))


def test_catalog_sql_builds_the_same_spec(conn: sqlite3.Connection) -> None:
    spec = spec_from_catalog(conn, TABLE)
    assert spec.change_table == "_ct__" + TABLE
    assert [c.name for c in spec.key_columns] == [K2, K1]
    assert SqliteDialect().changes_query(spec) == SqliteDialect().changes_query(hostile_spec())


def one(conn: sqlite3.Connection, stmt: Statement) -> tuple[Any, ...]:
    row = conn.execute(stmt.sql, stmt.params).fetchone()
    assert row is not None
    return tuple(row)


def test_version_sql(conn: sqlite3.Connection) -> None:
    d = SqliteDialect()
    assert one(conn, d.current_version()) == (0,)
    insert(conn, 1, "a", "x", 1.0)
    assert one(conn, d.current_version()) == (1,)
    assert one(conn, d.min_valid_version(hostile_spec())) == (0,)


def test_untracked_table_has_no_tracking_row(conn: sqlite3.Connection) -> None:
    d = SqliteDialect()
    conn.execute('CREATE TABLE "plain" (id INTEGER PRIMARY KEY)')
    stmt = d.tracked_table(None, "plain")
    assert conn.execute(stmt.sql, stmt.params).fetchone() is None
    stmt = d.columns(None, "missing")
    assert conn.execute(stmt.sql, stmt.params).fetchall() == []
    # The catalog lists the tracked tables only (for source.tables patterns).
    stmt = d.tracked_tables()
    tracked = conn.execute(stmt.sql, stmt.params).fetchall()
    assert (None, "plain") not in tracked and len(tracked) == 1 and tracked[0][0] is None


def test_snapshot_query_reads_every_row_keys_first(conn: sqlite3.Connection) -> None:
    insert(conn, 1, "a", "one", 1.5)
    insert(conn, 2, "b;--", 'tw"o', None)
    spec = spec_from_catalog(conn, TABLE)
    query = SqliteDialect().snapshot_query(spec)
    assert isinstance(query, ExactSnapshotQuery)
    assert query.key_count == 2
    assert query.value_columns == (V1, V2)
    rows = [("S", 0, *r) for r in conn.execute(query.sql).fetchall()]
    assert sorted(r[2:] for r in decoded(rows, spec, query)) == [
        ("a", 1, "one", 1.5),
        ("b;--", 2, 'tw"o', None),
    ]


def test_table_health(conn: sqlite3.Connection) -> None:
    d = SqliteDialect()
    spec = spec_from_catalog(conn, TABLE)
    retention, age = one(conn, d.table_health(spec, 0))
    assert retention > 0
    assert age is None  # nothing changed after version 0
    insert(conn, 1, "a", "one", 1.5)
    _, age = one(conn, d.table_health(spec, 0))
    assert 0 <= age < 60
    assert one(conn, d.table_health(spec, 1))[1] is None
    assert d.cleanup_backlog() is None


def test_database_info_says_tracking_on_once_a_table_is_tracked() -> None:
    with contextlib.closing(sqlite3.connect(":memory:")) as c:
        stmt = SqliteDialect().database_info()
        assert c.execute(stmt.sql, stmt.params).fetchone() == (0, None, None, None)
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        enable_tracking(c, "t")
        assert c.execute(stmt.sql, stmt.params).fetchone() == (1, None, None, None)


def test_dialect_for() -> None:
    assert dialect_for("sqlite").name == "sqlite"
    assert dialect_for("mssql").name == "mssql"
    with pytest.raises(ValueError, match=r"source\.dialect"):
        dialect_for("oracle")


# --- executed against a real tracked database ------------------------------------------


def test_changes_against_tracked_database(conn: sqlite3.Connection) -> None:
    q = quote_sqlite
    insert(conn, 1, "a", "one", 1.5)  # v1
    insert(conn, 2, "b", "two", 2.5)  # v2
    insert(conn, 3, "c;--", 'th"ree', 3.5)  # v3
    conn.execute(f"UPDATE {q(TABLE)} SET {q(V1)} = 'one!' WHERE {q(K1)} = 1")  # v4
    conn.execute(f"DELETE FROM {q(TABLE)} WHERE {q(K1)} = 2")  # v5
    spec = spec_from_catalog(conn, TABLE)

    # Row layout: operation, version, keys in key order (K2, K1), then V1, V2.
    assert run(conn, spec, 0) == [
        ("I", 3, "c;--", 3, 'th"ree', 3.5),
        ("I", 4, "a", 1, "one!", 1.5),  # created after 0: reported as an insert
        ("D", 5, "b", 2, None, None),  # deleted: the key only, no row to join
    ]
    assert run(conn, spec, 3) == [
        ("U", 4, "a", 1, "one!", 1.5),  # created before 3: an update
        ("D", 5, "b", 2, None, None),
    ]
    assert run(conn, spec, 4) == [("D", 5, "b", 2, None, None)]
    assert run(conn, spec, 5) == []


def test_reinsert_and_key_change(conn: sqlite3.Connection) -> None:
    q = quote_sqlite
    insert(conn, 1, "a", "one", 1.0)  # v1
    insert(conn, 2, "b", "two", 2.0)  # v2
    conn.execute(f"DELETE FROM {q(TABLE)} WHERE {q(K1)} = 1")  # v3
    insert(conn, 1, "a", "again", 9.0)  # v4: the same key lives again
    # Changing the key: a delete of the old key (v5) and an insert of the new one (v6).
    conn.execute(f"UPDATE {q(TABLE)} SET {q(K2)} = 'z' WHERE {q(K1)} = 2")
    spec = spec_from_catalog(conn, TABLE)
    assert run(conn, spec, 2) == [
        ("I", 4, "a", 1, "again", 9.0),
        ("D", 5, "b", 2, None, None),
        ("I", 6, "z", 2, "two", 2.0),
    ]


def test_version_is_bound_not_pasted(conn: sqlite3.Connection) -> None:
    insert(conn, 1, "a", "one", 1.0)
    spec = spec_from_catalog(conn, TABLE)
    query = SqliteDialect().changes_query(spec)
    # The same SQL text serves every version; a hostile "version" is just a value.
    assert SqliteDialect().changes_query(spec).sql == query.sql
    rows = conn.execute(query.sql, ("0 OR 1=1; --", "0 OR 1=1; --")).fetchall()
    assert rows == []  # text compares greater than any integer in SQLite
    assert run(conn, spec, 0) == [("I", 1, "a", 1, "one", 1.0)]
