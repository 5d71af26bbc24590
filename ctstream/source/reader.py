"""Reads the source over aioodbc: the catalog, versions, and changes or snapshots (whole
tables or key-ordered chunks, source/snapshot_reads.py), each read in one consistent
transaction.

In one transaction: the table's minimum valid version, the database's current version,
and every change since the caller's last version left-joined to the table on each key
column. Results are streamed with ``fetchmany`` and never loaded whole.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any

import aioodbc
import pyodbc

from ctstream.errors import (
    ConfigError,
    SchemaChanged,
    SourceError,
    SourcePermissionDenied,
    SourceUnavailable,
    TableNotTracked,
    VersionTooOld,
)
from ctstream.models import TableSpec
from ctstream.models.column_types import bigquery_type
from ctstream.models.masking import Masker, protect
from ctstream.settings import SourceSettings
from ctstream.source.catalog import (
    SERVER_STATE_GRANT,
    TABLE_GRANT,
    DatabaseInfo,
    TableHealth,
    catalog_columns,
    enable_tracking_advice,
    odbc_message,
    query_error,
)
from ctstream.source.changes import ChangeSet
from ctstream.source.connection_pool import ConnectionPool
from ctstream.source.dialects import Dialect, Statement, dialect_for
from ctstream.source.odbc_driver import connect_failure, login_timeout
from ctstream.source.odbc_security import SecureDsn
from ctstream.source.snapshot_reads import SnapshotReads

log = logging.getLogger(__name__)


class SourceReader(SnapshotReads):
    """A pool of connections to the source (``source.max_connections``), each reused
    across reads and replaced after a failure.

    Snapshot reads, whole or in chunks, come from :class:`SnapshotReads`.
    """

    def __init__(self, settings: SourceSettings, dialect: Dialect | None = None) -> None:
        self._settings = settings
        self._dialect = dialect or dialect_for(settings.dialect)
        self._secure_dsn = SecureDsn()
        self._pool = ConnectionPool(self._open, settings.max_connections)

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    async def _open(self) -> Any:
        """A new connection with the dialect's session settings (the pool's factory)."""
        dialect = self._dialect
        # The ODBC query timeout: SQL Server's driver cancels a statement that runs
        # longer than source.poll_timeout, so a stuck poll fails and is tried again.
        # (The SQLite driver ignores it.)
        query_timeout = max(1, round(self._settings.poll_timeout))

        async def configure(raw: Any) -> None:
            raw.timeout = query_timeout
            dialect.configure_connection(raw)

        dsn = self._secure_dsn(self._settings.dsn.get_secret_value(), self._settings.dialect)
        # Each connection's calls run on a thread of its own, one after another: a poll
        # cancelled mid-statement (a rebalance) leaves its statement running, and the pool
        # then closes the connection; on a shared pool of threads the close would run
        # beside the statement on the same ODBC handle, which ODBC drivers do not allow
        # (the SQLite driver crashed the worker). Queued behind it, the close waits.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctstream-odbc")
        try:
            conn = await aioodbc.connect(
                dsn=dialect.connection_string(dsn),
                autocommit=False,
                timeout=login_timeout(dsn),
                after_created=configure,
                executor=executor,
            )
        except pyodbc.Error as exc:
            executor.shutdown(wait=False)
            raise SourceUnavailable(
                connect_failure(dsn, self._settings.dialect, odbc_message(exc))
            ) from None
        # The thread ends once the connection is closed and gone.
        weakref.finalize(conn, executor.shutdown, wait=False)
        try:
            lock_ms = round(self._settings.lock_timeout * 1000)
            async with conn.cursor() as cur:
                for sql in dialect.session_sql(lock_ms):
                    await cur.execute(sql)
            await conn.rollback()
        except pyodbc.Error as exc:
            with suppress(pyodbc.Error):
                await conn.close()
            raise SourceUnavailable(f"setting up the source session: {odbc_message(exc)}") from None
        return conn

    async def close(self) -> None:
        await self._pool.close()

    async def _fetch(
        self, what: str, stmt: Statement, *, all_rows: bool = False, grant: str | None = None
    ) -> Any:
        """One catalog or version query in its own short transaction.

        Raises SourcePermissionDenied (with ``grant``, the statement that fixes it) when
        the server refuses the query for the login's permissions, SourceUnavailable for
        any other ODBC error.
        """
        async with self._pool.lease() as conn:
            try:
                async with conn.cursor() as cur:
                    await cur.execute(stmt.sql, *stmt.params)
                    result = await (cur.fetchall() if all_rows else cur.fetchone())
                await conn.rollback()
            except pyodbc.Error as exc:
                raise query_error(what, exc, grant or TABLE_GRANT) from None
        return result

    async def database_info(self) -> DatabaseInfo:
        row = await self._fetch("reading the database settings", self._dialect.database_info())
        if row is None:
            raise SourceError("the source database reports no settings; check source.dsn")

        def flag(value: Any) -> bool | None:
            return None if value is None else bool(value)

        return DatabaseInfo(
            change_tracking_on=bool(row[0]),
            snapshot_isolation_on=flag(row[1]),
            retention_seconds=None if row[2] is None else float(row[2]),
            auto_cleanup_on=flag(row[3]),
        )

    async def check_database(self) -> DatabaseInfo:
        """Refuse a database where polls cannot be correct; say what to run."""
        info = await self.database_info()
        if not info.change_tracking_on:
            raise SourceError(
                f"change tracking is not enabled on the source database; run "
                f"{enable_tracking_advice(self._settings.dialect)}"
            )
        if info.snapshot_isolation_on is False:
            raise SourceError(
                "snapshot isolation is not enabled on the source database: each poll must "
                "read in one SNAPSHOT transaction to be consistent; run "
                "ALTER DATABASE <db> SET ALLOW_SNAPSHOT_ISOLATION ON"
            )
        return info

    async def describe(self, name: str) -> TableSpec:
        """The table's columns and key from the catalog; refuse untracked or keyless tables."""
        try:
            schema, table = self._dialect.split_name(name)
        except ValueError as exc:
            raise SourceError(f"source.tables: {exc}") from None
        what = f"reading the catalog for {name!r}"
        tracked = await self._fetch(what, self._dialect.tracked_table(schema, table))
        rows = await self._fetch(what, self._dialect.columns(schema, table), all_rows=True)
        if not rows:
            raise SourceError(
                f"source.tables: table {name!r} does not exist in the source database"
            )
        if tracked is None:
            raise SourceError(
                f"source.tables: table {name!r} is not change-tracked; enable it with "
                f"`ctstream sqlite track DB {name}` (SQL Server: ALTER TABLE {name} "
                "ENABLE CHANGE_TRACKING)"
            )
        columns = catalog_columns(rows)
        # (reference, identity): the change table and the tracking's start (SQLite
        # stand-in), or the object id alone (SQL Server). A table dropped and created
        # again gets a new identity.
        ref = tracked[0]
        identity = tracked[1] if len(tracked) > 1 else ref
        spec = TableSpec(
            name=name,
            schema=schema,
            table=table,
            columns=columns,
            change_table=ref if isinstance(ref, str) else None,
            object_id=None if identity is None else int(identity),
        )
        try:
            spec.check()
            self._dialect.changes_query(spec)  # refuses names the dialect cannot quote
        except ValueError as exc:
            raise SourceError(f"source.tables: {exc}") from None
        try:
            return self.protect(spec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def protect(self, spec: TableSpec, *, strict: bool = True) -> TableSpec:
        """``spec`` with source.mask's rules and source.restricted's columns applied."""
        settings = self._settings
        return protect(
            spec,
            settings.mask.get(spec.name, {}),
            settings.restricted.get(spec.name, ()),
            strict=strict,
            text_columns=[
                c.name
                for c in spec.columns
                if bigquery_type(c.source_type, c.precision, c.scale) == "STRING"
            ],
        )

    def masker(self, spec: TableSpec) -> Masker | None:
        """What the poller applies to ``spec``'s rows and keys before producing them."""
        key = self._settings.mask_key
        masker = Masker(spec, key.get_secret_value().encode() if key else None)
        return masker if masker else None

    async def describe_all(self, names: Sequence[str]) -> dict[str, TableSpec]:
        return {name: await self.describe(name) for name in names}

    async def tracked_names(self) -> list[str]:
        """Every change-tracked table, named as ``source.tables`` names it."""
        rows = await self._fetch(
            "listing the change-tracked tables", self._dialect.tracked_tables(), all_rows=True
        )
        return sorted(str(t) if s is None else f"{s}.{t}" for s, t in rows)

    async def min_valid_version(self, spec: TableSpec) -> int:
        row = await self._fetch(
            "reading the min valid version", self._dialect.min_valid_version(spec)
        )
        if row is None or row[0] is None:
            raise SourceError(f"table {spec.name!r} is no longer change-tracked")
        return int(row[0])

    async def table_health(self, spec: TableSpec, saved_version: int | None) -> TableHealth:
        what = f"reading the health of {spec.name!r}"
        min_row = await self._fetch(what, self._dialect.min_valid_version(spec))
        current = await self._fetch(what, self._dialect.current_version())
        since = saved_version if saved_version is not None else int(current[0])
        denied: SourcePermissionDenied | None = None
        try:
            row = await self._fetch(
                what, self._dialect.table_health(spec, since), grant=SERVER_STATE_GRANT
            )
        except SourcePermissionDenied as exc:
            row, denied = None, exc
        return TableHealth(
            min_valid_version=None if min_row is None or min_row[0] is None else int(min_row[0]),
            current_version=int(current[0]),
            retention_seconds=None if row is None or row[0] is None else float(row[0]),
            oldest_unpolled_change_age_s=(
                None if row is None or row[1] is None else max(0.0, float(row[1]))
            ),
            age_denied=denied,
        )

    async def cleanup_backlog_s(self) -> float | None:
        stmt = self._dialect.cleanup_backlog()
        if stmt is None:
            return None
        row = await self._fetch(
            "reading the change tracking commit table", stmt, grant=SERVER_STATE_GRANT
        )
        return None if row is None or row[0] is None else float(row[0])

    async def _check_columns(self, cur: Any, spec: TableSpec) -> None:
        """Refuse to read with a stale column list (raise SchemaChanged with the new one).

        Read inside the poll's transaction, so it matches the rows read: SQLite's schema
        is part of its snapshot, and SQL Server fails a snapshot transaction that touches
        a table altered after it began (error 3961), so the next poll sees the change.
        """
        stmt = self._dialect.columns(spec.schema, spec.table)
        await cur.execute(stmt.sql, *stmt.params)
        columns = catalog_columns(await cur.fetchall())
        if columns == spec.catalog_columns:
            return
        if not columns:
            raise SourceError(f"table {spec.name!r} no longer exists in the source database")
        try:
            new = self.protect(replace(spec, columns=columns), strict=False)
        except ValueError as exc:
            raise SourceError(f"table {spec.name!r} changed: {exc}") from None
        before = {c.name: c.source_type for c in spec.columns}
        after = {c.name: c.source_type for c in columns}
        retyped = sorted(
            f"{n} {before[n]} → {t}" for n, t in after.items() if before.get(n, t) != t
        )
        raise SchemaChanged(
            f"table {spec.name!r} changed: added {sorted(after.keys() - before.keys())}, "
            f"removed {sorted(before.keys() - after.keys())}, retyped {retyped}",
            new,
        )

    @asynccontextmanager
    async def _read(self, spec: TableSpec, what: str) -> AsyncIterator[tuple[Any, int, int]]:
        """One read transaction: yields (cursor, min valid version, current version)."""
        async with self._pool.lease() as conn:
            try:
                cur = await conn.cursor()
                try:
                    stmt = self._dialect.min_valid_version(spec)
                    await cur.execute(stmt.sql, *stmt.params)
                    row = await cur.fetchone()
                    if row is None or row[0] is None:
                        raise TableNotTracked(f"table {spec.name!r} is no longer change-tracked")
                    min_valid = int(row[0])
                    stmt = self._dialect.current_version()
                    await cur.execute(stmt.sql, *stmt.params)
                    current = int((await cur.fetchone())[0])
                    await self._check_columns(cur, spec)
                    yield cur, min_valid, current
                finally:
                    with suppress(pyodbc.Error):
                        await cur.close()
                    with suppress(pyodbc.Error):
                        await conn.rollback()  # read-only: end the snapshot
            except pyodbc.Error as exc:
                raise SourceUnavailable(f"{what} {spec.name!r}: {odbc_message(exc)}") from None

    @asynccontextmanager
    async def changes(self, spec: TableSpec, last_version: int) -> AsyncIterator[ChangeSet]:
        """Open one read transaction and yield the change set since ``last_version``.

        Raises VersionTooOld when ``last_version`` is below the minimum valid version:
        changes have been cleaned up and only a re-snapshot is correct.
        """
        async with self._read(spec, "reading changes of") as (cur, min_valid, current):
            if last_version < min_valid:
                raise VersionTooOld(
                    f"table {spec.name!r}: saved version {last_version} is below the "
                    f"minimum valid version {min_valid} (changes were cleaned up or the "
                    "table was truncated); a re-snapshot of the table is needed"
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


async def selected_tables(source: SourceSettings, reader: SourceReader | None = None) -> list[str]:
    """The tables ``source.tables`` selects now (reading the catalog when it has patterns);
    refuses a selection that finds none. Opens (and closes) a reader when given none."""
    if reader is None:
        reader = SourceReader(source)
        try:
            return await selected_tables(source, reader)
        finally:
            await reader.close()
    selection = source.selection
    if not selection.patterns:
        return list(selection.names)
    tracked = await reader.tracked_names()
    for pattern in selection.unmatched_patterns(tracked):
        log.warning("source.tables: pattern %r matches no change-tracked table (yet)", pattern)
    names = selection.resolve(tracked)
    if not names:
        shown = ", ".join(tracked[:10]) + (" …" if len(tracked) > 10 else "")
        raise ConfigError(
            f"source.tables {source.tables!r} selects none of the "
            f"{len(tracked)} change-tracked tables ({shown or 'none'}); track a table or "
            "change the patterns"
        )
    log.info("source.tables selects %d tables: %s", len(names), ", ".join(names))
    return names
