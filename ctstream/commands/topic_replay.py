"""Reading one topic back into BigQuery: the engine of ``ctstream replay``.

A plain consumer (no group, no commits) reads every partition of the topic from a time
or an offset up to the end offsets as of the start, keeping messages with a timestamp in
[since, until). Events are deduplicated by unique id in memory, validated and written as
the sink does (insertId = unique id); bad rows go to ``_error_records`` and the error
topic with a reason starting "replay: ". A BigQuery write that keeps failing for
:data:`GIVE_UP_AFTER` seconds stops the replay with :class:`SinkUnavailable`; a topic
that sends nothing for :data:`IDLE_LIMIT` seconds before its end, with
:class:`KafkaUnavailable`.

``offsets_for_times`` is only a hint: the local broker (Tansu) answers it from its own
append times per record batch (and with offset 0 when no batch is new enough), not from
the records' timestamps. An answer is used when the record found there carries the
answered timestamp, as Kafka's does; otherwise that partition is read from its beginning.
Either way every message is filtered on its own timestamp.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeAlias

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from google.cloud import bigquery

from ctstream.bigquery.client import classify, make_client
from ctstream.bigquery.error_sink import ErrorRecord
from ctstream.bigquery.layout import latest_view_sql, time_travel_function_sql
from ctstream.bigquery.schema import (
    ERROR_RECORDS_TABLE,
    SNAPSHOTS_TABLE,
    RowValidator,
    change_row,
)
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.commands.bigquery_tables import existing_table
from ctstream.commands.replay_result import PartitionSpan, ReplayResult
from ctstream.errors import (
    BadEvent,
    ConfigError,
    KafkaUnavailable,
    RetryAborted,
    SinkError,
    SinkUnavailable,
)
from ctstream.models import ChangeEvent, TableSpec
from ctstream.models.values import iso_utc
from ctstream.retry import retry_forever
from ctstream.settings import Settings
from ctstream.source.reader import SourceReader
from ctstream.streams.offsets import true_end_offsets
from ctstream.streams.security import client_options, unreachable_message
from ctstream.streams.topics import TopicNames

log = logging.getLogger("ctstream.commands.replay")

GIVE_UP_AFTER = 300.0  # seconds one BigQuery write may keep failing before replay stops
IDLE_LIMIT = 60.0  # seconds without a message while offsets before the end remain
Record: TypeAlias = "ConsumerRecord[Any, Any]"


class TopicReplay:
    """One replay of ``result.topic`` into ``result.target_table``, counted in ``result``.

    Call :meth:`prepare`, then :meth:`read`, and :meth:`close` in any case. Messages are
    kept when their timestamp (ms) is in [``since_ms``, ``until_ms``); ``skip_dedup`` keeps
    repeated unique ids.
    """

    def __init__(
        self,
        settings: Settings,
        result: ReplayResult,
        *,
        skip_dedup: bool = False,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> None:
        self.settings, self.result, self.dry_run = settings, result, result.dry_run
        self.spec = TableSpec(result.table, None, result.table, ())
        self.errors_topic = TopicNames(settings.kafka.topic_prefix).errors
        self.skip_dedup = skip_dedup
        self.since_ms = since_ms
        self.until_ms = until_ms
        self.bootstrap = settings.kafka.bootstrap_servers
        self.kafka_options = client_options(settings.kafka)
        sink = settings.sink
        self.writer = BigQueryWriter(
            settings.bigquery, sink.request_timeout, max_request_bytes=sink.max_request_bytes
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.kafka_options,
        )
        self.producer: AIOKafkaProducer | None = None
        self.validator: RowValidator | None = None
        self.seen: set[str] = set()
        self.pending: list[tuple[ChangeEvent, Record]] = []
        self.bad: list[ErrorRecord] = []

    async def prepare(self) -> None:
        """The target table (created for --to-table) and its validator; Kafka."""
        source, target = self.spec.bq_table, self.result.target_table
        src = await existing_table(self.writer, source)
        if target != source and self.dry_run:  # validate against the schema it would get
            self.validator = RowValidator(list(src.schema))
        else:
            if target != source:
                await self._create_target(src, target)
            self.validator = await self.writer.refresh_validator(target)
        try:
            await asyncio.wait_for(self.consumer.start(), 30)
            await self.consumer.topics()
        except (TimeoutError, KafkaError, OSError) as exc:
            raise KafkaUnavailable(
                await unreachable_message(self.bootstrap, self.kafka_options, exc)
            ) from None

    async def _create_target(self, src: bigquery.Table, target: str) -> None:
        """``target`` with the schema and layout of ``src``, its latest-state view and
        time-travel function (the key columns come from the source catalog)."""
        writer, reader = self.writer, SourceReader(self.settings.source)
        try:
            columns = (await reader.describe(self.spec.name)).columns
        finally:
            await reader.close()
        spec = TableSpec(target, None, target, columns)
        table = bigquery.Table(writer.ref(target), schema=list(src.schema))
        table.clustering_fields = src.clustering_fields
        table.time_partitioning = src.time_partitioning
        view = bigquery.Table(writer.ref(f"{target}_latest"))
        snapshots = writer.ref(SNAPSHOTS_TABLE)
        view.view_query = latest_view_sql(writer.ref(target), spec, snapshots)
        client = make_client(self.settings.bigquery)
        try:
            for item in (table, view):
                timeout = self.settings.sink.request_timeout
                await asyncio.to_thread(client.create_table, item, exists_ok=True, timeout=timeout)
        except Exception as exc:
            raise classify(exc, f"creating {target}") from exc
        finally:
            client.close()  # type: ignore[no-untyped-call]
        function = writer.ref(f"{target}_at")
        await writer.query(time_travel_function_sql(function, writer.ref(target), spec, snapshots))

    async def read(
        self, from_offset: int | None, progress: Callable[[int, int], None] | None
    ) -> None:
        """Read every partition from ``from_offset`` (or from ``since_ms``) up to its end
        offset as of now, writing in batches of ``sink.batch_rows``; ``progress(done,
        total)`` is called every 1,000 messages and at the end."""
        topic, consumer, result = self.result.topic, self.consumer, self.result
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            raise ConfigError(f"topic {topic!r} does not exist; check kafka.topic_prefix")
        parts = [TopicPartition(topic, p) for p in sorted(numbers)]
        ends = await true_end_offsets(self.bootstrap, parts, client_options=self.kafka_options)
        begins = await consumer.beginning_offsets(parts)
        starts = {tp: min(max(from_offset or 0, begins[tp]), ends[tp]) for tp in parts}
        checks: dict[TopicPartition, tuple[int, int]] = {}  # expected (offset, timestamp)
        if self.since_ms is not None and from_offset is None:
            found = await consumer.offsets_for_times({tp: self.since_ms for tp in parts})
            for tp in parts:
                hit = found.get(tp)
                if hit is None or (hit.offset >= ends[tp] and hit.timestamp >= self.since_ms):
                    starts[tp] = ends[tp]  # no message at or after since before the end
                elif begins[tp] < hit.offset < ends[tp] and hit.timestamp >= self.since_ms:
                    starts[tp] = hit.offset  # checked against the first record read
                    checks[tp] = (hit.offset, hit.timestamp)
        spans = {tp: PartitionSpan(starts[tp], ends[tp]) for tp in parts}
        result.partitions = {tp.partition: spans[tp] for tp in parts}
        total, done = sum(ends[tp] - starts[tp] for tp in parts), 0
        remaining = {tp for tp in parts if starts[tp] < ends[tp]}
        consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, starts[tp])
        idle_since = time.monotonic()
        while remaining:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if any(batch.values()):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_LIMIT:
                at = {tp.partition: await consumer.position(tp) for tp in remaining}
                raise KafkaUnavailable(f"no messages from {topic} for {IDLE_LIMIT:.0f} s at {at}")
            for tp, records in batch.items():
                expected = checks.pop(tp, None) if records else None
                if expected and (records[0].offset, records[0].timestamp) != expected:
                    # The broker's time index does not match the records: scan instead.
                    log.info("%s: time index unusable, scanning from %d", tp, begins[tp])
                    total += starts[tp] - begins[tp]
                    starts[tp] = spans[tp].start = begins[tp]
                    consumer.seek(tp, begins[tp])
                    continue
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    done += 1
                    if progress is not None and done % 1000 == 0:
                        progress(done, total)
                    self._take(record, spans[tp])
                if len(self.pending) + len(self.bad) >= self.settings.sink.batch_rows:
                    await self._flush()
            for tp in list(remaining):
                if tp not in checks and await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
        await self._flush()
        if progress is not None:
            progress(done, total)

    def _take(self, record: Record, span: PartitionSpan) -> None:
        stamp, result = record.timestamp, self.result
        if (self.since_ms is not None and stamp < self.since_ms) or (
            self.until_ms is not None and stamp >= self.until_ms
        ):
            result.outside_time_range += 1
            return
        result.messages_read += 1
        span.first = record.offset if span.first is None else span.first
        span.last, span.messages = record.offset, span.messages + 1
        try:
            change = ChangeEvent.from_bytes(record.value)
            if change.table_name != self.spec.name:
                raise BadEvent(f"an event of table {change.table_name!r} in this topic")
        except BadEvent as exc:
            self.bad.append(_record(f"replay: {exc}", record, None, self.spec.name))
            return
        if not self.skip_dedup:
            if change.message_unique_id in self.seen:
                result.duplicates_skipped += 1
                return
            self.seen.add(change.message_unique_id)
        self.pending.append((change, record))

    async def _flush(self) -> None:
        """Validate and write the pending events; park the bad ones."""
        now, result, target = time.time(), self.result, self.result.target_table
        assert self.validator is not None  # set by prepare()
        rows, ids, sources = [], [], []
        for change, record in self.pending:
            row = change_row(change, iso_utc(now))
            problems = self.validator.problems(row)
            if problems:
                why = "; ".join(str(p) for p in problems)
                self.bad.append(_record(f"replay: invalid row: {why}", record, change))
            else:
                rows.append(row)
                ids.append(change.message_unique_id)
                sources.append((change, record))
        self.pending.clear()
        result.would_write += len(rows)
        if rows and not self.dry_run:
            try:
                rejected = await self._retried(
                    f"writing {len(rows)} rows to {target}",
                    lambda: self.writer.insert(target, rows, ids),
                )
            except SinkUnavailable:
                raise
            except SinkError as exc:  # retrying cannot help: park every row of the request
                rejected = [(i, str(exc)) for i in range(len(rows))]
            result.rows_written += len(rows) - len(rejected)
            for index, why in rejected:
                change, record = sources[index]
                self.bad.append(_record(f"replay: rejected by BigQuery: {why}", record, change))
        result.error_rows += len(self.bad)
        samples = [f"{r.partition}/{r.offset}: {r.reason[:300]}" for r in self.bad]
        result.error_samples += samples[: max(0, 20 - len(result.error_samples))]
        if self.bad and not self.dry_run:
            await self._park(self.bad, now)
        self.bad = []

    async def _park(self, records: list[ErrorRecord], now: float) -> None:
        if self.producer is None:
            self.producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", **self.kafka_options
            )
            try:
                await asyncio.wait_for(self.producer.start(), 30)
            except (TimeoutError, KafkaError, OSError) as exc:
                producer, self.producer = self.producer, None
                await producer.stop()  # a producer whose start failed holds a client too
                raise KafkaUnavailable(
                    await unreachable_message(self.bootstrap, self.kafka_options, exc)
                ) from None
        rows = [r.as_row(now) for r in records]
        sent = [
            await self.producer.send(
                self.errors_topic, orjson.dumps(row), key=(r.source_table or "").encode()
            )
            for r, row in zip(records, rows, strict=True)
        ]
        await asyncio.gather(*sent)  # acknowledged by Kafka
        ids = [f"replay:{r.topic}:{r.partition}:{r.offset}" for r in records]
        rejected = await self._retried(
            f"writing {len(rows)} error records",
            lambda: self.writer.insert(ERROR_RECORDS_TABLE, rows, ids),
        )
        if rejected:
            log.error("BigQuery refused %d error records: %s", len(rejected), rejected[:3])

    async def _retried(self, what: str, fn: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + GIVE_UP_AFTER
        sink = self.settings.sink
        try:
            return await retry_forever(
                fn,
                what,
                sink.retry_initial,
                sink.retry_max,
                should_abort=lambda: time.monotonic() > deadline,
            )
        except RetryAborted as exc:
            raise SinkUnavailable(
                f"{what}: BigQuery kept failing for {GIVE_UP_AFTER:.0f} s ({exc.__cause__}); "
                "nothing after this batch was written: run the replay again later"
            ) from None

    async def close(self) -> None:
        """Stop the consumer, the producer (if one was started) and the BigQuery client."""
        await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        self.writer.close()


def _record(
    reason: str, record: Record, change: ChangeEvent | None, table: str | None = None
) -> ErrorRecord:
    return ErrorRecord(
        reason=reason,
        payload=record.value,
        source_table=change.table_name if change else table,
        message_unique_id=change.message_unique_id if change else None,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
