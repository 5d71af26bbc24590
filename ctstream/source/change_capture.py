"""One poll (or one snapshot) of one table: read, produce, wait for Kafka, report the version.

Shared by the poll agent (which saves the version in a changelog-backed Faust table) and
by any stand-alone collector (the demo's second, redundant collector). The caller saves
the returned version only after this returns: every event has been acknowledged by then.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from orjson import dumps

from ctstream.models import TableSpec, encode_key, unique_id
from ctstream.models.change_event import Record, payload_of
from ctstream.models.masking import Masker
from ctstream.models.source_state import SnapshotProgress
from ctstream.models.values import JsonValue, iso_utc
from ctstream.source.changes import SourceChange
from ctstream.source.reader import SourceReader


class Delivery(Protocol):
    """Records handed to Kafka and not yet known to be acknowledged."""

    async def acknowledged(self) -> None:
        """Return when Kafka acknowledged every record; raise the first failure."""

    def discard(self) -> None:
        """Nobody will wait: fetch any failure, so that none is logged as lost."""


# send(records) → their delivery, once they are queued in order (per key) for the table's
# raw topic. The poll agent binds streams/producer.send_batched to its producer.
Send = Callable[[list[Record]], Awaitable[Delivery]]


@dataclass(frozen=True, slots=True)
class PollResult:
    table: str
    from_version: int
    to_version: int
    min_valid_version: int
    events: int
    started_at: float
    seconds: float


async def _produce(
    spec: TableSpec,
    batches: AsyncIterator[list[SourceChange]],
    send: Send,
    started: float,
    interval: float,
    masker: Masker | None,
    snapshot: str | None = None,
) -> int:
    """Send every change; return when Kafka acknowledged all of them.

    One source batch is in flight while the next is read and encoded; the one before must
    be acknowledged first, so memory stays bounded to two batches.

    Masked columns are masked here, before anything leaves the process; a hashed key is
    hashed before the unique id and the Kafka key are made from it. ``snapshot``: the
    changes are that snapshot's rows, identified by it (models/unique_id.py).
    """
    start_iso = iso_utc(started)
    events = 0
    # Columns written to another BigQuery column than usual travel under that name.
    targets = spec.targets
    table = spec.name
    in_flight: Delivery | None = None
    sent: Delivery | None = None
    try:
        async for batch in batches:
            records: list[Record] = []
            append = records.append
            # The payload is encoded straight from the fetched change (ChangeEvent's layout,
            # payload_of; a ChangeEvent costs more to make than the rest of the row).
            for operation, version, key, row in batch:
                if masker is not None:
                    key, row = masker.key(key), masker.row(row)
                if targets:
                    row = {targets.get(k, k): v for k, v in row.items()}
                payload = payload_of(
                    unique_id(table, key, version, snapshot),
                    table,
                    interval,
                    start_iso,
                    operation,
                    version,
                    key,
                    row,
                )
                append((encode_key(key), dumps(payload), started))
            sent = await send(records)
            if in_flight is not None:
                await in_flight.acknowledged()
            in_flight, sent = sent, None
            events += len(batch)
        if in_flight is not None:
            await in_flight.acknowledged()
    except BaseException:
        for delivery in (in_flight, sent):
            if delivery is not None:
                delivery.discard()
        raise
    return events


async def poll_table(
    reader: SourceReader,
    spec: TableSpec,
    last_version: int,
    send: Send,
    previous_start: float | None = None,
) -> PollResult:
    """Produce every change of ``spec`` after ``last_version``; return the new version.

    Raises (SourceUnavailable, VersionTooOld, Kafka errors) without a result: then
    nothing may be saved and the next poll reads the same changes.
    """
    started = time.time()
    interval = round(started - previous_start, 6) if previous_start else 0.0
    async with reader.changes(spec, last_version) as changes:
        events = await _produce(
            spec, changes.batches(), send, started, interval, reader.masker(spec)
        )
        to_version = max(changes.current_version, last_version)
        min_valid = changes.min_valid_version
    return PollResult(
        table=spec.name,
        from_version=last_version,
        to_version=to_version,
        min_valid_version=min_valid,
        events=events,
        started_at=started,
        seconds=time.time() - started,
    )


async def snapshot_table(
    reader: SourceReader, spec: TableSpec, send: Send, snapshot_id: str | None = None
) -> PollResult:
    """Produce every row of ``spec`` as an 'S' event at one version, in one read
    transaction; return that version. Its rows are identified by ``snapshot_id``.

    Change Tracking continues from the returned version: a change after it is reported by
    the next poll, a change before it is already in the rows read. Raises like poll_table.
    """
    started = time.time()
    masker = reader.masker(spec)
    async with reader.snapshot(spec) as snapshot:
        events = await _produce(spec, snapshot.batches(), send, started, 0.0, masker, snapshot_id)
        version, min_valid = snapshot.version, snapshot.min_valid_version
    return PollResult(
        table=spec.name,
        from_version=version,
        to_version=version,
        min_valid_version=min_valid,
        events=events,
        started_at=started,
        seconds=time.time() - started,
    )


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """One chunk of a snapshot, acknowledged by Kafka."""

    rows: int
    # The cursor the last row leaves (reader.chunk_cursor: its key, or its chunk column's
    # value), as read, before masking; None: no row.
    last_key: tuple[JsonValue, ...] | None
    version: int  # the chunk's read version: its rows' changetrack_ver
    done: bool  # the chunk reached the snapshot's upper key: nothing is left to read
    seconds: float


async def snapshot_chunk(
    reader: SourceReader, spec: TableSpec, progress: SnapshotProgress, limit: int, send: Send
) -> ChunkResult:
    """Produce the next chunk of ``progress`` (cursors after its ``after`` up to its
    ``upper``, at most ``limit`` rows but for rows sharing a chunk column's value), read
    in one short transaction at its current version; return when Kafka acknowledged it.
    Raises like poll_table, and nothing may be saved."""
    started = time.time()
    if progress.upper is None:  # the table was empty at the start
        return ChunkResult(0, None, progress.start_version, True, 0.0)
    last: list[tuple[JsonValue, ...]] = []
    cursor = reader.chunk_cursor(spec)

    async def tracked(
        batches: AsyncIterator[list[SourceChange]],
    ) -> AsyncIterator[list[SourceChange]]:
        async for batch in batches:
            if batch:
                last[:] = [cursor(batch[-1])]
            yield batch

    masker = reader.masker(spec)
    async with reader.snapshot_chunk(
        spec, progress.after, progress.upper, limit, progress.start_version
    ) as chunk:
        rows = await _produce(
            spec, tracked(chunk.batches()), send, started, 0.0, masker, progress.id
        )
        version = chunk.version
    last_key = last[0] if last else None
    done = rows < limit or last_key == progress.upper
    return ChunkResult(rows, last_key, version, done, time.time() - started)
