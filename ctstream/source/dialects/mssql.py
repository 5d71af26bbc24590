"""SQL text for SQL Server Change Tracking (T-SQL over pyodbc, ``?`` parameter markers).

Identifiers come only from the catalog (a TableSpec) and always pass through
:func:`quote_mssql`; versions, names, object ids and chunk bounds are bound parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ctstream.models import ColumnSpec, JsonValue, TableSpec
from ctstream.source.dialects.base import (
    ChangeQuery,
    Converts,
    SnapshotQuery,
    Statement,
    split_columns,
)
from ctstream.source.dialects.chunks import (
    MSSQL_KEY_MARKERS,
    base_type,
    chunk_keys,
    key_columns,
    key_targets,
    mssql_key_value,
    mssql_uncomparable,
    nested_positions,
    nested_range,
)
from ctstream.source.dialects.column_chunks import (
    bound_spec,
    checked_column,
    column_range,
    column_refusal,
    column_target,
)
from ctstream.source.dialects.mssql_values import (
    SQL_SS_TIMESTAMPOFFSET,
    decode_datetimeoffset,
    select_expression,
    value_converter,
)
from ctstream.source.odbc_driver import resolve_driver

if TYPE_CHECKING:
    from ctstream.source.dialects.base import Dialect

# sysname is nvarchar(128): at most 128 UTF-16 code units.
_MAX_IDENTIFIER_UNITS = 128
_INT_MAX = 2**31 - 1


def quote_mssql(name: str) -> str:
    """QUOTENAME semantics: ``[`` + name with ``]`` doubled + ``]``.

    Refuses names SQL Server cannot hold instead of quoting them into something else.
    """
    if not name:
        raise ValueError(
            f"identifier {name!r} is empty: SQL Server names need at least one character; "
            "check source.tables and the catalog"
        )
    if "\x00" in name:
        raise ValueError(
            f"identifier {name!r} contains a NUL character, which SQL Server names cannot "
            "hold; check source.tables and the catalog"
        )
    try:
        units = len(name.encode("utf-16-le")) // 2
    except UnicodeEncodeError:
        raise ValueError(
            f"identifier {name!r} contains a lone surrogate and cannot be sent to SQL Server "
            "as UTF-16; check source.tables and the catalog"
        ) from None
    if units > _MAX_IDENTIFIER_UNITS:
        raise ValueError(
            f"identifier {name!r} is {units} UTF-16 code units long, more than SQL Server's "
            f"{_MAX_IDENTIFIER_UNITS} (sysname); check source.tables and the catalog"
        )
    return "[" + name.replace("]", "]]") + "]"


def _select(alias: str, column: ColumnSpec) -> str:
    return select_expression(f"{alias}.{quote_mssql(column.name)}", column)


def _converts(spec: TableSpec) -> Converts:
    """Positions (keys first, as selected) of the columns converted in Python."""
    ordered = (*spec.key_columns, *(c for c in spec.columns if c.key_ordinal is None))
    found = ((i, value_converter(c)) for i, c in enumerate(ordered))
    return tuple((i, convert) for i, convert in found if convert is not None)


def _table_ref(spec: TableSpec) -> str:
    if spec.schema is None:
        raise ValueError(
            f"table {spec.name!r} has no schema: SQL Server tables are named "
            "schema.table, e.g. 'dbo.items'"
        )
    return f"{quote_mssql(spec.schema)}.{quote_mssql(spec.table)}"


def _changetable(spec: TableSpec) -> str:
    return f"CHANGETABLE(CHANGES {_table_ref(spec)}, ?) AS ct"


def _columns(spec: TableSpec) -> dict[str, ColumnSpec]:
    return {c.name: c for c in spec.columns}


def _need_schema(schema: str | None, table: str) -> str:
    if schema is None:
        raise ValueError(
            f"table {table!r} has no schema: SQL Server tables are named schema.table, "
            "e.g. 'dbo.items'"
        )
    return schema


_DATABASE_INFO = (
    "SELECT CASE WHEN ctd.database_id IS NULL THEN 0 ELSE 1 END, "
    "CASE WHEN d.snapshot_isolation_state = 1 THEN 1 ELSE 0 END, "
    "CAST(ctd.retention_period AS bigint) * CASE ctd.retention_period_units "
    "WHEN 1 THEN 60 WHEN 2 THEN 3600 WHEN 3 THEN 86400 END, "
    "CAST(ctd.is_auto_cleanup_on AS int) "
    "FROM sys.databases AS d "
    "LEFT JOIN sys.change_tracking_databases AS ctd ON ctd.database_id = d.database_id "
    "WHERE d.database_id = DB_ID()"
)

_TRACKED_TABLE = (
    "SELECT ctt.object_id FROM sys.change_tracking_tables AS ctt "
    "JOIN sys.tables AS t ON t.object_id = ctt.object_id "
    "JOIN sys.schemas AS s ON s.schema_id = t.schema_id "
    "WHERE s.name = ? AND t.name = ?"
)

_TRACKED_TABLES = (
    "SELECT s.name, t.name FROM sys.change_tracking_tables AS ctt "
    "JOIN sys.tables AS t ON t.object_id = ctt.object_id "
    "JOIN sys.schemas AS s ON s.schema_id = t.schema_id"
)

# Alias (user-defined) types are reported as their base type; CLR types (geography,
# geometry, hierarchyid, user CLR types) share system_type_id 240 and keep their own name.
_COLUMNS = (
    "SELECT c.name, "
    # T-SQL's "timestamp" is rowversion (8 bytes), not a time: report it by that name.
    "CASE WHEN ty.is_assembly_type = 1 THEN ty.name "
    "WHEN COALESCE(bt.name, ty.name) = 'timestamp' THEN 'rowversion' "
    "ELSE COALESCE(bt.name, ty.name) END, "
    "c.is_nullable, ic.key_ordinal, c.precision, c.scale, c.max_length "
    "FROM sys.columns AS c "
    "JOIN sys.tables AS t ON t.object_id = c.object_id "
    "JOIN sys.schemas AS s ON s.schema_id = t.schema_id "
    "JOIN sys.types AS ty ON ty.user_type_id = c.user_type_id "
    "LEFT JOIN sys.types AS bt ON bt.user_type_id = c.system_type_id "
    "LEFT JOIN sys.indexes AS i ON i.object_id = t.object_id AND i.is_primary_key = 1 "
    "LEFT JOIN sys.index_columns AS ic ON ic.object_id = i.object_id "
    "AND ic.index_id = i.index_id AND ic.column_id = c.column_id AND ic.key_ordinal > 0 "
    "WHERE s.name = ? AND t.name = ? "
    "ORDER BY c.column_id"
)

# sys.dm_tran_commit_table (syscommittab) needs VIEW SERVER STATE (VIEW DATABASE STATE
# on Azure SQL). Its commit_time is assumed to be UTC, hence SYSUTCDATETIME().
_CLEANUP_BACKLOG = (
    "SELECT DATEDIFF_BIG(SECOND, MIN(commit_time), SYSUTCDATETIME()) FROM sys.dm_tran_commit_table"
)


class MssqlDialect:
    """SQL Server Change Tracking (CHANGETABLE, syscommittab, snapshot isolation)."""

    name = "mssql"

    def split_name(self, configured: str) -> tuple[str | None, str]:
        schema, dot, table = configured.partition(".")
        if not dot:
            raise ValueError(
                f"source table {configured!r} needs its schema for SQL Server, e.g. 'dbo.items'"
            )
        if not schema or not table or "." in table:
            raise ValueError(
                f"source table {configured!r} must be written schema.table, e.g. 'dbo.items'"
            )
        return schema, table

    def session_sql(self, lock_timeout_ms: int) -> tuple[str, ...]:
        # type() rather than isinstance(): bool and int subclasses could format otherwise.
        if type(lock_timeout_ms) is not int or not -1 <= lock_timeout_ms <= _INT_MAX:
            raise ValueError(
                f"lock timeout {lock_timeout_ms!r} must be an int of milliseconds from 0 to "
                f"{_INT_MAX}, or -1 to wait forever; check source.lock_timeout"
            )
        return (
            "SET TRANSACTION ISOLATION LEVEL SNAPSHOT",
            f"SET LOCK_TIMEOUT {lock_timeout_ms:d}",
        )

    def connection_string(self, dsn: str) -> str:
        """``dsn`` opened by ODBC Driver 18 as registered with unixODBC, else by the
        ``mssql-python-odbc`` wheel's library (``Driver=<path>``); other drivers untouched.
        SourceError (not retriable) when the driver is nowhere: see odbc_driver."""
        return resolve_driver(dsn)

    def configure_connection(self, connection: Any) -> None:
        connection.add_output_converter(SQL_SS_TIMESTAMPOFFSET, decode_datetimeoffset)

    def database_info(self) -> Statement:
        return Statement(_DATABASE_INFO)

    def tracked_table(self, schema: str | None, table: str) -> Statement:
        return Statement(_TRACKED_TABLE, (_need_schema(schema, table), table))

    def tracked_tables(self) -> Statement:
        return Statement(_TRACKED_TABLES)

    def columns(self, schema: str | None, table: str) -> Statement:
        return Statement(_COLUMNS, (_need_schema(schema, table), table))

    def min_valid_version(self, spec: TableSpec) -> Statement:
        if spec.object_id is None:
            raise ValueError(
                f"table {spec.name!r} has no SQL Server object id; read it from the catalog "
                "(tracked_table) before asking for its min valid version"
            )
        return Statement("SELECT CHANGE_TRACKING_MIN_VALID_VERSION(?)", (spec.object_id,))

    def current_version(self) -> Statement:
        return Statement("SELECT CHANGE_TRACKING_CURRENT_VERSION()")

    def changes_query(self, spec: TableSpec) -> ChangeQuery:
        keys, others = split_columns(spec)
        if not keys:
            raise ValueError(
                f"table {spec.name!r} has no primary key: Change Tracking needs one; "
                "add a primary key or remove the table from source.tables"
            )
        columns = _columns(spec)
        q = quote_mssql
        select = [
            "ct.SYS_CHANGE_OPERATION",
            "ct.SYS_CHANGE_VERSION",
            *(_select("ct", columns[name]) for name in keys),
            *(_select("t", columns[name]) for name in others),
        ]
        join = " AND ".join(f"t.{q(name)} = ct.{q(name)}" for name in keys)
        sql = (
            f"SELECT {', '.join(select)} FROM {_changetable(spec)} "
            f"LEFT JOIN {_table_ref(spec)} AS t ON {join} "
            "ORDER BY ct.SYS_CHANGE_VERSION"
        )
        return ChangeQuery(sql, 1, len(keys), others, _converts(spec))

    def snapshot_query(self, spec: TableSpec) -> SnapshotQuery:
        keys, others = split_columns(spec)
        columns = _columns(spec)
        select = ", ".join(_select("t", columns[name]) for name in (*keys, *others))
        return SnapshotQuery(
            f"SELECT {select} FROM {_table_ref(spec)} AS t", len(keys), others, _converts(spec)
        )

    def chunk_refusal(self, spec: TableSpec) -> str | None:
        for column in key_columns(spec):
            if (problem := mssql_uncomparable(column)) is not None:
                return (
                    f"table {spec.name!r}: key column {column.name!r} {problem}; the "
                    "snapshot reads the whole table in one transaction instead of in chunks"
                )
        return None

    def column_refusal(self, spec: TableSpec, column: str) -> str | None:
        return column_refusal(spec, column, lambda c: False, mssql_uncomparable)

    def row_estimate(self, spec: TableSpec) -> Statement:
        # The row count the storage engine keeps (no scan), heap or clustered index.
        if spec.object_id is None:
            return Statement("SELECT CAST(NULL AS bigint)")
        return Statement(
            "SELECT SUM(p.rows) FROM sys.partitions AS p "
            "WHERE p.object_id = ? AND p.index_id IN (0, 1)",
            (spec.object_id,),
        )

    def snapshot_upper_bound(self, spec: TableSpec) -> SnapshotQuery:
        keys = key_columns(spec)
        select = ", ".join(_select("t", c) for c in keys)
        order = ", ".join(f"t.{quote_mssql(c.name)} DESC" for c in keys)
        return SnapshotQuery(
            f"SELECT TOP (1) {select} FROM {_table_ref(spec)} AS t ORDER BY {order}",
            len(keys),
            (),
            _converts(replace(spec, columns=keys)),
        )

    def snapshot_chunk_query(
        self,
        spec: TableSpec,
        after: tuple[object, ...] | None,
        upper: tuple[object, ...],
        limit: int,
    ) -> SnapshotQuery:
        keys = chunk_keys(spec, after, upper, limit, self.chunk_refusal(spec))
        # T-SQL has no row-value comparison: the nested form seeks on the leading column.
        refs = [f"t.{quote_mssql(c.name)}" for c in keys]
        markers = [MSSQL_KEY_MARKERS[base_type(c)] for c in keys]
        positions = nested_positions(len(keys))
        where = [nested_range(refs, markers, "<", "<=")]
        params: list[object] = [upper[i] for i in positions]
        if after is not None:
            where.insert(0, nested_range(refs, markers, ">", ">"))
            params[:0] = [after[i] for i in positions]
        names, others = split_columns(spec)
        columns = _columns(spec)
        select = ", ".join(_select("t", columns[name]) for name in (*names, *others))
        return SnapshotQuery(
            f"SELECT TOP (?) {select} FROM {_table_ref(spec)} AS t "
            f"WHERE {' AND '.join(where)} ORDER BY {', '.join(refs)}",
            len(keys),
            others,
            _converts(spec),
            (limit, *params),
        )

    def column_upper_bound(self, spec: TableSpec, column: str) -> SnapshotQuery:
        alone = bound_spec(spec, column)
        return SnapshotQuery(
            f"SELECT TOP (1) {_select('t', alone.columns[0])} FROM {_table_ref(spec)} AS t "
            f"ORDER BY t.{quote_mssql(column)} DESC",
            1,
            (),
            _converts(alone),
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
        found = checked_column(
            spec, column, after, upper, limit, since, self.column_refusal(spec, column)
        )
        q = quote_mssql
        names, others = split_columns(spec)

        def unchanged(alias: str) -> str:
            same = " AND ".join(f"ct.{q(k)} = {alias}.{q(k)}" for k in names)
            return f"NOT EXISTS (SELECT 1 FROM {_changetable(spec)} WHERE {same})"

        columns = _columns(spec)
        sql, params = column_range(
            select=", ".join(_select("t", columns[name]) for name in (*names, *others)),
            table=_table_ref(spec),
            column=q(column),
            marker=MSSQL_KEY_MARKERS[base_type(found)],
            unchanged=unchanged,
            after=after,
            upper=upper,
            limit=limit,
            since=since,
            top=True,
        )
        return SnapshotQuery(sql, len(names), others, _converts(spec), params)

    def column_parameters(
        self, spec: TableSpec, column: str, cursor: Sequence[JsonValue]
    ) -> tuple[object, ...]:
        found, target, value = column_target(spec, column, cursor)
        try:
            return (mssql_key_value(target, value),)
        except (ValueError, ArithmeticError) as exc:  # binascii.Error is a ValueError
            raise ValueError(
                f"table {spec.name!r}: column {column!r} ({found.source_type}) cannot hold "
                f"{value!r} as read: {exc}"
            ) from None

    def key_parameters(self, spec: TableSpec, key: Sequence[JsonValue]) -> tuple[object, ...]:
        params = []
        for column, target, value in key_targets(spec, key):
            try:
                params.append(mssql_key_value(target, value))
            except (ValueError, ArithmeticError) as exc:  # binascii.Error is a ValueError
                raise ValueError(
                    f"table {spec.name!r}: key column {column.name!r} ({column.source_type}) "
                    f"cannot hold {value!r} as read: {exc}"
                ) from None
        return tuple(params)

    def table_health(self, spec: TableSpec, saved_version: int) -> Statement:
        # Retention is database-wide on SQL Server (database_info), hence NULL here.
        # commit_time is assumed to be UTC, hence SYSUTCDATETIME().
        return Statement(
            "SELECT CAST(NULL AS float), "
            "DATEDIFF_BIG(SECOND, MIN(tc.commit_time), SYSUTCDATETIME()) "
            f"FROM {_changetable(spec)} "
            "JOIN sys.dm_tran_commit_table AS tc ON tc.commit_ts = ct.SYS_CHANGE_VERSION",
            (saved_version,),
        )

    def cleanup_backlog(self) -> Statement | None:
        return Statement(_CLEANUP_BACKLOG)


if TYPE_CHECKING:
    _conforms: Dialect = MssqlDialect()
