"""A SQLite stand-in for SQL Server Change Tracking, built from triggers.

Semantics copied from SQL Server:

* One database-wide version counter (``_ctstream_version``); every changed row bumps it.
* Per tracked table ``T`` a change table ``_ct__T`` with T's primary-key columns and
  ``sys_change_version``, ``sys_change_creation_version``, ``sys_change_operation``
  ('I'/'U'/'D'), ``sys_change_time``. It holds *net* changes: one row per key, holding
  the last operation and its version. Non-key columns are never stored; readers join
  back to ``T`` (a deleted row joins to nothing).
* An update that changes the key is a delete of the old key plus an insert of the new.
* A reader that last synced at version ``L`` selects ``sys_change_version > L`` and reports
  'D' if the stored op is 'D', else 'I' if the key was (re)created after ``L``, else 'U'
  (``OPERATION_CASE_SQL`` / ``reported_operation``).
* ``_ctstream_tracked`` stands in for ``sys.change_tracking_tables``. ``cleanup`` drops
  change rows older than the retention and raises ``min_valid_version``; a consumer whose
  ``L < min_valid_version`` may have missed changes and must re-snapshot.

Known gap: SQLite fires no DELETE trigger for rows removed by ``REPLACE`` conflict
resolution unless ``PRAGMA recursive_triggers`` is on in the writing connection, so a
REPLACE that evicts a row with a *different* key (via another UNIQUE index) is not seen.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctstream.errors import ConfigError, SourceError

VERSION_TABLE = "_ctstream_version"
CATALOG_TABLE = "_ctstream_tracked"
CHANGE_TABLE_PREFIX = "_ct__"
DEFAULT_RETENTION_SECONDS = 2 * 86400.0
SYS_COLUMNS: tuple[str, ...] = ("sys_change_version", "sys_change_creation_version")
SYS_COLUMNS += ("sys_change_operation", "sys_change_time")
_TRIGGER_SUFFIXES = ("ins", "upd", "updkey", "del")
# Unix epoch seconds with millisecond precision; strftime('%s') would truncate to seconds.
_NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"
_SAVEPOINT = "ctstream_tracking"


def quote_ident(name: str) -> str:
    """Quote an SQLite identifier: wrap in double quotes, double any embedded quote."""
    if "\x00" in name:
        raise SourceError(f"identifier {name!r} contains a NUL character; rename it")
    return '"' + name.replace('"', '""') + '"'


_QV, _QC = "main." + quote_ident(VERSION_TABLE), "main." + quote_ident(CATALOG_TABLE)


def operation_sql(alias: str = "c") -> str:
    """CASE expression giving the operation relative to a last-synced version bound as ``?``."""
    a = quote_ident(alias)
    return (
        f"CASE WHEN {a}.sys_change_operation = 'D' THEN 'D'"
        f" WHEN {a}.sys_change_creation_version > ? THEN 'I' ELSE 'U' END"
    )


# Over columns of the change table aliased ``c``; one ``?`` placeholder for L.
OPERATION_CASE_SQL = operation_sql("c")


def reported_operation(stored_op: str, creation_version: int | None, last_version: int) -> str:
    """Python twin of ``OPERATION_CASE_SQL`` (NULL creation version means 'U')."""
    if stored_op == "D":
        return "D"
    if creation_version is not None and creation_version > last_version:
        return "I"
    return "U"


@dataclass(frozen=True)
class TrackedTable:
    table_name: str
    change_table: str
    min_valid_version: int
    enabled_version: int
    retention_seconds: float
    key_columns: tuple[str, ...]


def trigger_names(table: str) -> tuple[str, ...]:
    return tuple(f"{CHANGE_TABLE_PREFIX}{table}__{s}" for s in _TRIGGER_SUFFIXES)


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    # The caller's connection may have a row_factory; we want plain tuples.
    cur = conn.cursor()
    cur.row_factory = None
    try:
        return [tuple(r) for r in cur.execute(sql, params).fetchall()]
    finally:
        cur.close()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """All-or-nothing block; nests inside a caller's open transaction via a savepoint."""
    if conn.in_transaction:
        conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
                conn.execute(f"RELEASE {_SAVEPOINT}")
            raise
        conn.execute(f"RELEASE {_SAVEPOINT}")
        return
    # IMMEDIATE: take the write lock up front, so reading the version and then writing
    # cannot fail with SQLITE_BUSY_SNAPSHOT when the application writes in between.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # some errors make SQLite roll back by itself
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:  # e.g. SQLITE_BUSY: never leave the caller inside our transaction
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _exists(conn: sqlite3.Connection, name: str, kind: str = "%") -> bool:
    # SQLite compares identifiers ASCII-case-insensitively, exactly like NOCASE.
    sql = "SELECT 1 FROM main.sqlite_master WHERE name = ? COLLATE NOCASE AND type LIKE ?"
    return bool(_rows(conn, sql, (name, kind)))


def _key_columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    """(name, declared type) of the primary-key columns, in primary-key order."""
    sql = "SELECT name, type FROM pragma_table_info(?, 'main') WHERE pk > 0 ORDER BY pk"
    return [(str(n), str(t)) for n, t in _rows(conn, sql, (table,))]


def _read_tracked(conn: sqlite3.Connection, table: str) -> TrackedTable | None:
    if not _exists(conn, CATALOG_TABLE, "table"):
        return None
    cols = "table_name, change_table, min_valid_version, enabled_version, retention_seconds"
    rows = _rows(conn, f"SELECT {cols} FROM {_QC} WHERE table_name = ? COLLATE NOCASE", (table,))
    if not rows:
        return None
    name, ct, min_valid, enabled, retention = rows[0]
    # Keys come from the change table: that is what is tracked, even if T changed since.
    keys = tuple(n for n, _ in _key_columns(conn, ct))
    return TrackedTable(name, ct, int(min_valid), int(enabled), float(retention), keys)


def current_version(conn: sqlite3.Connection) -> int:
    """The database-wide change version (0 before any table was ever tracked)."""
    if not _exists(conn, VERSION_TABLE, "table"):
        return 0
    rows = _rows(conn, f"SELECT current_version FROM {_QV} WHERE id = 1")
    return int(rows[0][0]) if rows else 0


def tracked_tables(conn: sqlite3.Connection) -> list[TrackedTable]:
    if not _exists(conn, CATALOG_TABLE, "table"):
        return []
    names = _rows(conn, f"SELECT table_name FROM {_QC} ORDER BY table_name")
    found = (_read_tracked(conn, str(n)) for (n,) in names)
    return [t for t in found if t is not None]


def min_valid_version(conn: sqlite3.Connection, table: str) -> int:
    info = _read_tracked(conn, table)
    if info is None:
        raise SourceError(
            f"table {table!r} is not change-tracked; run `ctstream sqlite track DB {table}`"
        )
    return info.min_valid_version


def _trigger_ddl(table: str, ct: str, keys: Sequence[str]) -> list[str]:
    qt, qct, qv = quote_ident(table), quote_ident(ct), quote_ident(VERSION_TABLE)
    key_list = ", ".join(quote_ident(k) for k in keys)
    # Trigger bodies may not schema-qualify tables; they resolve in the trigger's schema.
    bump = f"UPDATE {qv} SET current_version = current_version + 1 WHERE id = 1;"
    version = f"(SELECT current_version FROM {qv} WHERE id = 1)"

    def upsert(ref: str, op: str) -> str:
        new_key = op == "I"
        values = ", ".join(f"{ref}.{quote_ident(k)}" for k in keys)
        sets = "sys_change_version = excluded.sys_change_version, "
        if new_key:  # a (re)created key starts a new life; updates/deletes keep it
            sets += "sys_change_creation_version = excluded.sys_change_creation_version, "
        sets += "sys_change_operation = excluded.sys_change_operation, "
        sets += "sys_change_time = excluded.sys_change_time"
        return (
            f"INSERT INTO {qct} ({key_list}, {', '.join(SYS_COLUMNS)}) VALUES ({values},"
            f" {version}, {version if new_key else 'NULL'}, '{op}', {_NOW_SQL})"
            f" ON CONFLICT ({key_list}) DO UPDATE SET {sets};"
        )

    same_key = " AND ".join(f"OLD.{quote_ident(k)} IS NEW.{quote_ident(k)}" for k in keys)
    ins, upd, updkey, dele = (quote_ident(n) for n in trigger_names(table))

    def trigger(name: str, event: str, when: str, body: str) -> str:
        return (
            f"CREATE TRIGGER main.{name} AFTER {event} ON {qt} FOR EACH ROW {when}BEGIN {body} END"
        )

    key_moved = f"{bump} {upsert('OLD', 'D')} {bump} {upsert('NEW', 'I')}"
    return [
        trigger(ins, "INSERT", "", f"{bump} {upsert('NEW', 'I')}"),
        trigger(upd, "UPDATE", f"WHEN {same_key} ", f"{bump} {upsert('NEW', 'U')}"),
        trigger(updkey, "UPDATE", f"WHEN NOT ({same_key}) ", key_moved),
        trigger(dele, "DELETE", "", f"{bump} {upsert('OLD', 'D')}"),
    ]


def _needs_without_rowid(conn: sqlite3.Connection, table: str, keys: list[tuple[str, str]]) -> bool:
    # A rowid change table with one key declared INTEGER makes that key a rowid alias,
    # which rejects non-integer values. The source accepts them unless its key is an alias
    # too (WITHOUT ROWID, or the INTEGER PRIMARY KEY DESC quirk); the app's write would fail.
    ((wr,),) = _rows(conn, "SELECT wr FROM pragma_table_list(?) WHERE schema = 'main'", (table,))
    if wr:
        return True
    pk_index = "SELECT 1 FROM pragma_index_list(?, 'main') WHERE origin = 'pk'"
    return (
        len(keys) == 1 and keys[0][1].upper() == "INTEGER" and bool(_rows(conn, pk_index, (table,)))
    )


def _create_catalog(conn: sqlite3.Connection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {_QV} (id INTEGER PRIMARY KEY CHECK (id = 1),"
        f" current_version INTEGER NOT NULL)"
    )
    conn.execute(f"INSERT OR IGNORE INTO {_QV} (id, current_version) VALUES (1, 0)")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {_QC} (table_name TEXT PRIMARY KEY,"
        f" change_table TEXT NOT NULL, min_valid_version INTEGER NOT NULL,"
        f" enabled_version INTEGER NOT NULL, retention_seconds REAL NOT NULL)"
    )


def enable_tracking(
    conn: sqlite3.Connection, table: str, retention_seconds: float = DEFAULT_RETENTION_SECONDS
) -> TrackedTable:
    """Start tracking ``table``; a no-op returning the existing info if already tracked."""
    quote_ident(table)  # rejects NUL before anything touches the database
    if not (math.isfinite(retention_seconds) and retention_seconds > 0):
        raise ConfigError(f"retention_seconds must be a positive number, got {retention_seconds}")
    with _transaction(conn):
        found = _rows(
            conn,
            "SELECT name, type FROM main.sqlite_master"
            " WHERE type IN ('table', 'view') AND name = ? COLLATE NOCASE",
            (table,),
        )
        if not found:
            raise SourceError(
                f"table {table!r} does not exist in the SQLite database;"
                " create it or fix the table name, then enable tracking again"
            )
        name, kind = str(found[0][0]), str(found[0][1])
        if kind == "view":
            raise SourceError(
                f"{name!r} is a view; change tracking needs a table with a primary key,"
                " track the view's underlying tables instead"
            )
        if name.lower().startswith(("sqlite_", CHANGE_TABLE_PREFIX, "_ctstream_")):
            raise SourceError(f"{name!r} is an internal table and cannot be tracked")
        existing = _read_tracked(conn, name)
        if existing is not None:
            missing = [
                n
                for n, k in [(existing.change_table, "table")]
                + [(t, "trigger") for t in trigger_names(existing.table_name)]
                if not _exists(conn, n, k)
            ]
            if missing:  # dropping a table drops its triggers; changes since are lost
                raise SourceError(
                    f"change tracking for {name!r} is broken ({', '.join(missing)} missing;"
                    " was the table recreated?); disable tracking, enable it again,"
                    " and re-snapshot the table"
                )
            return existing
        keys = _key_columns(conn, name)
        if not keys:
            raise SourceError(
                f"table {name!r} has no PRIMARY KEY; change tracking identifies rows by"
                " primary key, so recreate the table with one and enable tracking again"
            )
        clash = [k for k, _ in keys if k.lower() in SYS_COLUMNS]
        if clash:
            raise SourceError(f"table {name!r}: key column {clash[0]!r} clashes with a CT column")
        ct = CHANGE_TABLE_PREFIX + name
        index = f"{ct}__by_version"
        taken = [n for n in (ct, index, *trigger_names(name)) if _exists(conn, n)]
        if taken:
            raise SourceError(
                f"cannot track {name!r}: {taken[0]!r} already exists; drop or rename it"
            )
        _create_catalog(conn)
        # Same declared types; quoting keeps the exact type text (SQLite dequotes it).
        key_defs = ", ".join(
            f"{quote_ident(k)} {quote_ident(t)}" if t else quote_ident(k) for k, t in keys
        )
        key_list = ", ".join(quote_ident(k) for k, _ in keys)
        conn.execute(
            f"CREATE TABLE main.{quote_ident(ct)} ({key_defs},"
            " sys_change_version INTEGER NOT NULL, sys_change_creation_version INTEGER,"
            " sys_change_operation TEXT NOT NULL"
            " CHECK (sys_change_operation IN ('I', 'U', 'D')),"
            f" sys_change_time REAL NOT NULL, PRIMARY KEY ({key_list}))"
            + (" WITHOUT ROWID" if _needs_without_rowid(conn, name, keys) else "")
        )
        conn.execute(
            f"CREATE INDEX main.{quote_ident(index)} ON {quote_ident(ct)} (sys_change_version)"
        )
        for ddl in _trigger_ddl(name, ct, [k for k, _ in keys]):
            conn.execute(ddl)
        version = current_version(conn)
        conn.execute(
            f"INSERT INTO {_QC} (table_name, change_table,"
            " min_valid_version, enabled_version, retention_seconds) VALUES (?, ?, ?, ?, ?)",
            (name, ct, version, version, float(retention_seconds)),
        )
        info = _read_tracked(conn, name)
    assert info is not None
    return info


def disable_tracking(conn: sqlite3.Connection, table: str) -> bool:
    """Drop the triggers, change table and catalog row; False if it was not tracked. The
    version moves on: tracked again, the table gets a new identity (a new object id)."""
    with _transaction(conn):
        info = _read_tracked(conn, table)
        if info is None:
            return False
        for trig in trigger_names(info.table_name):
            conn.execute(f"DROP TRIGGER IF EXISTS main.{quote_ident(trig)}")
        conn.execute(f"DROP TABLE IF EXISTS main.{quote_ident(info.change_table)}")
        conn.execute(f"DELETE FROM {_QC} WHERE table_name = ?", (info.table_name,))
        conn.execute(f"UPDATE {_QV} SET current_version = current_version + 1 WHERE id = 1")
    return True


def cleanup(conn: sqlite3.Connection, now: float | None = None) -> dict[str, int]:
    """Remove change rows past retention; raise min_valid_version. Rows removed per table."""
    at = time.time() if now is None else now
    removed: dict[str, int] = {}
    for info in tracked_tables(conn):
        qct = quote_ident(info.change_table)
        cutoff = at - info.retention_seconds
        with _transaction(conn):  # one table at a time: keep writer stalls short
            ((count, top),) = _rows(
                conn,
                f"SELECT count(*), max(sys_change_version) FROM main.{qct}"
                " WHERE sys_change_time < ?",
                (cutoff,),
            )
            if count:
                conn.execute(f"DELETE FROM main.{qct} WHERE sys_change_time < ?", (cutoff,))
                # Anyone synced below the highest removed version may have missed it.
                conn.execute(
                    f"UPDATE {_QC}"
                    " SET min_valid_version = max(min_valid_version, ?) WHERE table_name = ?",
                    (int(top), info.table_name),
                )
        removed[info.table_name] = int(count)
    return removed


def track_database(
    path: str | Path,
    tables: Sequence[str],
    retention_seconds: float = DEFAULT_RETENTION_SECONDS,
) -> list[TrackedTable]:
    """Open the SQLite file, switch it to WAL, and enable tracking for all ``tables`` at once."""
    if not Path(path).is_file():
        raise SourceError(f"SQLite database {str(path)!r} not found; check the path")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        try:
            # WAL lets a poller read while the application writes.
            conn.execute("PRAGMA journal_mode=WAL")
            with _transaction(conn):  # one bad table name leaves every table untouched
                return [enable_tracking(conn, t, retention_seconds) for t in tables]
        except sqlite3.Error as exc:
            raise SourceError(f"could not enable change tracking in {str(path)!r}: {exc}") from exc


def untrack_database(path: str | Path, tables: Sequence[str]) -> dict[str, bool]:
    """Turn tracking off for ``tables``; per table, whether it was on."""
    if not Path(path).is_file():
        raise SourceError(f"SQLite database {str(path)!r} not found; check the path")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        try:
            return {t: disable_tracking(conn, t) for t in tables}
        except sqlite3.Error as exc:
            raise SourceError(
                f"could not turn off change tracking in {str(path)!r}: {exc}"
            ) from exc


def cleanup_database(path: str | Path, now: float | None = None) -> dict[str, int]:
    """:func:`cleanup` on a database file; change rows removed per table."""
    if not Path(path).is_file():
        raise SourceError(f"SQLite database {str(path)!r} not found; check the path")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        try:
            return cleanup(conn, now)
        except sqlite3.Error as exc:
            raise SourceError(f"cleanup of {str(path)!r} failed: {exc}") from exc
