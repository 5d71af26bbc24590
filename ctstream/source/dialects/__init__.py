"""SQL text per source dialect: the seam between the reader and the database.

Identifiers in generated SQL come only from the catalog and are always quoted; versions,
names and object ids are bound parameters. Each method returns the statement and its
parameters together, so the reader never builds SQL itself. The SQL Server (T-SQL)
dialect lives in ``source/dialects/mssql.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ctstream.models import TableSpec
from ctstream.source.sqlite_tracking import CATALOG_TABLE, VERSION_TABLE


def quote_sqlite(name: str) -> str:
    """SQLite/ANSI identifier quoting: wrap in double quotes, double any inside."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class ChangeQuery:
    sql: str
    # The query's parameters are (last_version,) * last_version_params.
    last_version_params: int
    # Column order of each result row: operation, version, key columns, other columns.
    key_count: int
    value_columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SnapshotQuery:
    """Every row of a table; result rows are key columns (in key order), other columns."""

    sql: str
    key_count: int
    value_columns: tuple[str, ...]


class Dialect(Protocol):
    name: str

    def split_name(self, configured: str) -> tuple[str | None, str]:
        """(schema, table) of a name as configured in ``source.tables``."""

    def session_sql(self, lock_timeout_ms: int) -> tuple[str, ...]:
        """Statements run once on every new connection (isolation level, lock timeout)."""

    def configure_connection(self, connection: Any) -> None:
        """Adjust a new pyodbc connection (output converters for types pyodbc lacks)."""

    def database_info(self) -> Statement:
        """One row: (change tracking on, snapshot isolation on, retention seconds,
        auto cleanup on); NULL where the dialect has no such setting."""

    def tracked_table(self, schema: str | None, table: str) -> Statement:
        """One row (tracking reference) when the table is change-tracked, none otherwise.

        The reference is the change table (SQLite stand-in) or the object id (SQL Server).
        """

    def tracked_tables(self) -> Statement:
        """Rows (schema or NULL, table): every change-tracked table, for table patterns."""

    def columns(self, schema: str | None, table: str) -> Statement:
        """Rows (name, type, is_nullable, key_ordinal, precision, scale, max_length) in
        column order; no rows when the table does not exist."""

    def min_valid_version(self, spec: TableSpec) -> Statement:
        """One row: the table's minimum valid version (NULL when no longer tracked)."""

    def current_version(self) -> Statement: ...

    def changes_query(self, spec: TableSpec) -> ChangeQuery: ...

    def snapshot_query(self, spec: TableSpec) -> SnapshotQuery: ...

    def table_health(self, spec: TableSpec, saved_version: int) -> Statement:
        """One row: (retention seconds or NULL, age in seconds of the oldest change after
        ``saved_version`` or NULL when there is none)."""

    def cleanup_backlog(self) -> Statement | None:
        """One row: age in seconds of the oldest commit Change Tracking still keeps, when
        the dialect keeps a database-wide commit table (SQL Server's syscommittab)."""


def split_columns(spec: TableSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(key columns in key order, the other columns in column order)."""
    keys = tuple(c.name for c in spec.key_columns)
    key_set = set(keys)
    others = tuple(c.name for c in spec.columns if c.name not in key_set)
    return keys, others


# Epoch seconds, millisecond precision (the stand-in stores sys_change_time this way).
_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


class SqliteDialect:
    """The SQLite Change Tracking stand-in (see source/sqlite_tracking.py)."""

    name = "sqlite"

    def split_name(self, configured: str) -> tuple[str | None, str]:
        return None, configured

    def session_sql(self, lock_timeout_ms: int) -> tuple[str, ...]:
        return ()  # SQLite reads in WAL mode never wait for writers

    def configure_connection(self, connection: Any) -> None:
        return None

    def database_info(self) -> Statement:
        return Statement("SELECT 1, NULL, NULL, NULL")

    def tracked_table(self, schema: str | None, table: str) -> Statement:
        return Statement(
            f"SELECT change_table FROM {quote_sqlite(CATALOG_TABLE)} WHERE table_name = ?",
            (table,),
        )

    def tracked_tables(self) -> Statement:
        return Statement(f"SELECT NULL, table_name FROM {quote_sqlite(CATALOG_TABLE)}")

    def columns(self, schema: str | None, table: str) -> Statement:
        return Statement(
            'SELECT name, type, NOT "notnull", NULLIF(pk, 0), NULL, NULL, NULL '
            "FROM pragma_table_info(?) ORDER BY cid",
            (table,),
        )

    def min_valid_version(self, spec: TableSpec) -> Statement:
        return Statement(
            f"SELECT min_valid_version FROM {quote_sqlite(CATALOG_TABLE)} WHERE table_name = ?",
            (spec.table,),
        )

    def current_version(self) -> Statement:
        return Statement(f"SELECT current_version FROM {quote_sqlite(VERSION_TABLE)} WHERE id = 1")

    def _change_table(self, spec: TableSpec) -> str:
        if spec.change_table is None:
            raise ValueError(f"table {spec.name!r} has no change table")
        return quote_sqlite(spec.change_table)

    def changes_query(self, spec: TableSpec) -> ChangeQuery:
        change_table = self._change_table(spec)
        q = quote_sqlite
        keys, others = split_columns(spec)
        select = [
            # Reported relative to the caller's last version, as CHANGETABLE does.
            "CASE WHEN c.sys_change_operation = 'D' THEN 'D' "
            "WHEN c.sys_change_creation_version > ? THEN 'I' ELSE 'U' END",
            "c.sys_change_version",
            *(f"c.{q(name)}" for name in keys),
            *(f"t.{q(name)}" for name in others),
        ]
        join = " AND ".join(f"t.{q(name)} = c.{q(name)}" for name in keys)
        sql = (
            f"SELECT {', '.join(select)} FROM {change_table} AS c "
            f"LEFT JOIN {q(spec.table)} AS t ON {join} "
            "WHERE c.sys_change_version > ? ORDER BY c.sys_change_version"
        )
        return ChangeQuery(sql, 2, len(keys), others)

    def snapshot_query(self, spec: TableSpec) -> SnapshotQuery:
        keys, others = split_columns(spec)
        columns = ", ".join(f"t.{quote_sqlite(name)}" for name in (*keys, *others))
        return SnapshotQuery(
            f"SELECT {columns} FROM {quote_sqlite(spec.table)} AS t", len(keys), others
        )

    def table_health(self, spec: TableSpec, saved_version: int) -> Statement:
        change_table = self._change_table(spec)
        return Statement(
            f"SELECT (SELECT retention_seconds FROM {quote_sqlite(CATALOG_TABLE)} "
            "WHERE table_name = ?), "
            f"{_SQLITE_NOW} - (SELECT min(sys_change_time) FROM {change_table} "
            "WHERE sys_change_version > ?)",
            (spec.table, saved_version),
        )

    def cleanup_backlog(self) -> Statement | None:
        return None  # per table, in table_health: the stand-in has no commit table


def dialect_for(name: str) -> Dialect:
    if name == "sqlite":
        return SqliteDialect()
    if name == "mssql":
        from ctstream.source.dialects.mssql import MssqlDialect

        return MssqlDialect()
    raise ValueError(f"source.dialect {name!r} is not known: expected 'sqlite' or 'mssql'")
