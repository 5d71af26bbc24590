"""What a source dialect provides: statements with bound parameters, the change and
snapshot queries, and the Protocol every dialect implements.

Identifiers in generated SQL come only from the catalog and are always quoted; versions,
names and object ids are bound parameters. Each method returns the statement and its
parameters together, so the reader never builds SQL itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ctstream.models import JsonValue, TableSpec

Converts = tuple[tuple[int, Callable[[Any], JsonValue]], ...]


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement and its bound parameters."""

    sql: str
    params: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class ChangeQuery:
    """The changes of a table after a version, joined to its current rows."""

    sql: str
    # The query's parameters are (last_version,) * last_version_params.
    last_version_params: int
    # Column order of each result row: operation, version, key columns, other columns.
    key_count: int
    value_columns: tuple[str, ...]
    # (position among the key and other columns, conversion of a non-NULL driver value).
    converts: Converts = ()


@dataclass(frozen=True, slots=True)
class SnapshotQuery:
    """Rows of a table (all of them, a chunk of them, or its largest key); result rows are
    key columns (in key order), other columns."""

    sql: str
    key_count: int
    value_columns: tuple[str, ...]
    converts: Converts = ()  # as ChangeQuery's
    params: tuple[object, ...] = ()  # the query's bound parameters, in marker order


class Dialect(Protocol):
    """The SQL a source database needs, one method per question the reader asks."""

    name: str

    def split_name(self, configured: str) -> tuple[str | None, str]:
        """(schema, table) of a name as configured in ``source.tables``."""

    def session_sql(self, lock_timeout_ms: int) -> tuple[str, ...]:
        """Statements run once on every new connection (isolation level, lock timeout)."""

    def connection_string(self, dsn: str) -> str:
        """The ODBC connection string to open for ``source.dsn`` (driver options the
        dialect needs added; never logged: it may hold a password)."""

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

    def chunk_refusal(self, spec: TableSpec) -> str | None:
        """None when ranges of ``spec``'s key can bound snapshot chunks; else a sentence
        saying why not and that the table is read whole in one transaction instead."""

    def row_estimate(self, spec: TableSpec) -> Statement:
        """One row: about how many rows the table holds (cheap; NULL when unknown), for a
        snapshot's progress and ETA."""

    def snapshot_upper_bound(self, spec: TableSpec) -> SnapshotQuery:
        """At most one row: the largest key, its columns read as ``snapshot_query`` reads
        them (so it equals a chunk row's key); no value columns."""

    def snapshot_chunk_query(
        self,
        spec: TableSpec,
        after: tuple[object, ...] | None,
        upper: tuple[object, ...],
        limit: int,
    ) -> SnapshotQuery:
        """Every column as ``snapshot_query`` reads it, of at most ``limit`` rows (an int
        of at least 1) whose key is above ``after`` (any key when None) and at most
        ``upper``, in key order. ``after`` and ``upper`` come from ``key_parameters``;
        ValueError when ``chunk_refusal`` refuses the table."""

    def key_parameters(self, spec: TableSpec, key: Sequence[JsonValue]) -> tuple[object, ...]:
        """A key as read (a chunk row's or the upper bound's, in key order) → the values
        to bind against the key columns, ordered as the database orders the columns;
        ValueError naming the table when it is not such a key."""

    def column_refusal(self, spec: TableSpec, column: str) -> str | None:
        """None when ranges of ``column``'s values can bound ``spec``'s snapshot chunks
        (``source.chunk_columns``): it exists, holds no NULL, and its type passes the check
        key columns get in ``chunk_refusal``. Else a sentence naming the setting, the
        table and the column, saying what is wrong and what to do."""

    def column_upper_bound(self, spec: TableSpec, column: str) -> SnapshotQuery:
        """At most one row: the largest value of ``column``, read as ``snapshot_query``
        reads it, as a one-column key (key_count 1, no value columns)."""

    def column_chunk_query(
        self,
        spec: TableSpec,
        column: str,
        after: tuple[object, ...] | None,
        upper: tuple[object, ...],
        limit: int,
        since: int,
    ) -> SnapshotQuery:
        """Every column as ``snapshot_query`` reads it, of every row whose ``column`` is
        above ``after`` (no lower bound when None) and at most the largest value among
        the next ``limit`` such rows at most ``upper``, in ``column``'s order; rows changed
        after version ``since`` are left out (see column_chunks.py). ``after`` and
        ``upper`` hold one value each, from ``column_parameters``; ValueError when
        ``column_refusal`` refuses the column."""

    def column_parameters(
        self, spec: TableSpec, column: str, cursor: Sequence[JsonValue]
    ) -> tuple[object, ...]:
        """A value of ``column`` as read, in a one-value sequence (a chunk row's, the
        upper bound's) → the one value to bind against it; ValueError naming the table
        when it is not such a value."""

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
