"""What the reader reports about the source besides changes: the database's Change
Tracking settings, a table's health, catalog columns, and ODBC errors made into
ctstream's (never with the connection string, which may hold a password)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyodbc

from ctstream.errors import SourcePermissionDenied, SourceUnavailable
from ctstream.models import ColumnSpec

# SQL Server's refusals: "… permission was denied on object …" (229, 300),
# "… does not have permission …" (297).
_PERMISSION_DENIED = re.compile(r"permission (was )?denied|does not have permission", re.I)
# What a catalog or change query needs.
TABLE_GRANT = "GRANT SELECT, VIEW CHANGE TRACKING ON <table> TO <login>"
# sys.dm_tran_commit_table, for the ages of changes and the cleanup backlog.
SERVER_STATE_GRANT = (
    "GRANT VIEW SERVER STATE TO <login> (Azure SQL: GRANT VIEW DATABASE STATE TO <user>)"
)


def enable_tracking_advice(dialect: str) -> str:
    """What turns Change Tracking on for a database of ``dialect``."""
    if dialect == "sqlite":
        return "`ctstream sqlite track DB TABLE...` (the SQLite stand-in's change tracking)"
    return (
        "ALTER DATABASE <db> SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, "
        "AUTO_CLEANUP = ON)"
    )


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    change_tracking_on: bool
    snapshot_isolation_on: bool | None  # None: not a setting of this dialect
    retention_seconds: float | None
    auto_cleanup_on: bool | None


@dataclass(frozen=True, slots=True)
class TableHealth:
    min_valid_version: int | None
    current_version: int
    retention_seconds: float | None
    oldest_unpolled_change_age_s: float | None
    # Set when the login may not read the change ages (the age is then None).
    age_denied: SourcePermissionDenied | None = None


def catalog_columns(rows: Sequence[Any]) -> tuple[ColumnSpec, ...]:
    """Catalog rows (name, type, is_nullable, key_ordinal, precision, scale, max_length)."""
    return tuple(
        ColumnSpec(
            name=str(r[0]),
            source_type=str(r[1] or ""),
            nullable=bool(r[2]),
            key_ordinal=int(r[3]) if r[3] else None,
            precision=None if r[4] is None else int(r[4]),
            scale=None if r[5] is None else int(r[5]),
            max_length=None if r[6] is None else int(r[6]),
        )
        for r in rows
    )


def odbc_message(exc: pyodbc.Error) -> str:
    """The driver's message: pyodbc errors carry (sqlstate, message), never the DSN."""
    parts = [str(a) for a in exc.args]
    return " ".join(parts)[:500] or type(exc).__name__


def query_error(
    what: str, exc: pyodbc.Error, grant: str = TABLE_GRANT
) -> SourcePermissionDenied | SourceUnavailable:
    """The error for a failed query: SourcePermissionDenied (with the GRANT that fixes
    it) when the server refused it for the login's permissions, else SourceUnavailable."""
    message = f"{what}: {odbc_message(exc)}"
    if _PERMISSION_DENIED.search(message):
        return SourcePermissionDenied(f"{message}; run {grant}", grant)
    return SourceUnavailable(message)
