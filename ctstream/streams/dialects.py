"""SQL text per source dialect: the seam between the reader and the database.

Identifiers in generated SQL come only from the catalog and are always quoted; versions
and names are bound parameters. The SQL Server (T-SQL) dialect joins this module in the
SQL Server issue; the reader does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ctstream.models import TableSpec


def quote_sqlite(name: str) -> str:
    """SQLite/ANSI identifier quoting: wrap in double quotes, double any inside."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class ChangeQuery:
    sql: str
    # The query's parameters are (last_version,) * last_version_params.
    last_version_params: int
    # Column order of each result row: operation, version, key columns, other columns.
    key_count: int
    value_columns: tuple[str, ...]


class Dialect(Protocol):
    name: str

    def tracked_table_sql(self) -> str:
        """One row (change_table, min_valid_version) for the table named by the parameter."""

    def columns_sql(self) -> str:
        """Rows (name, type, notnull, pk_ordinal) for the table named by the parameter."""

    def min_valid_version_sql(self) -> str: ...

    def current_version_sql(self) -> str: ...

    def changes_query(self, spec: TableSpec) -> ChangeQuery: ...


class SqliteDialect:
    """The SQLite Change Tracking stand-in (see streams/sqlite_tracking.py)."""

    name = "sqlite"

    def tracked_table_sql(self) -> str:
        return "SELECT change_table, min_valid_version FROM _ctstream_tracked WHERE table_name = ?"

    def columns_sql(self) -> str:
        return 'SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid'

    def min_valid_version_sql(self) -> str:
        return "SELECT min_valid_version FROM _ctstream_tracked WHERE table_name = ?"

    def current_version_sql(self) -> str:
        return "SELECT current_version FROM _ctstream_version WHERE id = 1"

    def changes_query(self, spec: TableSpec) -> ChangeQuery:
        if spec.change_table is None:
            raise ValueError(f"table {spec.name!r} has no change table")
        q = quote_sqlite
        keys = spec.key_columns
        key_names = {c.name for c in keys}
        others = tuple(c.name for c in spec.columns if c.name not in key_names)
        select = [
            # Reported relative to the caller's last version, as CHANGETABLE does.
            "CASE WHEN c.sys_change_operation = 'D' THEN 'D' "
            "WHEN c.sys_change_creation_version > ? THEN 'I' ELSE 'U' END",
            "c.sys_change_version",
            *(f"c.{q(c.name)}" for c in keys),
            *(f"t.{q(name)}" for name in others),
        ]
        join = " AND ".join(f"t.{q(c.name)} = c.{q(c.name)}" for c in keys)
        sql = (
            f"SELECT {', '.join(select)} FROM {q(spec.change_table)} AS c "
            f"LEFT JOIN {q(spec.table)} AS t ON {join} "
            "WHERE c.sys_change_version > ? ORDER BY c.sys_change_version"
        )
        return ChangeQuery(sql, 2, len(keys), others)


def dialect_for(name: str) -> Dialect:
    if name == "sqlite":
        return SqliteDialect()
    raise ValueError(
        f"source.dialect {name!r} has no reader yet: expected 'sqlite' "
        "(the SQL Server reader arrives with the SQL Server issue)"
    )
