"""The SQLite Change Tracking stand-in, against real SQLite files."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctstream.errors import SourceError
from ctstream.source.sqlite_tracking import (
    OPERATION_CASE_SQL,
    cleanup,
    current_version,
    disable_tracking,
    enable_tracking,
    min_valid_version,
    quote_ident,
    reported_operation,
    track_database,
    tracked_tables,
    untrack_database,
)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(tmp_path / "src.db", isolation_level=None)
    try:
        yield c
    finally:
        c.close()


def changes(conn: sqlite3.Connection, table: str, last: int) -> list[tuple[Any, ...]]:
    """What a reader synced at ``last`` sees: key columns..., reported op, version."""
    info = next(t for t in tracked_tables(conn) if t.table_name == table)
    keys = ", ".join(f"c.{quote_ident(k)}" for k in info.key_columns)
    sql = (
        f"SELECT {keys}, {OPERATION_CASE_SQL}, c.sys_change_version"
        f" FROM {quote_ident(info.change_table)} c"
        f" WHERE c.sys_change_version > ? ORDER BY c.sys_change_version"
    )
    return conn.execute(sql, (last, last)).fetchall()


def raw(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT * FROM {quote_ident('_ct__' + table)} ORDER BY sys_change_version"
    ).fetchall()


def objects(conn: sqlite3.Connection) -> set[str]:
    sql = "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_autoindex%'"
    return {r[0] for r in conn.execute(sql)}


SYS = [
    "sys_change_version",
    "sys_change_creation_version",
    "sys_change_operation",
    "sys_change_time",
]


def test_version_counter_is_database_wide(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)")
    assert current_version(conn) == 0
    enable_tracking(conn, "a")
    enable_tracking(conn, "b")
    conn.execute("INSERT INTO a VALUES (1, 'x')")
    conn.execute("INSERT INTO b VALUES (1, 'y')")
    conn.execute("UPDATE a SET v = 'z' WHERE id = 1")
    conn.execute("INSERT INTO b VALUES (2, 'w'), (3, 'w')")  # per row, not per statement
    assert current_version(conn) == 5
    assert [(r[0], r[1]) for r in raw(conn, "a")] == [(1, 3)]
    assert [(r[0], r[1]) for r in raw(conn, "b")] == [(1, 2), (2, 4), (3, 5)]


def test_net_change_keeps_last_operation(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER)")
    enable_tracking(conn, "items")
    conn.execute("CREATE TABLE other (id INTEGER PRIMARY KEY)")
    enable_tracking(conn, "other")
    conn.execute("INSERT INTO other VALUES (1)")
    before = current_version(conn)
    conn.execute("INSERT INTO items VALUES (7, 0)")
    after_insert = current_version(conn)
    for i in range(3):
        conn.execute("UPDATE items SET v = ? WHERE id = 7", (i,))
    rows = raw(conn, "items")
    assert len(rows) == 1
    key, version, creation, op, _ = rows[0]
    assert (key, version, creation, op) == (7, before + 4, before + 1, "U")
    assert changes(conn, "items", before) == [(7, "I", before + 4)]
    assert changes(conn, "items", after_insert) == [(7, "U", before + 4)]
    assert changes(conn, "items", before + 4) == []
    assert reported_operation(op, creation, before) == "I"
    assert reported_operation(op, creation, after_insert) == "U"


def test_delete_keeps_only_key_and_reports_d(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, secret TEXT, n REAL)")
    enable_tracking(conn, "items")
    conn.execute("INSERT INTO items VALUES (1, 'pw', 1.5)")
    conn.execute("DELETE FROM items WHERE id = 1")
    cols = [r[1] for r in conn.execute("SELECT * FROM pragma_table_info('_ct__items')")]
    assert cols == ["id", *SYS]
    assert "pw" not in str(raw(conn, "items"))
    assert changes(conn, "items", 0) == [(1, "D", 2)]
    assert changes(conn, "items", 1) == [(1, "D", 2)]
    # The reader's LEFT JOIN finds no row for a deleted key.
    joined = conn.execute(
        "SELECT c.id, t.secret FROM _ct__items c LEFT JOIN items t ON t.id = c.id"
    ).fetchall()
    assert joined == [(1, None)]


def test_insert_delete_reinsert(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
    enable_tracking(conn, "items")
    conn.execute("INSERT INTO items VALUES (1, 'a')")  # v1
    conn.execute("DELETE FROM items")  # v2
    conn.execute("INSERT INTO items VALUES (1, 'b')")  # v3
    assert [r[:4] for r in raw(conn, "items")] == [(1, 3, 3, "I")]
    assert changes(conn, "items", 0) == [(1, "I", 3)]
    assert changes(conn, "items", 2) == [(1, "I", 3)]
    conn.execute("UPDATE items SET v = 'c'")  # v4: creation stays at the re-insert
    assert [r[:4] for r in raw(conn, "items")] == [(1, 4, 3, "U")]
    assert changes(conn, "items", 3) == [(1, "U", 4)]


def test_key_changing_update_is_delete_plus_insert(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
    enable_tracking(conn, "items")
    conn.execute("INSERT INTO items VALUES (1, 'a')")
    conn.execute("UPDATE items SET id = 2 WHERE id = 1")
    assert current_version(conn) == 3
    assert [r[:4] for r in raw(conn, "items")] == [(1, 2, 1, "D"), (2, 3, 3, "I")]
    assert changes(conn, "items", 1) == [(1, "D", 2), (2, "I", 3)]


@pytest.mark.parametrize("without_rowid", [False, True])
def test_composite_text_keys_do_not_collide(conn: sqlite3.Connection, without_rowid: bool) -> None:
    suffix = " WITHOUT ROWID" if without_rowid else ""
    # PK order (b, a) differs from column order: keys follow the PK ordinal.
    conn.execute(f"CREATE TABLE t (a TEXT, b TEXT, x INTEGER, PRIMARY KEY (b, a)){suffix}")
    info = enable_tracking(conn, "t")
    assert info.key_columns == ("b", "a")
    conn.execute("INSERT INTO t VALUES ('1', '23', 0), ('12', '3', 0)")
    conn.execute("UPDATE t SET x = 1 WHERE a = '12' AND b = '3'")
    assert changes(conn, "t", 0) == [("23", "1", "I", 1), ("3", "12", "I", 3)]
    assert changes(conn, "t", 2) == [("3", "12", "U", 3)]
    decl = [(r[1], r[2]) for r in conn.execute("SELECT * FROM pragma_table_info('_ct__t')")]
    assert decl[:2] == [("b", "TEXT"), ("a", "TEXT")]


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT) WITHOUT ROWID",
        "CREATE TABLE t (id INTEGER PRIMARY KEY DESC, v TEXT)",  # not a rowid alias
    ],
)
def test_integer_key_that_is_not_a_rowid_alias_accepts_text(
    conn: sqlite3.Connection, ddl: str
) -> None:
    conn.execute(ddl)
    enable_tracking(conn, "t")
    conn.execute("INSERT INTO t VALUES ('abc', 'x'), (5, 'y')")  # must not break the app
    assert changes(conn, "t", 0) == [("abc", "I", 1), (5, "I", 2)]


def test_cleanup_removes_old_rows_and_advances_min_valid(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE quiet (id INTEGER PRIMARY KEY)")
    enable_tracking(conn, "items", retention_seconds=3600)
    enable_tracking(conn, "quiet", retention_seconds=3600)
    conn.execute("INSERT INTO items VALUES (1), (2), (3)")  # v1..v3
    now = time.time()
    for row_id, age in ((1, 7200), (2, 4000), (3, 10)):
        conn.execute("UPDATE _ct__items SET sys_change_time = ? WHERE id = ?", (now - age, row_id))
    assert min_valid_version(conn, "items") == 0
    assert cleanup(conn, now=now) == {"items": 2, "quiet": 0}
    assert [r[0] for r in raw(conn, "items")] == [3]
    assert min_valid_version(conn, "items") == 2
    assert min_valid_version(conn, "quiet") == 0
    # Nothing more to remove: min_valid_version must not move (and never goes back).
    assert cleanup(conn, now=now) == {"items": 0, "quiet": 0}
    assert min_valid_version(conn, "items") == 2
    assert cleanup(conn, now=now + 7200) == {"items": 1, "quiet": 0}
    assert min_valid_version(conn, "items") == 3


def test_refuses_missing_table_view_and_no_primary_key(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE heap (a INTEGER, b TEXT)")
    conn.execute("CREATE VIEW v AS SELECT a FROM heap")
    with pytest.raises(SourceError, match=r"'heap'.*PRIMARY KEY"):
        enable_tracking(conn, "heap")
    with pytest.raises(SourceError, match=r"'nope'.*does not exist"):
        enable_tracking(conn, "nope")
    with pytest.raises(SourceError, match=r"'v' is a view"):
        enable_tracking(conn, "v")
    with pytest.raises(SourceError, match="NUL"):
        enable_tracking(conn, "bad\x00name")
    assert not any(name.startswith("_ct__") for name in objects(conn))
    assert tracked_tables(conn) == []
    with pytest.raises(SourceError, match="not change-tracked"):
        min_valid_version(conn, "heap")


@pytest.mark.parametrize("table", ['we"ird ]tab;le', "{0} %s ? [x]) 'q' \u00e9\u2603"])
def test_hostile_identifiers_end_to_end(conn: sqlite3.Connection, table: str) -> None:
    col, key2, val = 'c"ol', "ключ; DROP TABLE victim; --", "v]al"
    qt, qc, qk, qv = (quote_ident(n) for n in (table, col, key2, val))
    conn.execute("CREATE TABLE victim (id INTEGER PRIMARY KEY)")
    conn.execute(
        f"CREATE TABLE {qt} ({qc} TEXT, {qk} INTEGER, {qv} TEXT, PRIMARY KEY ({qc}, {qk}))"
    )
    info = enable_tracking(conn, table)
    assert info.table_name == table
    assert info.change_table == "_ct__" + table
    assert info.key_columns == (col, key2)
    conn.execute(f"INSERT INTO {qt} VALUES ('k\"1', 1, 'a'), ('k2', 2, 'b')")  # v1, v2
    conn.execute(f"UPDATE {qt} SET {qv} = 'z' WHERE {qc} = 'k2'")  # v3
    conn.execute(f"UPDATE {qt} SET {qc} = 'k3' WHERE {qc} = 'k\"1'")  # v4 D, v5 I
    conn.execute(f"DELETE FROM {qt} WHERE {qc} = 'k2'")  # v6
    assert changes(conn, table, 2) == [('k"1', 1, "D", 4), ("k3", 1, "I", 5), ("k2", 2, "D", 6)]
    joined = conn.execute(
        f"SELECT c.{qc}, t.{qv} FROM {quote_ident(info.change_table)} c"
        f" LEFT JOIN {qt} t ON t.{qc} = c.{qc} AND t.{qk} = c.{qk} ORDER BY c.sys_change_version"
    ).fetchall()
    assert joined == [('k"1', None), ("k3", "a"), ("k2", None)]
    assert "victim" in objects(conn)
    assert cleanup(conn, now=time.time() + 10 * 86400) == {table: 3}
    assert min_valid_version(conn, table) == 6
    assert disable_tracking(conn, table) is True
    assert not any(name.startswith("_ct__") for name in objects(conn))


def test_enable_is_idempotent(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE Items (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO Items VALUES (1)")
    first = enable_tracking(conn, "Items", retention_seconds=60)
    conn.execute("INSERT INTO Items VALUES (2)")
    again = enable_tracking(conn, "items", retention_seconds=999)  # identifiers ignore case
    assert again == first
    assert again.retention_seconds == 60
    triggers = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'")
    assert triggers.fetchone()[0] == 4
    conn.execute("INSERT INTO Items VALUES (3)")
    assert current_version(conn) == 2  # one bump per row, not one per trigger copy


def test_disable_removes_everything(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE keep (id INTEGER PRIMARY KEY)")
    enable_tracking(conn, "items")
    enable_tracking(conn, "keep")
    conn.execute("INSERT INTO items VALUES (1)")
    assert disable_tracking(conn, "items") is True
    assert disable_tracking(conn, "items") is False
    assert objects(conn) - {"items", "keep"} == {
        "_ctstream_version",
        "_ctstream_tracked",
        "_ct__keep",
        "_ct__keep__by_version",
        "_ct__keep__ins",
        "_ct__keep__upd",
        "_ct__keep__updkey",
        "_ct__keep__del",
    }
    assert [t.table_name for t in tracked_tables(conn)] == ["keep"]
    conn.execute("INSERT INTO items VALUES (2)")
    # Disabling moved the version on: tracked again, the table has a new identity.
    assert current_version(conn) == 2
    info = enable_tracking(conn, "items")  # re-enable starts from the current version
    assert (info.enabled_version, info.min_valid_version) == (2, 2)


def test_recreated_table_is_reported_broken(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    enable_tracking(conn, "items")
    conn.execute("DROP TABLE items")  # drops the triggers with it
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    with pytest.raises(SourceError, match=r"'items' is broken"):
        enable_tracking(conn, "items")
    assert disable_tracking(conn, "items") is True
    assert enable_tracking(conn, "items").key_columns == ("id",)


def test_enable_inside_caller_transaction_rolls_back_with_it(tmp_path: Path) -> None:
    c = sqlite3.connect(tmp_path / "tx.db")  # default (deferred) isolation level
    try:
        c.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
        c.execute("INSERT INTO items VALUES (1)")  # opens an implicit transaction
        assert c.in_transaction
        enable_tracking(c, "items")
        assert c.in_transaction  # the caller's transaction was not committed under it
        c.rollback()
        assert tracked_tables(c) == []
        assert not any(n.startswith("_ct") for n in objects(c))
    finally:
        c.close()


def test_track_database_sets_wal_and_is_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
        c.execute("CREATE TABLE lines (o INTEGER, n INTEGER, PRIMARY KEY (o, n))")
    c.close()
    with pytest.raises(SourceError, match="'missing'"):
        track_database(path, ["items", "missing"])
    c = sqlite3.connect(path)
    try:
        assert tracked_tables(c) == []
    finally:
        c.close()
    infos = track_database(path, ["items", "lines"], retention_seconds=60)
    assert [(i.table_name, i.key_columns) for i in infos] == [
        ("items", ("id",)),
        ("lines", ("o", "n")),
    ]
    c = sqlite3.connect(path)
    try:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert len(tracked_tables(c)) == 2
    finally:
        c.close()
    with pytest.raises(SourceError, match="not found"):
        track_database(tmp_path / "nope.db", ["items"])
    assert not (tmp_path / "nope.db").exists()


def test_reported_operation_matches_sql() -> None:
    mem = sqlite3.connect(":memory:")
    try:
        cases = [("D", 5, 1), ("U", None, 0), ("U", 3, 2), ("U", 3, 3), ("I", 4, 4), ("I", 4, 3)]
        for op, creation, last in cases:
            sql_op = mem.execute(
                f"SELECT {OPERATION_CASE_SQL} FROM (SELECT ? AS sys_change_operation,"
                " ? AS sys_change_creation_version) c",
                (last, op, creation),  # the CASE placeholder comes first in the text
            ).fetchone()[0]
            assert sql_op == reported_operation(op, creation, last)
    finally:
        mem.close()
    assert reported_operation("U", None, 0) == "U"
    assert reported_operation("U", 3, 2) == "I"
    assert reported_operation("I", 4, 4) == "U"


def test_quote_ident() -> None:
    assert quote_ident('a"b') == '"a""b"'
    assert quote_ident("x]y;z") == '"x]y;z"'
    with pytest.raises(SourceError):
        quote_ident("a\x00b")


def test_untrack_database_turns_tracking_off(tmp_path: Path) -> None:
    from ctstream.cli import main

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
        c.execute("CREATE TABLE other (id INTEGER PRIMARY KEY)")
    c.close()
    track_database(path, ["items", "other"])
    assert main(["sqlite", "untrack", str(path), "items", "nope"]) == 0
    c = sqlite3.connect(path)
    try:
        assert [t.table_name for t in tracked_tables(c)] == ["other"]
        c.execute("INSERT INTO items VALUES (1)")  # no trigger left behind to fail
    finally:
        c.close()
    with pytest.raises(SourceError, match="not found"):
        untrack_database(tmp_path / "missing.db", ["items"])
