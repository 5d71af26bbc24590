"""Reads Change Tracking changes over aioodbc, one consistent transaction per poll.

In one transaction: the table's minimum valid version, the database's current version,
and every change since the caller's last version left-joined to the table on each key
column. Results are streamed with ``fetchmany`` and never loaded whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import aioodbc
import pyodbc

from ctstream.errors import SourceError, SourceUnavailable, VersionTooOld
from ctstream.models import ColumnSpec, JsonValue, Operation, TableSpec, normalise
from ctstream.settings import SourceSettings
from ctstream.streams.dialects import ChangeQuery, Dialect, dialect_for

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceChange:
    operation: Operation
    version: int
    key: tuple[JsonValue, ...]
    row: dict[str, JsonValue]  # deletes: key columns only


@dataclass(slots=True)
class ChangeSet:
    """An open read of one table's changes; iterate :meth:`batches` inside the context."""

    spec: TableSpec
    last_version: int
    min_valid_version: int
    current_version: int
    _cursor: Any
    _query: ChangeQuery
    _fetch_size: int

    async def batches(self) -> AsyncIterator[list[SourceChange]]:
        key_names = tuple(c.name for c in self.spec.key_columns)
        values = self._query.value_columns
        nkeys = self._query.key_count
        await self._cursor.execute(
            self._query.sql, *((self.last_version,) * self._query.last_version_params)
        )
        while True:
            rows = await self._cursor.fetchmany(self._fetch_size)
            if not rows:
                return
            batch: list[SourceChange] = []
            for r in rows:
                op = r[0]
                key = tuple(normalise(v) for v in r[2 : 2 + nkeys])
                row: dict[str, JsonValue] = dict(zip(key_names, key, strict=True))
                if op != "D":
                    row.update(zip(values, (normalise(v) for v in r[2 + nkeys :]), strict=True))
                batch.append(SourceChange(op, int(r[1]), key, row))
            yield batch


class SourceReader:
    """One connection to the source, reused across polls and reopened after failures."""

    def __init__(self, settings: SourceSettings, dialect: Dialect | None = None) -> None:
        self._settings = settings
        self._dialect = dialect or dialect_for(settings.dialect)
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> Any:
        if self._conn is None:
            try:
                self._conn = await aioodbc.connect(
                    dsn=self._settings.dsn.get_secret_value(), autocommit=False
                )
            except pyodbc.Error as exc:
                raise SourceUnavailable(
                    f"cannot connect to the source ({self._settings.dialect}): "
                    f"{_odbc_message(exc)}; check source.dsn and that the database is up"
                ) from None
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(pyodbc.Error):
                await conn.close()

    async def _fetch(self, what: str, sql: str, *params: object, all_rows: bool = False) -> Any:
        """One catalog or version query in its own short transaction."""
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.cursor() as cur:
                    await cur.execute(sql, *params)
                    result = await (cur.fetchall() if all_rows else cur.fetchone())
                await conn.rollback()
            except pyodbc.Error as exc:
                await self.close()
                raise SourceUnavailable(f"{what}: {_odbc_message(exc)}") from None
        return result

    async def describe(self, name: str) -> TableSpec:
        """The table's columns and key from the catalog; refuse untracked or keyless tables."""
        what = f"reading the catalog for {name!r}"
        tracked = await self._fetch(what, self._dialect.tracked_table_sql(), name)
        rows = await self._fetch(what, self._dialect.columns_sql(), name, all_rows=True)
        if not rows:
            raise SourceError(
                f"source.tables: table {name!r} does not exist in the source database"
            )
        if tracked is None:
            raise SourceError(
                f"source.tables: table {name!r} is not change-tracked; enable it with "
                f"`ctstream sqlite track DB {name}` (SQL Server: ALTER TABLE ... "
                "ENABLE CHANGE_TRACKING)"
            )
        columns = tuple(
            ColumnSpec(
                name=str(r[0]),
                source_type=str(r[1] or ""),
                nullable=not bool(r[2]),
                key_ordinal=int(r[3]) if r[3] else None,
            )
            for r in rows
        )
        spec = TableSpec(
            name=name, schema=None, table=name, columns=columns, change_table=str(tracked[0])
        )
        try:
            spec.check()
        except ValueError as exc:
            raise SourceError(f"source.tables: {exc}") from None
        return spec

    async def describe_all(self, names: Sequence[str]) -> dict[str, TableSpec]:
        return {name: await self.describe(name) for name in names}

    async def min_valid_version(self, spec: TableSpec) -> int:
        row = await self._fetch(
            "reading the min valid version", self._dialect.min_valid_version_sql(), spec.name
        )
        if row is None:
            raise SourceError(f"table {spec.name!r} is no longer change-tracked")
        return int(row[0])

    @asynccontextmanager
    async def changes(self, spec: TableSpec, last_version: int) -> AsyncIterator[ChangeSet]:
        """Open one read transaction and yield the change set since ``last_version``.

        Raises VersionTooOld when ``last_version`` is below the minimum valid version:
        changes have been cleaned up and only a re-snapshot is correct.
        """
        async with self._lock:
            conn = await self._connection()
            try:
                cur = await conn.cursor()
                try:
                    await cur.execute(self._dialect.min_valid_version_sql(), spec.name)
                    row = await cur.fetchone()
                    if row is None:
                        raise SourceError(f"table {spec.name!r} is no longer change-tracked")
                    min_valid = int(row[0])
                    await cur.execute(self._dialect.current_version_sql())
                    current = int((await cur.fetchone())[0])
                    if last_version < min_valid:
                        raise VersionTooOld(
                            f"table {spec.name!r}: saved version {last_version} is below the "
                            f"minimum valid version {min_valid} (changes were cleaned up); "
                            f"a re-snapshot of the table is needed"
                        )
                    yield ChangeSet(
                        spec,
                        last_version,
                        min_valid,
                        current,
                        cur,
                        self._dialect.changes_query(spec),
                        self._settings.fetch_size,
                    )
                finally:
                    with suppress(pyodbc.Error):
                        await cur.close()
                    with suppress(pyodbc.Error):
                        await conn.rollback()  # read-only: end the snapshot
            except pyodbc.Error as exc:
                await self.close()
                raise SourceUnavailable(
                    f"reading changes of {spec.name!r}: {_odbc_message(exc)}"
                ) from None


def _odbc_message(exc: pyodbc.Error) -> str:
    # pyodbc errors carry (sqlstate, message); never the connection string.
    parts = [str(a) for a in exc.args]
    return " ".join(parts)[:500] or type(exc).__name__
