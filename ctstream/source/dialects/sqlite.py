"""SQL text for the SQLite Change Tracking stand-in (see source/sqlite_tracking.py).

Change and snapshot queries read every value exactly (source/sqlite_values.py): each
column through an expression chosen by its declared type, then one odd-row column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyodbc

from ctstream.models import TableSpec
from ctstream.source import sqlite_values
from ctstream.source.dialects.base import ChangeQuery, SnapshotQuery, Statement, split_columns
from ctstream.source.sqlite_tracking import CATALOG_TABLE, VERSION_TABLE
from ctstream.source.sqlite_values import ExactRead, column_read


def quote_sqlite(name: str) -> str:
    """SQLite/ANSI identifier quoting: wrap in double quotes, double any inside."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class ExactChangeQuery(ChangeQuery):
    """A change query whose result rows end with the odd-row column of ``exact``."""

    exact: ExactRead = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class ExactSnapshotQuery(SnapshotQuery):
    """A snapshot query whose result rows end with the odd-row column of ``exact``."""

    exact: ExactRead = field(kw_only=True)


def exact_read(spec: TableSpec, keys_alias: str = "t") -> ExactRead:
    """The exact read of ``spec``'s key columns (from ``keys_alias``), then the others
    (from ``t``), in the order ``split_columns`` gives."""
    keys, others = split_columns(spec)
    columns = {c.name: c for c in spec.columns}
    return ExactRead.of(
        [
            (
                f"{alias}.{quote_sqlite(name)}",
                column_read(
                    columns[name].source_type, columns[name].precision, columns[name].scale
                ),
            )
            for alias, names in ((keys_alias, keys), ("t", others))
            for name in names
        ]
    )


# Epoch seconds, millisecond precision (the stand-in stores sys_change_time this way).
_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


class SqliteDialect:
    """The SQLite Change Tracking stand-in (see source/sqlite_tracking.py)."""

    name = "sqlite"

    def split_name(self, configured: str) -> tuple[str | None, str]:
        return None, configured

    def session_sql(self, lock_timeout_ms: int) -> tuple[str, ...]:
        return ()  # SQLite reads in WAL mode never wait for writers

    def connection_string(self, dsn: str) -> str:
        return sqlite_values.connection_string(dsn)

    def configure_connection(self, connection: Any) -> None:
        # The driver's own UTF-8 → UTF-16 conversion garbles characters from U+100000 up
        # (and can end in bytes pyodbc cannot decode): take its UTF-8 as it is.
        for sql_type in (pyodbc.SQL_CHAR, pyodbc.SQL_WCHAR):
            connection.setdecoding(sql_type, encoding="utf-8", ctype=pyodbc.SQL_CHAR)

    def database_info(self) -> Statement:
        # Change tracking is on once `ctstream sqlite track` made the catalog table.
        return Statement(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?), "
            "NULL, NULL, NULL",
            (CATALOG_TABLE,),
        )

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
        exact = exact_read(spec, "c")
        select = [
            # Reported relative to the caller's last version, as CHANGETABLE does.
            "CASE WHEN c.sys_change_operation = 'D' THEN 'D' "
            "WHEN c.sys_change_creation_version > ? THEN 'I' ELSE 'U' END",
            "c.sys_change_version",
            *exact.expressions,
            exact.odd_expression,
        ]
        join = " AND ".join(f"t.{q(name)} = c.{q(name)}" for name in keys)
        sql = (
            f"SELECT {', '.join(select)} FROM {change_table} AS c "
            f"LEFT JOIN {q(spec.table)} AS t ON {join} "
            "WHERE c.sys_change_version > ? ORDER BY c.sys_change_version"
        )
        return ExactChangeQuery(sql, 2, len(keys), others, exact=exact)

    def snapshot_query(self, spec: TableSpec) -> SnapshotQuery:
        keys, others = split_columns(spec)
        exact = exact_read(spec)
        columns = ", ".join((*exact.expressions, exact.odd_expression))
        return ExactSnapshotQuery(
            f"SELECT {columns} FROM {quote_sqlite(spec.table)} AS t", len(keys), others, exact=exact
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
