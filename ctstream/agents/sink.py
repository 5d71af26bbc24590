"""Sink agent: deduped topics → BigQuery, in batches, acknowledging only what was written.

:class:`BigQuerySink` has the shape of quix-streams' ``BatchingSink``: events are *added*
to a batch (routed to their table, parsed), the batch is *written*, several tables at
once, and a
*flush* ends with every row either accepted by BigQuery or parked with its reason. The
checkpoint order is faust's, made explicit in :meth:`BigQuerySink.checkpoint`:

1. flush the sink — BigQuery accepted every good row (retriable failures are retried
   forever with backoff, inside the agent);
2. flush the producer — bad rows are acknowledged by Kafka's error topic and written to
   ``_error_records``;
3. commit — only then is the batch finished; its offsets were capped below it while it
   ran (streams/in_flight.py), and faust acknowledges it when the agent takes the next.

While BigQuery is down the agent stops pulling: the consumer's buffer fills and fetching
pauses, so memory stays flat. A batch cut short by a stop is withheld, never committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ctstream.agents.batches import run_in_flight
from ctstream.agents.exactly_once import ExactlyOnceWrites
from ctstream.agents.stats import SinkStats
from ctstream.bigquery.error_sink import ErrorRecord, ErrorReporter
from ctstream.bigquery.schema import RowValidator, payload_row
from ctstream.bigquery.writer import TOO_LARGE, BigQueryWriter
from ctstream.devstack.crash_points import CrashPoints
from ctstream.errors import BadEvent, CtstreamError, RetryAborted, SinkError
from ctstream.models import TableSpec
from ctstream.models.change_event import parse_payload
from ctstream.models.values import iso_utc
from ctstream.retry import retry_forever
from ctstream.settings import SinkSettings
from ctstream.streams.app import PipelineApp
from ctstream.streams.channel_batches import channel_batches
from ctstream.streams.topics import PipelineTopics

log = logging.getLogger("ctstream.sink")
DEBUG_BATCHES = logging.DEBUG


@dataclass
class SinkBatch:
    """Events taken together, routed to their tables: what one checkpoint writes."""

    size: int = 0
    # (table, restricted copy?, partition or -1) → (parsed payload, event) of each of its
    # rows; the exactly-once path writes each partition on its own stream.
    tables: dict[tuple[str, bool, int], list[tuple[dict[str, Any], Any]]] = field(
        default_factory=dict
    )
    bad: list[ErrorRecord] = field(default_factory=list)  # rows parked with their reason


class BigQuerySink:
    """Writes the deduped topics' events into their BigQuery tables (see the module)."""

    def __init__(
        self,
        app: PipelineApp,
        settings: SinkSettings,
        specs: Mapping[str, TableSpec],
        topics: PipelineTopics,
        writer: BigQueryWriter,
        errors: ErrorReporter,
        stats: SinkStats,
        crash: CrashPoints,
        exactly_once: ExactlyOnceWrites | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.specs = specs  # shared and live: tables found while running join it
        self.topics = topics
        self.writer = writer
        self.errors = errors
        self.stats = stats
        self.crash = crash
        self.exactly_once = exactly_once
        self._refresh = _RefreshLimit()

    def add(self, batch: SinkBatch, event: Any) -> None:
        """Route ``event`` to its table in ``batch``, or park it there if it is no change
        event of a table carried here."""
        batch.size += 1
        message = event.message
        table = self.topics.table_of_deduped_topic.get(message.topic)
        try:
            payload = parse_payload(event.value)
            if table is None or payload["table_name"] != table:
                raise BadEvent(f"table {payload['table_name']!r} is not configured here")
        except BadEvent as exc:
            batch.bad.append(_record(f"sink: {exc}", event, table))
            return
        restricted = message.topic in self.topics.restricted_topics
        partition = message.partition if self.exactly_once else -1
        batch.tables.setdefault((table, restricted, partition), []).append((payload, event))

    async def checkpoint(self, events: Sequence[Any]) -> None:
        """Write ``events``: flush the sink, then the producer (module docstring). Returns
        when every event is in BigQuery or parked; raises RetryAborted when stopping."""
        if log.isEnabledFor(DEBUG_BATCHES):
            log.log(DEBUG_BATCHES, "batch offsets %s", _offset_spans(events))
        batch = SinkBatch()
        for event in events:
            self.add(batch, event)
        await self.flush(batch)
        self.crash.reach("sink.written")
        await self._park(batch.bad)
        stats = self.stats
        stats.batches += 1
        stats.last_batch_at = time.time()
        stats.last_batch_rows = batch.size
        stats.batch_rows.observe(batch.size)

    async def flush(self, batch: SinkBatch) -> None:
        """Write every table of ``batch``, up to ``sink.tables_at_once`` at a time; rows
        BigQuery refused join ``batch.bad``. Every table's write ends (written, or failed
        for good) before the first failure is raised: the batch is then not finished,
        and what was written is written again with it (at least once)."""
        refreshed: set[str] = set()
        gate = asyncio.Semaphore(self.settings.tables_at_once)

        async def one(table: str, restricted: bool, items: Any) -> None:
            async with gate:
                await self.write(table, restricted, items, batch.bad, refreshed)

        outcomes = await asyncio.gather(
            *(one(t, restricted, items) for (t, restricted, _), items in batch.tables.items()),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def write(
        self,
        table: str,
        restricted: bool,
        items: Sequence[tuple[dict[str, Any], Any]],
        bad: list[ErrorRecord],
        refreshed: set[str],
    ) -> None:
        """Validate and insert one table's rows (``insertId = message_unique_id``), retrying
        retriable failures; invalid and refused rows are appended to ``bad``.

        ``refreshed``: BigQuery tables whose schema this batch has re-read already.
        """
        spec = self.specs[table].restricted_copy() if restricted else self.specs[table]
        bq_table = spec.bq_table
        validator = self.writer.validator(bq_table)
        inserted_at = time.time()
        now_iso = iso_utc(inserted_at)
        rows: list[dict[str, Any]] = []
        ids: list[str] = []
        sources: list[tuple[str, Any]] = []  # (unique id, event) per row
        bq_names = bigquery_names(spec)
        own_names = {name for name, bq_name in bq_names.items() if name == bq_name}
        declared = {bq_names.get(c.name, c.name): c.source_type for c in spec.columns}
        for payload, event in items:
            row = payload_row(payload, now_iso, bq_names, own_names)
            unique_id: str = payload["message_unique_id"]
            problems = validator.problems(row)
            if problems and bq_table not in refreshed and any(p.unknown_column for p in problems):
                # Perhaps a column the poller has just added: read the schema again (once
                # per batch and table, at most every few seconds).
                refreshed.add(bq_table)
                await self._refresh.wait_due(bq_table)
                validator = await self._refreshed(bq_table, validator)
                problems = validator.problems(row)
            if problems:
                reason = "; ".join(
                    f"{p} (source column declared {declared[p.column]!r})"
                    if p.column in declared
                    else str(p)
                    for p in problems
                )
                bad.append(_record(f"invalid row: {reason}", event, table, unique_id))
                continue
            rows.append(row)
            ids.append(unique_id)
            sources.append((unique_id, event))
        before: list[int] = []
        if self.exactly_once is None:
            rejected = await self._insert(table, bq_table, rows, ids)
        else:
            events = [event for _, event in sources]
            message = items[0][1].message
            outcome = await self.exactly_once.write(
                message.topic, message.partition, bq_table, rows, events, ids
            )
            rejected, before = outcome.refused, outcome.written_before
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
            return
        stats = self.stats
        refused = {index for index, _ in rejected} | set(before)
        stats.rows_written[table] = stats.rows_written.get(table, 0) + len(rows) - len(refused)
        stats.observe_latency(
            table,
            [r["changetrack_start_time"] for i, r in enumerate(rows) if i not in refused],
            inserted_at,  # the rows' bigquery_insert_time
        )

    async def _insert(
        self, table: str, bq_table: str, rows: list[dict[str, Any]], ids: list[str]
    ) -> list[tuple[int, str]]:
        """(row index, reason) of each row BigQuery refused; retriable failures retried."""
        settings = self.settings

        def on_retry(attempt: int, exc: CtstreamError) -> None:
            self.stats.retries += 1

        try:
            rejected: list[tuple[int, str]] = await retry_forever(
                lambda: self.writer.insert(bq_table, rows, ids),
                f"writing {len(rows)} rows to {bq_table}",
                settings.retry_initial,
                settings.retry_max,
                on_retry=on_retry,
                should_abort=lambda: bool(self.app.should_stop),
                log_fields={"table": table, "rows": len(rows)},
            )
        except RetryAborted:
            raise  # stopping: run_batch withholds the whole batch
        except SinkError as exc:
            # Retrying cannot help (e.g. 400 for the whole request): park every row.
            rejected = [(i, str(exc)) for i in range(len(rows))]
        return rejected

    async def _park(self, bad: list[ErrorRecord]) -> None:
        """Bad rows to the error topic and ``_error_records`` (acknowledged before return)."""
        if not bad:
            return
        await self.errors.report_many(bad)
        # Counted once reported: whoever reads the status then finds them in BigQuery.
        for record in bad:
            key = record.source_table or "?"
            self.stats.error_rows[key] = self.stats.error_rows.get(key, 0) + 1

    async def _refreshed(self, table: str, current: RowValidator) -> RowValidator:
        try:
            return await self.writer.refresh_validator(table)
        except CtstreamError as exc:
            log.warning("re-reading the schema of %s failed: %s", table, exc)
            return current


def install_sink(app: PipelineApp, sink: BigQuerySink) -> None:
    """The ``ctstream.sink`` agent on the deduped topics, running ``sink.checkpoint`` for up
    to ``sink.max_in_flight`` batches at once."""
    settings = sink.settings

    @app.agent(sink.topics.deduped_source, name="ctstream.sink")
    async def write_to_bigquery(stream: Any) -> None:
        batches = channel_batches(app, stream, settings.batch_rows, settings.batch_wait)
        await run_in_flight(
            app,
            batches,
            sink.checkpoint,
            "sink batch",
            settings.max_in_flight,
            settings.retry_initial,
            settings.retry_max,
        )


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


def _offset_spans(events: Sequence[Any]) -> dict[str, tuple[int, int, int]]:
    """Per topic-partition: first offset, last offset, count (for post-mortems)."""
    spans: dict[str, list[int]] = {}
    for event in events:
        message = event.message
        spans.setdefault(f"{message.topic}/{message.partition}", []).append(message.offset)
    return {tp: (min(o), max(o), len(o)) for tp, o in spans.items()}


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
