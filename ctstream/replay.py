"""``ctstream replay``: re-send a table's topic from a time or an offset to BigQuery.

A plain consumer (no group, no commits) reads every partition of the table's raw or
deduped topic from ``since`` (or offset ``from_offset``) up to the end offsets as of the
start, keeping messages with timestamp in [since, until). Events are deduplicated by
unique id in memory, validated and written like the sink does (insertId = unique id);
bad rows go to ``_error_records`` and the error topic with a reason starting "replay: ".

``offsets_for_times`` is only a hint: the local broker (Tansu) answers it from its own
append times per record batch, and with offset 0 when no batch is new enough, instead of
from the records' timestamps. An answer is used when the record found there carries the
answered timestamp (as Kafka's does); otherwise that partition is read from its
beginning. Either way every message is filtered on its own timestamp.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from google.cloud import bigquery

from ctstream.errors import ConfigError, SinkError, SinkUnavailable
from ctstream.models import BadEvent, ChangeEvent, ColumnSpec, TableSpec
from ctstream.settings import Settings
from ctstream.streams.backoff import RetryAborted, retry_forever
from ctstream.streams.bigquery_schema import (
    ERROR_RECORDS_TABLE,
    SNAPSHOTS_TABLE,
    RowValidator,
    change_row,
)
from ctstream.streams.bigquery_writer import BigQueryWriter, classify, latest_view_sql, make_client
from ctstream.streams.change_capture import iso_utc
from ctstream.streams.error_sink import ErrorRecord
from ctstream.streams.kafka_offsets import true_end_offsets
from ctstream.streams.topics import KafkaUnavailable, TopicNames

log = logging.getLogger("ctstream.replay")

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
_VIEW_KEYS = re.compile(r"PARTITION BY (.+?) ORDER BY changetrack_ver")
GIVE_UP_AFTER = 300.0  # seconds one batch may keep failing before the replay stops
IDLE_LIMIT = 60.0  # seconds without a message while offsets before the end remain


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
    error_samples: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["partitions"] = {str(p): asdict(s) for p, s in sorted(self.partitions.items())}
        return data


def _check_args(settings: Settings, table: str, since: dt.datetime | None,
                from_offset: int | None, until: dt.datetime | None, to_table: str | None) -> None:
    if table not in settings.source.tables:
        raise ConfigError(f"--table {table!r} is not in source.tables")
    if (since is None) == (from_offset is None):
        raise ConfigError("give exactly one of --since and --from-offset")
    if from_offset is not None and from_offset < 0:
        raise ConfigError("--from-offset must be 0 or more")
    if since is not None and until is not None and until <= since:
        raise ConfigError("--until must be later than --since")
    if to_table is not None:
        own = {TableSpec(t, None, t, ()).bq_table for t in settings.source.tables}
        if not _SAFE_NAME.match(to_table) or len(to_table) > 1024 - len("_latest"):
            raise ConfigError("--to-table: expected a BigQuery table name of letters, digits "
                              "and underscores, not starting with a digit, at most 1017 long")
        if to_table in {ERROR_RECORDS_TABLE, SNAPSHOTS_TABLE} or (
            to_table in own and to_table != TableSpec(table, None, table, ()).bq_table
        ):
            raise ConfigError(f"--to-table {to_table!r} is one of ctstream's own tables")


async def _create_target(settings: Settings, writer: BigQueryWriter, source: str,
                         target: str) -> None:
    """``target`` with the schema and layout of ``source``, and its latest-state view."""
    src = await writer.table(source)
    match = _VIEW_KEYS.search((await writer.table(f"{source}_latest")).view_query or "")
    if match is None:
        raise SinkError(f"cannot read the key columns from view {source}_latest; "
                        "start a worker once to bring it up to date")
    keys = [k.replace("\\`", "`").replace("\\\\", "\\")
            for k in re.findall(r"`((?:[^`\\]|\\.)*)`", match.group(1))]
    columns = tuple(ColumnSpec(k, "", False, i + 1) for i, k in enumerate(keys))
    table = bigquery.Table(writer.ref(target), schema=list(src.schema))
    table.clustering_fields = src.clustering_fields
    table.time_partitioning = src.time_partitioning
    view = bigquery.Table(writer.ref(f"{target}_latest"))
    view.view_query = latest_view_sql(writer.ref(target), TableSpec(target, None, target, columns),
                                      writer.ref(SNAPSHOTS_TABLE))
    client = make_client(settings.bigquery)
    try:
        for item in (table, view):
            await asyncio.to_thread(client.create_table, item, exists_ok=True,
                                    timeout=settings.sink.request_timeout)
    except Exception as exc:
        raise classify(exc, f"creating {target}") from exc
    finally:
        client.close()  # type: ignore[no-untyped-call]


async def replay(
    settings: Settings, table: str, *, since: dt.datetime | None = None,
    from_offset: int | None = None, until: dt.datetime | None = None,
    topic: Literal["raw", "deduped"] = "deduped", to_table: str | None = None,
    skip_dedup: bool = False, dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay ``table``'s topic into BigQuery. Naive datetimes are local time."""
    _check_args(settings, table, since, from_offset, until, to_table)
    started = time.monotonic()
    spec = TableSpec(table, None, table, ())
    names = TopicNames(settings.kafka.topic_prefix)
    topic_name = names.raw(spec) if topic == "raw" else names.deduped(spec)
    target = to_table or spec.bq_table
    result = ReplayResult(table, topic_name, target, dry_run)
    since_ms = None if since is None else int(since.timestamp() * 1000)
    until_ms = None if until is None else int(until.timestamp() * 1000)
    bootstrap = settings.kafka.bootstrap_servers
    writer = BigQueryWriter(settings.bigquery, timeout=settings.sink.request_timeout,
                            max_request_bytes=settings.sink.max_request_bytes)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer: AIOKafkaProducer | None = None
    try:
        if target != spec.bq_table and not dry_run:
            await _create_target(settings, writer, spec.bq_table, target)
        validator = (RowValidator(list((await writer.table(spec.bq_table)).schema))
                     if dry_run and target != spec.bq_table
                     else await writer.refresh_validator(target))
        try:
            await asyncio.wait_for(consumer.start(), 30)
            await consumer.topics()
        except (TimeoutError, KafkaError, OSError) as exc:
            raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap} "
                                   f"({type(exc).__name__}); is the broker running?") from None
        numbers = consumer.partitions_for_topic(topic_name)
        if not numbers:
            raise ConfigError(f"topic {topic_name!r} does not exist; check kafka.topic_prefix")
        parts = [TopicPartition(topic_name, p) for p in sorted(numbers)]
        ends = await true_end_offsets(bootstrap, parts)
        begins = await consumer.beginning_offsets(parts)
        starts: dict[TopicPartition, int] = {}
        checks: dict[TopicPartition, tuple[int, int]] = {}  # expected (offset, timestamp)
        if from_offset is not None:
            starts = {tp: min(max(from_offset, begins[tp]), ends[tp]) for tp in parts}
        else:
            found = await consumer.offsets_for_times({tp: since_ms for tp in parts})
            for tp in parts:
                hit = found.get(tp)
                if hit is None:  # Kafka: nothing at or after since
                    starts[tp] = ends[tp]
                elif hit.offset <= begins[tp] or hit.timestamp < (since_ms or 0):
                    starts[tp] = begins[tp]
                else:
                    starts[tp] = min(hit.offset, ends[tp])
                    checks[tp] = (hit.offset, hit.timestamp)
        spans = {tp: PartitionSpan(starts[tp], ends[tp]) for tp in parts}
        result.partitions = {tp.partition: spans[tp] for tp in parts}
        remaining = {tp for tp in parts if starts[tp] < ends[tp]}
        total = sum(ends[tp] - starts[tp] for tp in parts)
        done = 0
        seen: set[str] = set()
        pending: list[tuple[ChangeEvent, ConsumerRecord[Any, Any]]] = []
        bad: list[ErrorRecord] = []

        async def flush() -> None:
            nonlocal producer
            now = time.time()
            rows, ids, sources = [], [], []
            for change, record in pending:
                row = change_row(change, iso_utc(now))
                problems = validator.problems(row)
                if problems:
                    why = "; ".join(str(p) for p in problems)
                    bad.append(_record(f"replay: invalid row: {why}", record, change))
                else:
                    rows.append(row)
                    ids.append(change.message_unique_id)
                    sources.append((change, record))
            pending.clear()
            result.would_write += len(rows)
            if rows and not dry_run:
                for index, why in await _write(settings, writer, target, rows, ids, result):
                    change, record = sources[index]
                    bad.append(_record(f"replay: rejected by BigQuery: {why}", record, change))
                    result.rows_written -= 1
            result.error_rows += len(bad)
            result.error_samples += [f"{r.partition}/{r.offset}: {r.reason[:300]}"
                                     for r in bad][: 20 - len(result.error_samples)]
            if bad and not dry_run:
                producer = producer or await _producer(bootstrap)
                await _park(settings, writer, producer, names.errors, bad, now)
            bad.clear()

        consumer.assign(sorted(remaining, key=lambda tp: tp.partition))
        for tp in remaining:
            consumer.seek(tp, starts[tp])
        idle_since = time.monotonic()
        while remaining:
            batch = await consumer.getmany(timeout_ms=500, max_records=settings.sink.batch_rows)
            if not any(batch.values()):
                if time.monotonic() - idle_since > IDLE_LIMIT:
                    at = {tp.partition: await consumer.position(tp) for tp in remaining}
                    raise KafkaUnavailable(f"no messages from {topic_name} for {IDLE_LIMIT:.0f} "
                                           f"s, stuck at offsets {at} before the end {ends}")
            idle_since = time.monotonic()
            for tp, records in batch.items():
                if tp in checks and records:
                    offset, stamp = checks.pop(tp)
                    if records[0].offset != offset or records[0].timestamp != stamp:
                        # The broker's time index does not match the records: scan instead.
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
                    stamp = record.timestamp
                    if (since_ms is not None and stamp < since_ms) or (
                        until_ms is not None and stamp >= until_ms
                    ):
                        result.outside_time_range += 1
                        continue
                    result.messages_read += 1
                    span = spans[tp]
                    span.first = record.offset if span.first is None else span.first
                    span.last, span.messages = record.offset, span.messages + 1
                    try:
                        change = ChangeEvent.from_bytes(record.value)
                        if change.table_name != table:
                            raise BadEvent(f"table {change.table_name!r} in the topic of {table!r}")
                    except BadEvent as exc:
                        bad.append(_record(f"replay: {exc}", record, None, table))
                        continue
                    if not skip_dedup:
                        if change.message_unique_id in seen:
                            result.duplicates_skipped += 1
                            continue
                        seen.add(change.message_unique_id)
                    pending.append((change, record))
                if len(pending) + len(bad) >= settings.sink.batch_rows:
                    await flush()
            for tp in list(remaining):
                if tp not in checks and await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
        await flush()
        if progress is not None:
            progress(done, total)
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
        writer.close()
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _record(reason: str, record: ConsumerRecord[Any, Any], change: ChangeEvent | None,
            table: str | None = None) -> ErrorRecord:
    return ErrorRecord(reason=reason, payload=record.value,
                       source_table=change.table_name if change else table,
                       message_unique_id=change.message_unique_id if change else None,
                       topic=record.topic, partition=record.partition, offset=record.offset)


async def _retried(settings: Settings, what: str, fn: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + GIVE_UP_AFTER
    try:
        return await retry_forever(fn, what, settings.sink.retry_initial, settings.sink.retry_max,
                                   should_abort=lambda: time.monotonic() > deadline)
    except RetryAborted as exc:
        raise SinkUnavailable(f"{what}: BigQuery kept failing for {GIVE_UP_AFTER:.0f} s "
                              f"({exc.__cause__}); run the replay again later") from None


async def _write(settings: Settings, writer: BigQueryWriter, target: str,
                 rows: list[dict[str, Any]], ids: list[str],
                 result: ReplayResult) -> list[tuple[int, str]]:
    try:
        rejected: list[tuple[int, str]] = await _retried(
            settings, f"writing {len(rows)} rows to {target}",
            lambda: writer.insert(target, rows, ids))
    except SinkUnavailable:
        raise
    except SinkError as exc:  # retrying cannot help: park every row of the request
        rejected = [(i, str(exc)) for i in range(len(rows))]
    result.rows_written += len(rows)
    return rejected


async def _producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await asyncio.wait_for(producer.start(), 30)
    except (TimeoutError, KafkaError, OSError) as exc:
        await producer.stop()
        raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap} ({type(exc).__name__})") from None
    return producer


async def _park(settings: Settings, writer: BigQueryWriter, producer: AIOKafkaProducer,
                error_topic: str, records: list[ErrorRecord], now: float) -> None:
    rows = [r.as_row(now) for r in records]
    for record, row in zip(records, rows, strict=True):
        key = (record.source_table or "").encode("utf-8")
        await producer.send_and_wait(error_topic, orjson.dumps(row), key=key)
    ids = [f"replay:{r.topic}:{r.partition}:{r.offset}" for r in records]
    rejected = await _retried(settings, f"writing {len(rows)} error records",
                              lambda: writer.insert(ERROR_RECORDS_TABLE, rows, ids))
    if rejected:
        log.error("BigQuery refused %d error records: %s", len(rejected), rejected[:3])


def render(result: ReplayResult) -> str:
    verb = "would write" if result.dry_run else "wrote"
    lines = [
        f"replay of {result.table} from {result.topic} into {result.target_table}"
        f"{' (dry run)' if result.dry_run else ''}: {result.messages_read} messages read "
        f"({result.outside_time_range} outside the time range), "
        f"{result.duplicates_skipped} duplicates skipped, {verb} "
        f"{result.would_write if result.dry_run else result.rows_written} rows, "
        f"{result.error_rows} error rows, {result.seconds:.1f} s"
    ]
    for number, span in sorted(result.partitions.items()):
        lines.append(f"  partition {number}: offsets {span.start}..{span.end} read, "
                     f"{span.messages} in range (first {span.first}, last {span.last})")
    lines += [f"  error {sample}" for sample in result.error_samples]
    return "\n".join(lines)
