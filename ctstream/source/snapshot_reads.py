"""Snapshot reads of a table: whole in one transaction, or as key-ordered chunks.

A chunked snapshot (as Debezium's incremental snapshots) fixes the largest key once
(:meth:`SnapshotReads.snapshot_bound`), then reads chunk after chunk
(:meth:`SnapshotReads.snapshot_chunk`), each in its own short transaction at that
transaction's current version: the rows whose key is above the previous chunk's last key
and at most the bound. Rows inserted above the bound afterwards are left to Change
Tracking; rows deleted between chunks are simply not read.

A table named in ``source.chunk_columns`` is chunked by that column's values instead
(dialects/column_chunks.py): the bound is its largest value, the cursor a chunk's last
value (a one-value tuple where a key would be), and every row sharing a value is read in
one chunk. Rows changed after the snapshot's start are left to Change Tracking there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from ctstream.errors import ChunkColumnRefused
from ctstream.models import ColumnSpec, JsonValue, TableSpec
from ctstream.settings import SourceSettings
from ctstream.source.changes import SnapshotSet, SourceChange
from ctstream.source.dialects import Dialect
from ctstream.source.dialects.column_chunks import bound_spec, find_column


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

    def chunk_column(self, spec: TableSpec) -> ColumnSpec | None:
        """The column whose values bound ``spec``'s snapshot chunks
        (``source.chunk_columns``); None when chunks are ranges of the key.
        ChunkColumnRefused, naming the setting, table and column, what is wrong and what
        to do, when that column cannot bound chunks (missing, may hold NULL, its type)."""
        name = self._settings.chunk_columns.get(spec.name)
        if name is None:
            return None
        refusal = self._dialect.column_refusal(spec, name)
        if refusal is not None:
            raise ChunkColumnRefused(refusal)
        column = find_column(spec, name)
        assert column is not None  # not refused: it exists
        return column

    def chunk_refusal(self, spec: TableSpec) -> str | None:
        """None when ``spec`` can be read in chunks (of its chunk column, or of its key);
        else why not (the dialect's sentence, and how ``source.chunk_columns`` would chunk
        it: read the table whole with :meth:`snapshot` instead). Raises like
        :meth:`chunk_column`."""
        if self.chunk_column(spec) is not None:
            return None
        refusal = self._dialect.chunk_refusal(spec)
        if refusal is None:
            return None
        return (
            f'{refusal}; to read it in chunks, set source.chunk_columns."{spec.name}" to a '
            "NOT NULL column of a comparable type (ideally indexed)"
        )

    def chunk_cursor(self, spec: TableSpec) -> Callable[[SourceChange], tuple[JsonValue, ...]]:
        """A chunk row → the cursor it leaves (its key, or its chunk column's value as a
        one-value tuple), as read and before masking. Raises like :meth:`chunk_column`."""
        column = self.chunk_column(spec)
        if column is None:
            return lambda change: change.key
        name = column.name
        return lambda change: (change.row[name],)

    async def snapshot_bound(self, spec: TableSpec) -> tuple[tuple[JsonValue, ...] | None, int]:
        """(the largest key — with a chunk column, its largest value as a one-value tuple
        —, None when the table is empty; the current version), read in one transaction.
        It is read as chunk rows' cursors are (:meth:`chunk_cursor`), so the chunk that
        ends the snapshot ends with a cursor equal to it. Raises like :meth:`chunk_column`."""
        column = self.chunk_column(spec)
        if column is None:
            read, query = spec, self._dialect.snapshot_upper_bound(spec)
        else:
            read = bound_spec(spec, column.name)
            query = self._dialect.column_upper_bound(spec, column.name)
        async with self._read(spec, "reading the largest key of") as (cur, min_valid, current):
            largest = SnapshotSet(read, current, min_valid, cur, query, 1)
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
        since: int | None = None,
    ) -> AsyncIterator[SnapshotSet]:
        """Open one read transaction and yield, at its current version, the at most
        ``limit`` rows whose key is above ``after`` (from the first key when None) and at
        most ``upper``, in key order. ``after`` and ``upper`` are cursors as read (of
        :meth:`chunk_cursor`, the bound of :meth:`snapshot_bound`), also after a JSON
        round trip.

        With a chunk column, the rows whose value is above ``after`` and at most the
        largest value of the next ``limit`` rows (more than ``limit`` rows when values
        repeat), in its order, leaving out rows changed after ``since`` (the snapshot's
        start version, then required).

        The snapshot is complete once a chunk yields fewer than ``limit`` rows or its last
        cursor equals ``upper``. ValueError (before any read) when the dialect refuses the
        table (:meth:`chunk_refusal`) or a cursor is not one of its cursors; raises like
        :meth:`chunk_column`.
        """
        dialect = self._dialect
        column = self.chunk_column(spec)
        if column is None:
            query = dialect.snapshot_chunk_query(
                spec,
                None if after is None else dialect.key_parameters(spec, after),
                dialect.key_parameters(spec, upper),
                limit,
            )
        elif since is None:
            raise ValueError(
                f"table {spec.name!r}: a chunk of column {column.name!r} needs the "
                "snapshot's start version"
            )
        else:
            name = column.name
            query = dialect.column_chunk_query(
                spec,
                name,
                None if after is None else dialect.column_parameters(spec, name, after),
                dialect.column_parameters(spec, name, upper),
                limit,
                since,
            )
        async with self._read(spec, "reading a snapshot chunk of") as (cur, min_valid, current):
            yield SnapshotSet(spec, current, min_valid, cur, query, self._settings.fetch_size)
