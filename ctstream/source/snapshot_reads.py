"""Snapshot reads of a table: whole in one transaction, or as key-ordered chunks.

A chunked snapshot (as Debezium's incremental snapshots) fixes the largest key once
(:meth:`SnapshotReads.snapshot_bound`), then reads chunk after chunk
(:meth:`SnapshotReads.snapshot_chunk`), each in its own short transaction at that
transaction's current version: the rows whose key is above the previous chunk's last key
and at most the bound. Rows inserted above the bound afterwards are left to Change
Tracking; rows deleted between chunks are simply not read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from ctstream.models import JsonValue, TableSpec
from ctstream.settings import SourceSettings
from ctstream.source.changes import SnapshotSet
from ctstream.source.dialects import Dialect


class SnapshotReads:
    """The snapshot reads of :class:`ctstream.source.reader.SourceReader`."""

    _settings: SourceSettings
    _dialect: Dialect

    def _read(
        self, spec: TableSpec, what: str
    ) -> AbstractAsyncContextManager[tuple[Any, int, int]]:
        """One read transaction: yields (cursor, min valid version, current version)."""
        raise NotImplementedError

    @asynccontextmanager
    async def snapshot(self, spec: TableSpec) -> AsyncIterator[SnapshotSet]:
        """Open one read transaction and yield the whole table at the current version.

        Changes after that version are exactly what a later ``changes(spec, version)``
        returns, so snapshot + changes lose nothing.
        """
        async with self._read(spec, "reading a snapshot of") as (cur, min_valid, current):
            yield SnapshotSet(
                spec,
                current,
                min_valid,
                cur,
                self._dialect.snapshot_query(spec),
                self._settings.fetch_size,
            )

    def chunk_refusal(self, spec: TableSpec) -> str | None:
        """None when ``spec`` can be read in chunks; else why not (the dialect's sentence:
        read the table whole with :meth:`snapshot` instead)."""
        return self._dialect.chunk_refusal(spec)

    async def snapshot_bound(self, spec: TableSpec) -> tuple[tuple[JsonValue, ...] | None, int]:
        """(the largest key, None when the table is empty; the current version), read in
        one transaction. The key is read as chunk rows' keys are, so the chunk that ends
        the snapshot ends with a key equal to it."""
        async with self._read(spec, "reading the largest key of") as (cur, min_valid, current):
            largest = SnapshotSet(
                spec, current, min_valid, cur, self._dialect.snapshot_upper_bound(spec), 1
            )
            keys = [c.key async for batch in largest.batches() for c in batch]
        return (keys[0] if keys else None), current

    async def row_estimate(self, spec: TableSpec) -> int | None:
        """About how many rows ``spec`` holds (None when the source cannot tell)."""
        stmt = self._dialect.row_estimate(spec)
        async with self._read(spec, "estimating the rows of") as (cur, _, _):
            await cur.execute(stmt.sql, *stmt.params)
            row = await cur.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    @asynccontextmanager
    async def snapshot_chunk(
        self,
        spec: TableSpec,
        after: Sequence[JsonValue] | None,
        upper: Sequence[JsonValue],
        limit: int,
    ) -> AsyncIterator[SnapshotSet]:
        """Open one read transaction and yield, at its current version, the at most
        ``limit`` rows whose key is above ``after`` (from the first key when None) and at
        most ``upper``, in key order. ``after`` and ``upper`` are keys as read (a chunk
        row's ``key``, the bound of :meth:`snapshot_bound`), also after a JSON round trip.

        The snapshot is complete once a chunk yields fewer than ``limit`` rows or its last
        key equals ``upper``. ValueError (before any read) when the dialect refuses the
        table (:meth:`chunk_refusal`) or a key is not one of its keys.
        """
        dialect = self._dialect
        query = dialect.snapshot_chunk_query(
            spec,
            None if after is None else dialect.key_parameters(spec, after),
            dialect.key_parameters(spec, upper),
            limit,
        )
        async with self._read(spec, "reading a snapshot chunk of") as (cur, min_valid, current):
            yield SnapshotSet(spec, current, min_valid, cur, query, self._settings.fetch_size)
