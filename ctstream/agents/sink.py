"""Sink agent: deduped topics → BigQuery, in batches, acknowledging only what was written.

A batch (by rows and by time) is split by table, each row is validated against its
table's schema, good rows are written with ``insertId = message_unique_id``, bad rows go
to the error topic and ``_error_records``. Retriable failures are retried forever with
backoff *inside* the agent: a batch (streams/channel_batches.py) is acknowledged only when
the loop asks for the next one, and its commit is capped while it runs (agents/batches.py),
so nothing is committed until BigQuery accepted it; while BigQuery is down the agent stops
pulling — the consumer's buffer fills and fetching pauses, so memory stays flat.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ctstream.agents.batches import run_in_flight
from ctstream.agents.stats import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram
from ctstream.bigquery.error_sink import ErrorRecord, ErrorReporter
from ctstream.bigquery.schema import payload_row
from ctstream.bigquery.writer import TOO_LARGE, BigQueryWriter
from ctstream.devstack.crash_points import crash_point
from ctstream.errors import CtstreamError, SinkError
from ctstream.models import BadEvent, TableSpec
from ctstream.models.change_event import parse_payload
from ctstream.retry import RetryAborted, retry_forever
from ctstream.settings import SinkSettings
from ctstream.source.change_capture import iso_utc
from ctstream.streams.channel_batches import channel_batches
from ctstream.streams.topics import PipelineTopics

log = logging.getLogger("ctstream.sink")
DEBUG_BATCHES = logging.DEBUG


@dataclass
class SinkStats:
    rows_written: dict[str, int] = field(default_factory=dict)
    error_rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    retries: int = 0
    last_batch_at: float | None = None
    last_batch_rows: int = 0
    # bigquery_insert_time - changetrack_start_time per written row, and rows per batch.
    latency: dict[str, Histogram] = field(default_factory=dict)
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))

    def observe_latency(self, table: str, start_times: Sequence[str], now: float) -> None:
        histogram = self.latency.get(table)
        if histogram is None:
            histogram = self.latency[table] = Histogram(LATENCY_BUCKETS)
        # The rows of one poll share their start time: each time is read and counted once.
        for start, rows in Counter(start_times).items():
            try:
                started = dt.datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            histogram.observe(max(0.0, now - started), rows)


def install_sink(
    app: Any,
    settings: SinkSettings,
    specs: Mapping[str, TableSpec],
    topics: PipelineTopics,
    writer: BigQueryWriter,
    errors: ErrorReporter,
    stats: SinkStats,
) -> None:
    @app.agent(topics.deduped_source, name="ctstream.sink")
    async def sink(stream: Any) -> None:
        batches = channel_batches(app, stream, settings.batch_rows, settings.batch_wait)
        await run_in_flight(
            app, batches, write_batch, "sink batch", settings.max_in_flight, *_retry(settings)
        )

    def on_retry(attempt: int, exc: CtstreamError) -> None:
        stats.retries += 1

    refresh = _RefreshLimit()

    async def write_batch(events: Sequence[Any]) -> None:
        if log.isEnabledFor(DEBUG_BATCHES):
            log.log(DEBUG_BATCHES, "batch offsets %s", _offset_spans(events))
        # (table, restricted copy?) → its events
        by_table: dict[tuple[str, bool], list[tuple[dict[str, Any], Any]]] = {}
        bad: list[ErrorRecord] = []
        for event in events:
            message = event.message
            table = topics.table_of_deduped_topic.get(message.topic)
            try:
                payload = parse_payload(event.value)
                if table is None or payload["table_name"] != table:
                    raise BadEvent(f"table {payload['table_name']!r} is not configured here")
            except BadEvent as exc:
                bad.append(_record(f"sink: {exc}", event, table))
                continue
            restricted = message.topic in topics.restricted_topics
            by_table.setdefault((table, restricted), []).append((payload, event))

        refreshed: set[str] = set()
        for (table, restricted), items in by_table.items():
            spec = specs[table].restricted_copy() if restricted else specs[table]
            bq_table = spec.bq_table
            validator = writer.validator(bq_table)
            inserted_at = time.time()
            now_iso = iso_utc(inserted_at)
            rows: list[dict[str, Any]] = []
            ids: list[str] = []
            sources: list[tuple[str, Any]] = []  # (unique id, event) per row
            bq_names = bigquery_names(spec)
            own_names = {name for name, bq_name in bq_names.items() if name == bq_name}
            for payload, event in items:
                row = payload_row(payload, now_iso, bq_names, own_names)
                unique_id: str = payload["message_unique_id"]
                problems = validator.problems(row)
                if (
                    problems
                    and bq_table not in refreshed
                    and any(p.unknown_column for p in problems)
                ):
                    # Perhaps a column the poller has just added: read the schema again
                    # (once per batch and table, at most every few seconds).
                    refreshed.add(bq_table)
                    await refresh.wait_due(bq_table)
                    validator = await _refreshed(writer, bq_table, validator)
                    problems = validator.problems(row)
                if problems:
                    reason = "; ".join(str(p) for p in problems)
                    bad.append(_record(f"invalid row: {reason}", event, table, unique_id))
                    continue
                rows.append(row)
                ids.append(unique_id)
                sources.append((unique_id, event))

            async def write(
                rows: list[dict[str, Any]] = rows, ids: list[str] = ids, bq_table: str = bq_table
            ) -> Any:
                return await writer.insert(bq_table, rows, ids)

            try:
                rejected = await retry_forever(
                    write,
                    f"writing {len(rows)} rows to {bq_table}",
                    *_retry(settings),
                    on_retry=on_retry,
                    should_abort=lambda: bool(app.should_stop),
                    log_fields={"table": table, "rows": len(rows)},
                )
            except RetryAborted:
                raise  # stopping: run_batch withholds the whole batch
            except SinkError as exc:
                # Retrying cannot help (e.g. 400 for the whole request): park every row.
                rejected = [(i, str(exc)) for i in range(len(rows))]
            for index, reason in rejected:
                if 0 <= index < len(sources):
                    unique_id, event = sources[index]
                    record = _record(f"rejected by BigQuery: {reason}", event, table, unique_id)
                    if reason.startswith(TOO_LARGE):
                        record = replace(
                            record,
                            payload=None,
                            reason=f"{record.reason} (payload left in Kafka at "
                            f"{record.topic}/{record.partition}/{record.offset})",
                        )
                    bad.append(record)
            if restricted:  # the counters and latencies are the main table's
                continue
            stats.rows_written[table] = stats.rows_written.get(table, 0) + len(rows) - len(rejected)
            refused = {index for index, _ in rejected}
            stats.observe_latency(
                table,
                [r["changetrack_start_time"] for i, r in enumerate(rows) if i not in refused],
                inserted_at,  # the rows' bigquery_insert_time
            )

        crash_point("sink.written")
        if bad:
            await errors.report_many(bad)
            # Counted once reported: whoever reads the status then finds them in BigQuery.
            for record in bad:
                key = record.source_table or "?"
                stats.error_rows[key] = stats.error_rows.get(key, 0) + 1
        stats.batches += 1
        stats.last_batch_at = time.time()
        stats.last_batch_rows = len(events)
        stats.batch_rows.observe(len(events))


class _RefreshLimit:
    """At most one schema re-read per table per ``every`` seconds."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.last: dict[str, float] = {}

    async def wait_due(self, table: str) -> None:
        # A rate limit, not a synchronisation: re-reads cost a BigQuery request each.
        wait = self.last.get(table, -self.every) + self.every - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.last[table] = time.monotonic()


async def _refreshed(writer: BigQueryWriter, table: str, current: Any) -> Any:
    try:
        return await writer.refresh_validator(table)
    except CtstreamError as exc:
        log.warning("re-reading the schema of %s failed: %s", table, exc)
        return current


def _offset_spans(events: Sequence[Any]) -> dict[str, tuple[int, int, int]]:
    """Per topic-partition: first offset, last offset, count (for post-mortems)."""
    spans: dict[str, list[int]] = {}
    for event in events:
        message = event.message
        spans.setdefault(f"{message.topic}/{message.partition}", []).append(message.offset)
    return {tp: (min(o), max(o), len(o)) for tp, o in spans.items()}


def _retry(settings: SinkSettings) -> tuple[float, float]:
    return settings.retry_initial, settings.retry_max


def _record(
    reason: str, event: Any, table: str | None, unique_id: str | None = None
) -> ErrorRecord:
    message = event.message
    return ErrorRecord(
        reason=reason,
        payload=event.value,
        source_table=table,
        message_unique_id=unique_id,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )


def bigquery_names(spec: TableSpec) -> dict[str, str]:
    """Source column → BigQuery column, for ``payload_row`` (made once per batch and table)."""
    return {c.name: c.bq_name for c in spec.columns}
