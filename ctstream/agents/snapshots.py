"""Snapshots of a table in key-ordered chunks, between its Change Tracking polls.

A snapshot starts by fixing its upper key and its start version in one read
(``SourceReader.snapshot_bound``); every later change arrives by Change Tracking. Each
tick of the table's poll then reads chunks (``source.snapshot_chunk_rows`` rows, each in
its own short read transaction at that read's current version) for at most half a poll
interval, after the table's poll. The progress — the last key Kafka acknowledged — is
saved in the table's ``ct-versions`` state after every chunk, so a crash or a rebalance
resumes at the next chunk on whichever worker owns the table then (a chunk cut short is
read again; its rows keep their unique ids, so dedup drops the copies).

When every chunk is sent, the snapshot waits until BigQuery holds its rows (written or
parked) and only then records it: the record makes the latest view hide keys older than
its start version, so recorded earlier it could hide a key whose snapshot row was still on
its way. A table named in ``source.chunk_columns`` is chunked by that column's values; one
whose key cannot bound chunks, and that names no such column, is read whole in one
transaction. A chunk column that cannot bound chunks refuses the snapshot
(ChunkColumnRefused, raised by :meth:`SnapshotRunner.check` before the table's poll).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ctstream.agents.stats import PollStats
from ctstream.bigquery.snapshots import record_snapshot, snapshot_rows_landed
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack.crash_points import CrashPoints
from ctstream.errors import CtstreamError
from ctstream.models import SourceState, TableSpec
from ctstream.models.source_state import SnapshotControl, SnapshotProgress
from ctstream.models.values import iso_utc
from ctstream.retry import retry_forever
from ctstream.settings import Settings
from ctstream.source.change_capture import Send, snapshot_chunk, snapshot_table
from ctstream.source.reader import SourceReader

log = logging.getLogger("ctstream.snapshot")

# Seconds between two counts of a read snapshot's rows in BigQuery (one query each).
VERIFY_INTERVAL = 2.0


class SnapshotRunner:
    """Starts, advances, pauses and completes the snapshots of the tables polled here."""

    def __init__(
        self,
        settings: Settings,
        reader: SourceReader,
        writer: BigQueryWriter,
        stats: PollStats,
        crash: CrashPoints,
        state: Callable[[str], SourceState],
        save: Callable[[str, SourceState], None],
        should_stop: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.writer = writer
        self.stats = stats
        self.crash = crash
        self._state, self._save, self._should_stop = state, save, should_stop
        self._verified_at: dict[str, float] = {}  # table → monotonic time of the last count
        # The cursor values of snapshots whose key (or chunk column) is masked, kept here
        # only (table → snapshot id, upper, after): the saved state may not hold them in
        # clear.
        self._withheld: dict[str, tuple[str, Any, Any]] = {}

    def check(self, spec: TableSpec, state: SourceState, snapshot_due: bool) -> None:
        """Raise ChunkColumnRefused when a snapshot of ``spec`` is requested, under way or
        ``snapshot_due`` and its chunk column (``source.chunk_columns``) cannot bound
        chunks: the table's poll stops before anything is read or saved."""
        if snapshot_due or state.snapshot is not None or state.snapshot_requested is not None:
            self.reader.chunk_column(spec)

    def _store(self, spec: TableSpec, state: SourceState) -> None:
        """Save ``state``; the values of a masked key or chunk column stay in this process
        (see ``_withheld``)."""
        progress = state.snapshot
        if progress is None:
            masked = False
        elif progress.chunk_column is None:
            masked = any(c.mask for c in spec.key_columns)
        else:
            masked = any(c.mask for c in spec.columns if c.name == progress.chunk_column)
        if progress is not None and masked:
            self._withheld[spec.name] = (progress.id, progress.upper, progress.after)
            kept = replace(progress, upper=None, after=None, keys_withheld=True)
            state = state.with_progress(kept)
        self._save(spec.name, state)

    async def _progress(self, spec: TableSpec) -> SnapshotProgress | None:
        """The snapshot under way, its cursor values restored from this process; a
        snapshot whose masked values did not survive a move, or whose chunk column
        changed (``source.chunk_columns``), starts its chunks over."""
        progress = self._state(spec.name).snapshot
        if progress is None:
            return progress
        column = self.reader.chunk_column(spec)
        name = None if column is None else column.name
        if name != progress.chunk_column and not progress.read:
            why = f"its chunks are now ranges of {'the key' if name is None else repr(name)}"
        elif not progress.keys_withheld:
            return progress
        elif (held := self._withheld.get(spec.name)) is not None and held[0] == progress.id:
            return replace(progress, upper=held[1], after=held[2], keys_withheld=False)
        else:
            why = "masked values are not saved, so its progress did not survive the move"
        upper, _ = await self.reader.snapshot_bound(spec)
        log.info(
            "table %s: snapshot %s reads again from its first chunk: %s",
            spec.name,
            progress.id,
            why,
            extra={"ctstream": {"table": spec.name}},
        )
        # The rows read before are counted again as they come: the completion check
        # counts distinct rows, and those read twice are one.
        return replace(
            progress,
            upper=upper,
            after=None,
            chunks=0,
            rows=0,
            read=False,
            keys_withheld=False,
            chunk_column=name,
        )

    async def start(
        self, spec: TableSpec, reason: str, request_id: str | None, *, reset_version: bool
    ) -> SourceState:
        """Begin a snapshot of ``spec``: fix its upper key and start version, save them.

        Polls go on from the saved version, or from the start version when there is none
        or ``reset_version`` (the saved one is too old): every change after it comes by
        Change Tracking, every row before it by the chunks.
        """
        name = spec.name
        column = self.reader.chunk_column(spec)  # raises before anything is saved
        upper, start_version = await self.reader.snapshot_bound(spec)
        try:
            estimate = await self.reader.row_estimate(spec)
        except CtstreamError as exc:  # only the progress display needs it
            log.info("table %s: no row estimate for the snapshot: %s", name, exc)
            estimate = None
        now = time.time()
        snapshot_id = request_id or f"v{start_version}.{round(now * 1000)}"
        progress = SnapshotProgress(
            snapshot_id,
            reason,
            start_version,
            upper,
            now,
            estimate=estimate,
            chunk_column=None if column is None else column.name,
        )
        state = self._state(name)
        version = state.version
        if version is None or reset_version:
            version = start_version
        state = state.snapshot_started(progress, version)
        self._store(spec, state)
        refusal = self.reader.chunk_refusal(spec)
        if refusal is not None:
            log.warning("table %s: %s", name, refusal, extra={"ctstream": {"table": name}})
        elif column is not None:
            log.info(
                "table %s: snapshot chunks are ranges of column %r (source.chunk_columns)",
                name,
                column.name,
                extra={"ctstream": {"table": name}},
            )
        log.info(
            "table %s: snapshot %s starting at version %d (%s)",
            name,
            snapshot_id,
            start_version,
            reason,
            extra={"ctstream": {"table": name}},
        )
        self._show(name, progress)
        return state

    def control(self, name: str, action: SnapshotControl) -> None:
        """Pause, resume or cancel the snapshot of ``name`` (a pending request too)."""
        state = self._state(name)
        progress = state.snapshot
        if action == "cancel":
            if progress is None and state.snapshot_requested is None:
                log.info("table %s: no snapshot to cancel", name)
                return
            self._save(name, state.with_progress(None).requesting(None))
            self.stats.snapshotting.pop(name, None)
            self.stats.snapshot_progress.pop(name, None)
            log.warning(
                "table %s: snapshot cancelled; rows it wrote stay, nothing is hidden by it",
                name,
            )
            return
        if progress is None:
            log.info("table %s: no snapshot under way to %s", name, action)
            return
        paused = action == "pause"
        if progress.paused != paused:
            progress = replace(progress, paused=paused)
            self._save(name, state.with_progress(progress))
            log.info("table %s: snapshot %s %sd", name, progress.id, action)
        self._show(name, progress)

    async def advance(self, spec: TableSpec, send: Send) -> None:
        """Read chunks for at most half a poll interval (one at least), then, once all
        are sent, record the snapshot when BigQuery holds its rows. Raises like a poll:
        what was saved stays, the next tick goes on from there."""
        name = spec.name
        progress = await self._progress(spec)
        if progress is None:
            return
        if progress.paused:
            self._show(name, progress)
            return
        budget = time.monotonic() + self.settings.source.poll_interval / 2
        limit = self.settings.source.snapshot_chunk_rows
        refusal = self.reader.chunk_refusal(spec)
        while not progress.read:
            if refusal is not None:
                whole = await snapshot_table(self.reader, spec, send, progress.id)
                progress = progress.chunk_sent(None, whole.events, done=True)
            else:
                chunk = await snapshot_chunk(self.reader, spec, progress, limit, send)
                progress = progress.chunk_sent(chunk.last_key, chunk.rows, done=chunk.done)
            self.crash.reach("snapshot.chunk_acked")
            self._store(spec, self._state(name).with_progress(progress))
            self._show(name, progress)
            if time.monotonic() > budget or self._should_stop():
                break
        if progress.read:
            await self._complete(spec, progress)

    async def _complete(self, spec: TableSpec, progress: SnapshotProgress) -> None:
        name = spec.name
        now = time.monotonic()
        if now - self._verified_at.get(name, -VERIFY_INTERVAL) < VERIFY_INTERVAL:
            return
        self._verified_at[name] = now
        landed = await snapshot_rows_landed(self.writer, spec, progress.id)
        self._show(name, progress, landed)
        if landed < progress.rows:
            return  # still on its way through dedup and the sink
        self.crash.reach("snapshot.acked")
        sink = self.settings.sink
        await retry_forever(
            lambda: record_snapshot(
                self.writer,
                spec,
                progress.start_version,
                progress.rows,
                progress.reason,
                iso_utc(time.time()),
            ),
            f"recording the snapshot of {name}",
            sink.retry_initial,
            sink.retry_max,
            should_abort=self._should_stop,
            log_fields={"table": name},
        )
        self._save(name, self._state(name).snapshot_done(progress.start_version, progress.id))
        self._withheld.pop(name, None)
        seconds = time.time() - progress.started_at
        self.stats.snapshotting.pop(name, None)
        self.stats.snapshot_progress.pop(name, None)
        self._verified_at.pop(name, None)
        self.stats.snapshots[name] = {
            "version": progress.start_version,
            "rows": progress.rows,
            "chunks": progress.chunks,
            "seconds": round(seconds, 3),
            "reason": progress.reason,
            "completed_at": time.time(),
        }
        log.info(
            "table %s: snapshot %s done: %d rows in %d chunks from version %d in %.1fs",
            name,
            progress.id,
            progress.rows,
            progress.chunks,
            progress.start_version,
            seconds,
            extra={"ctstream": {"table": name}},
        )

    def _show(self, name: str, progress: SnapshotProgress, landed: int | None = None) -> None:
        """The snapshot's progress for status, the dashboard and /metrics."""
        rate = progress.rows_per_second(time.time())
        left = None if progress.estimate is None else max(0, progress.estimate - progress.rows)
        shown: dict[str, Any] = {
            "id": progress.id,
            "phase": progress.phase,
            "reason": progress.reason,
            "start_version": progress.start_version,
            "chunks": progress.chunks,
            "rows": progress.rows,
            "rows_estimate": progress.estimate,
            "rows_left_estimate": left,
            "rows_per_s": round(rate, 1),
            "eta_s": None if left is None or rate <= 0 else round(left / rate, 1),
            "rows_in_bigquery": landed,
            "started_at": progress.started_at,
        }
        self.stats.snapshotting[name] = progress.reason
        self.stats.snapshot_progress[name] = shown
