"""``ctstream replay``: re-send a table's topic from a time or an offset to BigQuery.

A plain consumer (no group, no commits) reads every partition of the table's raw or
deduped topic from ``since`` (or offset ``from_offset``) up to the end offsets as of the
start, keeping messages with a timestamp in [since, until). Events are deduplicated by
unique id in memory, validated and written as the sink does (insertId = unique id); bad
rows go to ``_error_records`` and the error topic with a reason starting "replay: ".

``offsets_for_times`` is only a hint: the local broker (Tansu) answers it from its own
append times per record batch (and with offset 0 when no batch is new enough), not from
the records' timestamps. An answer is used when the record found there carries the
answered timestamp, as Kafka's does; otherwise that partition is read from its beginning.
Either way every message is filtered on its own timestamp.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeAlias

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from google.api_core.exceptions import NotFound
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
from ctstream.errors import ConfigError, SinkError, SinkUnavailable
from ctstream.models import BadEvent, ChangeEvent, TableSpec
from ctstream.retry import RetryAborted, retry_forever
from ctstream.settings import Settings
from ctstream.source.change_capture import iso_utc
from ctstream.source.reader import SourceReader
from ctstream.streams.offsets import true_end_offsets
from ctstream.streams.security import client_options, unreachable_message
from ctstream.streams.topics import KafkaUnavailable, TopicNames

log = logging.getLogger("ctstream.commands.replay")

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
GIVE_UP_AFTER = 300.0  # seconds one BigQuery write may keep failing before replay stops
IDLE_LIMIT = 60.0  # seconds without a message while offsets before the end remain
Record: TypeAlias = "ConsumerRecord[Any, Any]"


@dataclass
class PartitionSpan:
    start: int  # offsets read: [start, end)
    end: int
    first: int | None = None  # first and last offset inside the time range
    last: int | None = None
    messages: int = 0


@dataclass
class ReplayResult:
    table: str
    topic: str
    target_table: str
    dry_run: bool
    messages_read: int = 0  # in the offset range and the time range
    outside_time_range: int = 0
    duplicates_skipped: int = 0
    would_write: int = 0  # rows that passed validation
    rows_written: int = 0  # rows BigQuery accepted (0 on a dry run)
    error_rows: int = 0
    partitions: dict[int, PartitionSpan] = field(default_factory=dict)
    seconds: float = 0.0
    error_samples: list[str] = field(default_factory=list)  # the first 20

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["partitions"] = {str(p): asdict(s) for p, s in sorted(self.partitions.items())}
        return data


async def replay(
    settings: Settings,
    table: str,
    *,
    since: dt.datetime | None = None,
    from_offset: int | None = None,
    until: dt.datetime | None = None,
    topic: Literal["raw", "deduped"] = "deduped",
    to_table: str | None = None,
    skip_dedup: bool = False,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay ``table``'s topic into BigQuery (naive datetimes are local time)."""
    selection = settings.source.selection
    if not selection.selects(table):
        raise ConfigError(f"--table {table!r} is not selected by source.tables")
    if (since is None) == (from_offset is None):
        raise ConfigError("give exactly one of --since and --from-offset")
    if from_offset is not None and from_offset < 0:
        raise ConfigError("--from-offset must be 0 or more")
    if topic not in ("raw", "deduped"):
        raise ConfigError(f"--topic must be raw or deduped, not {topic!r}")
    if since is not None and until is not None and until <= since:
        raise ConfigError("--until must be later than --since")
    spec = TableSpec(table, None, table, ())
    if to_table is not None and (
        not _SAFE_NAME.match(to_table) or len(to_table) > 1024 - len("_latest")
    ):
        raise ConfigError(
            "--to-table: expected a BigQuery table name of at most 1017 letters, digits and "
            "underscores, not starting with a digit"
        )
    own = {TableSpec(t, None, t, ()).bq_table for t in selection.names}
    if to_table in (own - {spec.bq_table}) | {ERROR_RECORDS_TABLE, SNAPSHOTS_TABLE} or (
        to_table is not None and to_table != spec.bq_table and selection.selects(to_table)
    ):
        raise ConfigError(f"--to-table {to_table!r} is another of ctstream's tables")
    names = TopicNames(settings.kafka.topic_prefix)
    topic_name = names.raw(spec) if topic == "raw" else names.deduped(spec)
    run = _Replay(settings, ReplayResult(table, topic_name, to_table or spec.bq_table, dry_run))
    run.skip_dedup = skip_dedup
    run.since_ms = None if since is None else int(since.timestamp() * 1000)
    run.until_ms = None if until is None else int(until.timestamp() * 1000)
    started = time.monotonic()
    try:
        await run.prepare()
        await run.read(from_offset, progress)
    finally:
        await run.close()
    run.result.seconds = round(time.monotonic() - started, 3)
    return run.result


class _Replay:
    def __init__(self, settings: Settings, result: ReplayResult) -> None:
        self.settings, self.result, self.dry_run = settings, result, result.dry_run
        self.spec = TableSpec(result.table, None, result.table, ())
        self.errors_topic = TopicNames(settings.kafka.topic_prefix).errors
        self.skip_dedup = False
        self.since_ms: int | None = None
        self.until_ms: int | None = None
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
        try:
            src = await self.writer.table(source)
        except SinkError as exc:
            if isinstance(exc.__cause__, NotFound):
                raise SinkError(
                    f"BigQuery table {self.writer.ref(source)} does not exist; "
                    "`ctstream worker` creates it at start"
                ) from None
            raise
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


def render(result: ReplayResult) -> str:
    """The text summary: counts, then the offsets read per partition, then error samples."""
    written = result.would_write if result.dry_run else result.rows_written
    lines = [
        f"replay of {result.table} from {result.topic} into {result.target_table}"
        f"{' (dry run)' if result.dry_run else ''}: {result.messages_read} messages read "
        f"({result.outside_time_range} more outside the time range), "
        f"{result.duplicates_skipped} duplicates skipped, "
        f"{'would write' if result.dry_run else 'wrote'} {written} rows, "
        f"{result.error_rows} error rows, {result.seconds:.1f} s"
    ]
    for number, span in sorted(result.partitions.items()):
        lines.append(
            f"  partition {number}: offsets {span.start}..{span.end} read, {span.messages} "
            f"in the time range (first {span.first}, last {span.last})"
        )
    lines += [f"  error at {sample}" for sample in result.error_samples]
    return "\n".join(lines)
