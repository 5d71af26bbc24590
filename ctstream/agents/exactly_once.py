"""The sink's exactly-once write path (``bigquery.write_api = "storage_write_committed"``).

Each deduped topic-partition a worker owns writes to a committed-type stream of its own,
opened on the partition's first batch after the worker got it (faust's table recovery)
and appended to with offsets (bigquery/committed_streams.py): a request tried again lands
once. Three things keep a change from being written twice across batches and workers:

1. **Ids written are refused.** A row whose id this partition wrote before, within the
   dedup window of the event's timestamp, is left out (``streams/written_ids.py``). That
   catches the copies the dedup stage forwards again after a crash, and the sink's own
   re-reads of batches written but not committed.
2. **The stream is fenced on take-over.** A worker taking a partition finalizes every
   stream recorded for it: nothing more lands there, and BigQuery answers the rows each
   holds. The table records how many rows were appended *and remembered*; more rows in
   the stream mean a crash between appending and remembering.
3. **The unremembered rows are looked up.** Until that many rows are found, the
   partition's rows are first looked up by id in the BigQuery table (a query over the
   rows inserted since the stream was opened), and those found are remembered, not
   written again. The finalized streams' records stay, counting the rows found, until
   all are found: a crash meanwhile leaves the next owner the rest to look up.

All of it runs under one lock per topic-partition, so appends, lookups and the record of
what was written follow one another. A worker that finds its stream fenced while it no
longer owns the partition leaves the batch to the new owner (RetryAborted: withheld).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.cloud import bigquery

from ctstream.agents.stats import SinkStats
from ctstream.bigquery.committed_streams import CommittedStreams, WriteStream
from ctstream.bigquery.layout import quote_bq
from ctstream.bigquery.storage_write import table_path
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack.crash_points import CrashPoints
from ctstream.errors import RetryAborted, StreamFenced
from ctstream.settings import SinkSettings
from ctstream.streams.faust_compat.internals import set_current_event
from ctstream.streams.written_ids import StreamRecord, WrittenIds

log = logging.getLogger("ctstream.sink")

# Rows are stamped when sent; a stream's rows are no older than the stream, by the
# clock of the worker that opened it. The margin covers a clock step.
LOOKUP_MARGIN_S = 300.0


@dataclass
class _Partition:
    """A topic-partition's stream and what is still to be looked up before writing."""

    record: StreamRecord
    stream: WriteStream
    unknown: int = 0  # rows appended by an earlier stream and not remembered
    since: float = 0.0  # look rows up from this bigquery_insert_time on
    looked_at: int = 0  # rows looked up so far
    # The earlier streams holding those rows, each with the rows BigQuery said it holds
    # (None: gone). Their records stay until the rows are found, counted as found, so a
    # crash meanwhile leaves the next owner the rest to look up.
    finalized: list[tuple[StreamRecord, int | None]] = field(default_factory=list)


@dataclass
class Outcome:
    """One partition's rows of one table, written."""

    refused: list[tuple[int, str]]  # (row index, reason): to be parked
    written_before: list[int]  # row indexes left out: written already


class ExactlyOnceWrites:
    """Writes each table's rows of one deduped topic-partition exactly once (module doc)."""

    def __init__(
        self,
        app: Any,
        writer: BigQueryWriter,
        written: WrittenIds,
        settings: SinkSettings,
        stats: SinkStats,
        crash: CrashPoints,
    ) -> None:
        self.app = app
        self.crash = crash
        self.writer = writer
        self.written = written
        self.settings = settings
        self.stats = stats
        self.streams = CommittedStreams(
            writer.run,
            writer.write_client,
            settings.retry_initial,
            settings.retry_max,
            should_abort=lambda: bool(app.should_stop),
            timeout=settings.request_timeout,
            on_retry=self._count_retry,
        )
        # The most rows looked up after a take-over before giving up on finding the rest.
        self.lookup_limit = 4 * settings.max_in_flight * settings.batch_rows
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        written.table.on_recover(self._on_recover)

    def _count_retry(self) -> None:
        self.stats.retries += 1

    async def _on_recover(self) -> None:
        self._partitions.clear()  # every partition is taken over again on its next batch

    async def write(
        self,
        topic: str,
        partition: int,
        bq_table: str,
        rows: Sequence[dict[str, Any]],
        events: Sequence[Any],
        ids: Sequence[str],
    ) -> Outcome:
        """Write ``rows`` (of ``events``, with ``ids``) of one table and topic-partition."""
        if not rows:
            return Outcome([], [])
        tp = (topic, partition)
        async with self._locks.setdefault(tp, asyncio.Lock()):
            while True:
                state = self._partitions.get(tp)
                if state is None:
                    state = self._partitions[tp] = await self._take_over(
                        topic, partition, bq_table, events[0]
                    )
                try:
                    return await self._write(state, bq_table, rows, events, ids)
                except StreamFenced as exc:
                    self._partitions.pop(tp, None)
                    if not self._owns(topic, partition):
                        raise RetryAborted(f"{topic}/{partition} moved to another worker") from exc
                    log.warning("%s; taking %s/%d over again", exc, topic, partition)

    async def _write(
        self,
        state: _Partition,
        bq_table: str,
        rows: Sequence[dict[str, Any]],
        events: Sequence[Any],
        ids: Sequence[str],
    ) -> Outcome:
        topic, partition = state.record.topic, state.record.partition
        digests = [self.written.digest(topic, i) for i in ids]
        stamps = [float(e.message.timestamp) for e in events]
        before: list[int] = []
        todo: list[int] = []
        in_group: set[bytes] = set()
        for index, d in enumerate(digests):
            if d in in_group or self.written.written(partition, stamps[index], d):
                before.append(index)
            else:
                in_group.add(d)
                todo.append(index)
        if state.unknown > 0 and todo:
            found = await self._look_up(state, bq_table, [ids[i] for i in todo])
            save, drop = self._count_found(state, len(found))
            self._remember(
                events[0],
                partition,
                [(stamps[i], digests[i]) for i in todo if ids[i] in found],
                save,
                drop,
            )
            before += [i for i in todo if ids[i] in found]
            todo = [i for i in todo if ids[i] not in found]
        refused: list[tuple[int, str]] = []
        if todo:
            encoder = await self.writer.encoder(bq_table)
            answer = await self.streams.append(state.stream, encoder, [rows[i] for i in todo])
            self.writer.requests["storage_write_committed"] = self.streams.appends
            refused = [(todo[position], reason) for position, reason in answer]
            self.crash.reach("sink.appended")
            refused_at = {index for index, _ in refused}
            appended = [(stamps[i], digests[i]) for i in todo if i not in refused_at]
            state.record.rows = state.stream.rows
            self._remember(events[0], partition, appended, [state.record])
        self.stats.copies_refused += len(before)
        return Outcome(sorted(refused), sorted(before))

    def _remember(
        self,
        event: Any,
        partition: int,
        written: list[tuple[float, bytes]],
        save: Sequence[StreamRecord] = (),
        drop: Sequence[StreamRecord] = (),
    ) -> None:
        """Record ids written, then stream records (in this order on the changelog)."""
        set_current_event(event)  # the changelog messages go to this partition
        try:
            if written:
                self.written.remember(partition, written)
            for record in save:
                self.written.save(record)
            for record in drop:
                self.written.drop(record)
        finally:
            set_current_event(None)

    @staticmethod
    def _count_found(
        state: _Partition, found: int
    ) -> tuple[list[StreamRecord], list[StreamRecord]]:
        """Count rows found against the earlier streams, oldest first: the records to save
        (more of their rows now recorded) and to drop (all found, or the look-up ended)."""
        save: list[StreamRecord] = []
        for record, holds in state.finalized:
            room = found if holds is None else min(found, holds - record.rows)
            if room > 0:
                record.rows += room
                found -= room
                save.append(record)
        if state.unknown > 0:
            done = [r for r, holds in state.finalized if holds is not None and r.rows >= holds]
        else:
            done = [r for r, _ in state.finalized]
        state.finalized = [(r, h) for r, h in state.finalized if r not in done]
        return [r for r in save if r not in done], done

    async def _take_over(self, topic: str, partition: int, bq_table: str, event: Any) -> _Partition:
        """Finalize the partition's earlier streams, then open one (saved before use).

        Only the partition's owner takes it over: a worker that lost it (its batch still
        running) would otherwise open a stream the new owner never hears of, and write
        there what the new owner writes again. Its batch is left to the new owner.
        """
        if not self._owns(topic, partition):
            raise RetryAborted(f"{topic}/{partition} is not this worker's (now)")
        unknown, since = 0, time.time()
        finalized: list[tuple[StreamRecord, int | None]] = []
        set_current_event(event)
        try:
            for old in self.written.streams(topic, partition):
                rows = await self.streams.finalize(old.name)
                if rows is None:
                    log.warning(
                        "write stream %s of %s/%d is gone; its rows are looked up",
                        old.name,
                        topic,
                        partition,
                    )
                    unknown = self.lookup_limit  # how many is not known: look up to the limit
                elif rows > old.rows:
                    unknown += rows - old.rows
                if rows is None or rows > old.rows:
                    finalized.append((old, rows))
                    since = min(since, old.opened)
                    continue  # its record stays until its rows are found
                if rows < old.rows:  # never on BigQuery as documented: say so loudly
                    log.error(
                        "write stream %s of %s/%d holds %d rows, %d were counted appended",
                        old.name,
                        topic,
                        partition,
                        rows,
                        old.rows,
                    )
                self.written.drop(old)
            stream = await self.streams.create(table_path(self.writer.settings, bq_table))
            record = StreamRecord(topic, partition, stream.name, 0, time.time())
            self.written.save(record)
        finally:
            set_current_event(None)
        # The record must be in Kafka before the stream takes a row: a worker that dies
        # after appending would otherwise leave rows no take-over knows of.
        await self.app.producer.flush()
        self.stats.streams_opened += 1
        log.info("%s/%d: writing to stream %s", topic, partition, stream.name.rsplit("/", 1)[-1])
        if unknown:
            log.warning(
                "%s/%d: %d rows were written but not recorded before a crash; looking "
                "the next rows up before writing them",
                topic,
                partition,
                unknown,
            )
        return _Partition(record, stream, unknown, since - LOOKUP_MARGIN_S, 0, finalized)

    async def _look_up(self, state: _Partition, bq_table: str, ids: list[str]) -> set[str]:
        sql = (
            f"SELECT DISTINCT message_unique_id FROM {quote_bq(self.writer.ref(bq_table))} "
            "WHERE bigquery_insert_time >= TIMESTAMP_SECONDS(@since) "
            "AND message_unique_id IN UNNEST(@ids)"
        )
        params: list[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter] = [
            bigquery.ScalarQueryParameter("since", "INT64", int(state.since)),
            bigquery.ArrayQueryParameter("ids", "STRING", ids),
        ]
        rows = await self.writer.query(sql, params)
        found = {str(r["message_unique_id"]) for r in rows}
        state.unknown -= len(found)
        state.looked_at += len(ids)
        self.stats.rows_looked_up += len(ids)
        if state.unknown > 0 and state.looked_at >= self.lookup_limit:
            log.warning(
                "%s/%d: %d rows written before a crash were not found among the next %d; "
                "writing on without looking up",
                state.record.topic,
                state.record.partition,
                state.unknown,
                state.looked_at,
            )
            state.unknown = 0
        return found

    def _owns(self, topic: str, partition: int) -> bool:
        """Whether this worker owns the partition now. During a rebalance it may be another
        worker's already while the assignment still says otherwise: no."""
        if self.app.rebalancing:
            return False
        return any(
            tp.topic == topic and tp.partition == partition
            for tp in self.app.assignor.assigned_actives()
        )
