"""SQL text for the SQLite Change Tracking stand-in (see source/sqlite_tracking.py).

Change and snapshot queries read every value exactly (source/sqlite_values.py): each
column through an expression chosen by its declared type, then one odd-row column.
Snapshot chunks are ranges of row values over the key (``(k1, k2) > (?, ?)``), or of one
column's values (``source.chunk_columns``, see column_chunks.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pyodbc

from ctstream.models import ColumnSpec, JsonValue, TableSpec
from ctstream.source import sqlite_values
from ctstream.source.dialects.base import ChangeQuery, SnapshotQuery, Statement, split_columns
from ctstream.source.dialects.chunks import (
    chunk_keys,
    key_columns,
    key_targets,
    sqlite_key_value,
)
from ctstream.source.dialects.column_chunks import (
    bound_spec,
    checked_column,
    column_range,
    column_refusal,
    column_target,
)
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
        # The version tracking was enabled at is the table's identity (SQL Server's
        # object id): tracking a recreated table again gives it a new one.
        return Statement(
            f"SELECT change_table, enabled_version FROM {quote_sqlite(CATALOG_TABLE)} "
            "WHERE table_name = ?",
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
        """NULL (no row) when the table is not tracked, or tracked under another identity
        than ``spec.object_id`` (recreated and tracked again), as SQL Server answers."""
        catalog = quote_sqlite(CATALOG_TABLE)
        if spec.object_id is None:
            return Statement(
                f"SELECT min_valid_version FROM {catalog} WHERE table_name = ?", (spec.table,)
            )
        return Statement(
            f"SELECT min_valid_version FROM {catalog} WHERE table_name = ? AND enabled_version = ?",
            (spec.table, spec.object_id),
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

    def chunk_refusal(self, spec: TableSpec) -> str | None:
        keys = key_columns(spec)
        rowid = _rowid(keys)
        for column in keys:
            if column.nullable and not rowid:
                return (
                    f"table {spec.name!r}: key column {column.name!r} is declared without "
                    "NOT NULL, so SQLite lets it hold NULL, which no key range holds; the "
                    "snapshot reads the whole table in one transaction instead of in chunks"
                )
            if not column.source_type.strip():
                return (
                    f"table {spec.name!r}: key column {column.name!r} has no declared type, "
                    "so its integers, reals and texts are all carried as text and a chunk's "
                    "last key cannot be compared back; the snapshot reads the whole table "
                    "in one transaction instead of in chunks"
                )
        return None

    def column_refusal(self, spec: TableSpec, column: str) -> str | None:
        rowid = _rowid(key_columns(spec))
        return column_refusal(spec, column, lambda c: rowid and c.key_ordinal is not None, _untyped)

    def row_estimate(self, spec: TableSpec) -> Statement:
        return Statement(f"SELECT COUNT(*) FROM {quote_sqlite(spec.table)}")

    def snapshot_upper_bound(self, spec: TableSpec) -> SnapshotQuery:
        keys = key_columns(spec)
        # The exact read of the key columns alone: a key reads as it does in a chunk row.
        exact = exact_read(replace(spec, columns=keys))
        columns = ", ".join((*exact.expressions, exact.odd_expression))
        order = ", ".join(f"t.{quote_sqlite(c.name)} DESC" for c in keys)
        return ExactSnapshotQuery(
            f"SELECT {columns} FROM {quote_sqlite(spec.table)} AS t ORDER BY {order} LIMIT 1",
            len(keys),
            (),
            exact=exact,
        )

    def snapshot_chunk_query(
        self,
        spec: TableSpec,
        after: tuple[object, ...] | None,
        upper: tuple[object, ...],
        limit: int,
    ) -> SnapshotQuery:
        keys = chunk_keys(spec, after, upper, limit, self.chunk_refusal(spec))
        refs = [f"t.{quote_sqlite(c.name)}" for c in keys]
        # Row values compare column by column in key order, each by the column's own
        # affinity and collation, as the primary key orders them.
        row = refs[0] if len(refs) == 1 else f"({', '.join(refs)})"
        markers = "?" if len(refs) == 1 else f"({', '.join('?' for _ in refs)})"
        where = [f"{row} <= {markers}"]
        if after is not None:
            where.insert(0, f"{row} > {markers}")
        exact = exact_read(spec)
        columns = ", ".join((*exact.expressions, exact.odd_expression))
        return ExactSnapshotQuery(
            f"SELECT {columns} FROM {quote_sqlite(spec.table)} AS t "
            f"WHERE {' AND '.join(where)} ORDER BY {', '.join(refs)} LIMIT ?",
            len(keys),
            split_columns(spec)[1],
            params=(*(after or ()), *upper, limit),
            exact=exact,
        )

    def column_upper_bound(self, spec: TableSpec, column: str) -> SnapshotQuery:
        # The exact read of the column alone: a value reads as it does in a chunk row.
        exact = exact_read(bound_spec(spec, column))
        columns = ", ".join((*exact.expressions, exact.odd_expression))
        return ExactSnapshotQuery(
            f"SELECT {columns} FROM {quote_sqlite(spec.table)} AS t "
            f"ORDER BY t.{quote_sqlite(column)} DESC LIMIT 1",
            1,
            (),
            exact=exact,
        )

    def column_chunk_query(
        self,
        spec: TableSpec,
        column: str,
        after: tuple[object, ...] | None,
        upper: tuple[object, ...],
        limit: int,
        since: int,
    ) -> SnapshotQuery:
        checked_column(spec, column, after, upper, limit, since, self.column_refusal(spec, column))
        q = quote_sqlite
        change_table = self._change_table(spec)
        keys, others = split_columns(spec)

        def unchanged(alias: str) -> str:
            # A NULL key (which SQLite lets a key column without NOT NULL hold) matches no
            # change row, as it matches no row in the change query: such a row is read.
            same = " AND ".join(f"c.{q(k)} = {alias}.{q(k)}" for k in keys)
            return (
                f"NOT EXISTS (SELECT 1 FROM {change_table} AS c "
                f"WHERE {same} AND c.sys_change_version > ?)"
            )

        exact = exact_read(spec)
        sql, params = column_range(
            select=", ".join((*exact.expressions, exact.odd_expression)),
            table=q(spec.table),
            column=q(column),
            marker="?",
            unchanged=unchanged,
            after=after,
            upper=upper,
            limit=limit,
            since=since,
            top=False,
        )
        return ExactSnapshotQuery(sql, len(keys), others, params=params, exact=exact)

    def column_parameters(
        self, spec: TableSpec, column: str, cursor: Sequence[JsonValue]
    ) -> tuple[object, ...]:
        found, target, value = column_target(spec, column, cursor)
        try:
            return (sqlite_key_value(found, target, value),)
        except ValueError as exc:  # binascii.Error is one
            raise ValueError(f"table {spec.name!r}: chunk bound {cursor!r}: {exc}") from None

    def key_parameters(self, spec: TableSpec, key: Sequence[JsonValue]) -> tuple[object, ...]:
        found = key_targets(spec, key)
        try:
            return tuple(sqlite_key_value(c, target, value) for c, target, value in found)
        except ValueError as exc:  # binascii.Error is one
            raise ValueError(f"table {spec.name!r}: key {key!r}: {exc}") from None

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


def _rowid(keys: Sequence[ColumnSpec]) -> bool:
    """Whether the key is the rowid (an INTEGER PRIMARY KEY), never NULL whatever the
    catalog says."""
    return len(keys) == 1 and keys[0].source_type.strip().upper() == "INTEGER"


def _untyped(column: ColumnSpec) -> str | None:
    """Why a column without a declared type cannot bound chunks (None: it has one)."""
    if column.source_type.strip():
        return None
    return (
        "has no declared type, so its integers, reals and texts are all carried as text "
        "and a chunk's last value cannot be compared back"
    )


if TYPE_CHECKING:
    from ctstream.source.dialects.base import Dialect

    _conforms: Dialect = SqliteDialect()
