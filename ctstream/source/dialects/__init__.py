"""SQL text per source dialect: the seam between the reader and the database.

``base`` holds what every dialect provides (the :class:`Dialect` Protocol, statements with
bound parameters); ``sqlite`` is the SQLite Change Tracking stand-in, ``mssql`` SQL
Server's Change Tracking in T-SQL.
"""

from __future__ import annotations

from ctstream.source.dialects.base import (
    ChangeQuery,
    Dialect,
    SnapshotQuery,
    Statement,
    split_columns,
)
from ctstream.source.dialects.mssql import MssqlDialect, quote_mssql
from ctstream.source.dialects.sqlite import SqliteDialect, quote_sqlite

__all__ = [
    "ChangeQuery",
    "Dialect",
    "MssqlDialect",
    "SnapshotQuery",
    "SqliteDialect",
    "Statement",
    "dialect_for",
    "quote_mssql",
    "quote_sqlite",
    "split_columns",
]


def dialect_for(name: str) -> Dialect:
    """The dialect named by ``source.dialect``; ValueError names the ones known."""
    if name == "sqlite":
        return SqliteDialect()
    if name == "mssql":
        return MssqlDialect()
    raise ValueError(f"source.dialect {name!r} is not known: expected 'sqlite' or 'mssql'")
