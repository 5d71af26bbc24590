"""``/metrics``: the worker's counters in the Prometheus text format.

Read from the same statistics as ``/api/status/`` at scrape time; nothing secret is ever a
label or a value. The source lag of a table is measured by the poller (see
``agents/poll.py``), not at scrape time, and shown only by the worker that polls the table
now, so a worker that lost the table to a rebalance does not report a stale lag.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ctstream.agents.compaction import CompactionStats
from ctstream.agents.stats import POLL_FAILURE_REASONS, Histogram, PollStats
from ctstream.streams.app import PipelineApp
from ctstream.streams.faust_compat.internals import committed_offsets, consumer_if_created

if TYPE_CHECKING:
    from ctstream.agents import Pipeline


def _counter(name: str, doc: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["table"])
    for table, value in sorted(values.items()):
        family.add_metric([table], value)
    return family


def _histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    buckets = [("+Inf" if b == float("inf") else repr(float(b)), c) for b, c in h.cumulative()]
    family.add_metric(labels, buckets, sum_value=h.sum)


class PipelineCollector(Collector):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        p = self.pipeline
        poll, dedup, sink = p.poll_stats, p.dedup_stats, p.sink_stats
        yield _counter("ctstream_polls", "Polls of a source table", poll.polls)
        yield _counter("ctstream_events_produced", "Change events sent to Kafka", poll.events)
        saved = GaugeMetricFamily(
            "ctstream_saved_version", "Change Tracking version saved", labels=["table"]
        )
        stopped = GaugeMetricFamily(
            "ctstream_table_stopped",
            "1 when polling stopped (version too old, no longer tracked, key retyped)",
            labels=["table"],
        )
        drift = GaugeMetricFamily(
            "ctstream_schema_notes",
            "Source column changes BigQuery could not follow (see /api/status/)",
            labels=["table"],
        )
        for table in p.specs:
            if table in poll.versions:
                saved.add_metric([table], poll.versions[table])
            halted = table in poll.stopped or table in p.registry.untracked
            stopped.add_metric([table], 1 if halted else 0)
            drift.add_metric([table], len(p.registry.schema_notes.get(table, ())))
        yield saved
        yield stopped
        yield drift
        yield from _source_lag(poll, polled_here(p))
        yield from _snapshots(poll)
        yield from _compaction(p.compaction_stats)
        failures = CounterMetricFamily(
            "ctstream_poll_failures", "Failed polls, by reason", labels=["table", "reason"]
        )
        # Every reason of every table this worker polled, from 0: a first failure is an
        # increase, not a new series.
        for table in sorted(poll.polls.keys() | poll.failures.keys()):
            counts: Mapping[str, int] = poll.failures.get(table, {})
            for reason in POLL_FAILURE_REASONS:
                failures.add_metric([table, reason], counts.get(reason, 0))
        yield failures
        yield _counter("ctstream_dedup_events", "Events seen by the dedup stage", dedup.seen)
        yield _counter("ctstream_duplicates_dropped", "Duplicate events dropped", dedup.dropped)
        yield _counter("ctstream_rows_written", "Rows BigQuery accepted", sink.rows_written)
        yield _counter("ctstream_error_rows", "Rows parked in _error_records", sink.error_rows)
        retries = CounterMetricFamily("ctstream_sink_retries", "Retried BigQuery writes")
        retries.add_metric([], sink.retries)
        yield retries
        for name, help_text, value in (
            (
                "copies_refused",
                "Rows left out as written before (exactly-once path)",
                sink.copies_refused,
            ),
            ("write_streams_opened", "Committed-type write streams opened", sink.streams_opened),
            ("rows_looked_up", "Rows looked up in BigQuery after a take-over", sink.rows_looked_up),
        ):
            family = CounterMetricFamily(f"ctstream_sink_{name}", help_text)
            family.add_metric([], value)
            yield family
        batches = CounterMetricFamily("ctstream_sink_batches", "Batches written")
        batches.add_metric([], sink.batches)
        yield batches
        requests = CounterMetricFamily(
            "ctstream_bigquery_requests", "Successful write requests", labels=["api"]
        )
        for api, count in sorted(p.writer.requests.items()):
            requests.add_metric([api], count)
        yield requests
        sizes = HistogramMetricFamily("ctstream_batch_rows", "Events per sink batch")
        _histogram(sizes, [], sink.batch_rows)
        yield sizes
        latency = HistogramMetricFamily(
            "ctstream_latency_seconds",
            "bigquery_insert_time - changetrack_start_time per written row",
            labels=["table"],
        )
        for table, histogram in sorted(sink.latency.items()):
            _histogram(latency, [table], histogram)
        yield latency
        lag = GaugeMetricFamily(
            "ctstream_consumer_lag",
            "Messages not yet committed, per partition this worker owns",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(consumer_lag(p.app).items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag


def _compaction(stats: CompactionStats) -> Iterator[Metric]:
    """<t>_current's merges, from the worker that ran them (the leader)."""
    merged_to = GaugeMetricFamily(
        "ctstream_compaction_merged_to_timestamp_seconds",
        "The change log is merged into <table>_current up to this insert time",
        labels=["bigquery_table"],
    )
    rows = CounterMetricFamily(
        "ctstream_compaction_rows_merged",
        "Rows of <table>_current inserted or updated by this worker's merges",
        labels=["bigquery_table"],
    )
    failing = GaugeMetricFamily(
        "ctstream_compaction_failing",
        "1 when the last merge of the table failed",
        labels=["bigquery_table"],
    )
    for table in sorted(stats.last.keys() | stats.last_error.keys()):
        result = stats.last.get(table)
        if result is not None:
            merged_to.add_metric([table], result.merged_to.timestamp())
        rows.add_metric([table], stats.rows_merged.get(table, 0))
        failing.add_metric([table], 1 if table in stats.last_error else 0)
    yield merged_to
    yield rows
    yield failing


def _source_lag(poll: PollStats, tables: set[str]) -> Iterator[Metric]:
    families = {
        name: GaugeMetricFamily(name, doc, labels=["table"])
        for name, doc in (
            ("ctstream_source_version_lag", "Source's current CT version minus the saved one"),
            (
                "ctstream_source_oldest_unsent_change_age_seconds",
                "Age of the oldest source change not yet sent (0: none); absent when the "
                "source cannot tell",
            ),
            ("ctstream_source_retention_seconds", "The source's Change Tracking retention"),
            (
                "ctstream_source_lag_checked_timestamp_seconds",
                "When the source lag and age were last measured (epoch)",
            ),
        )
    }
    values: tuple[Mapping[str, float], ...] = (
        poll.version_lag,
        poll.unsent_age,
        poll.retention,
        poll.lag_checked_at,
    )
    for family, by_table in zip(families.values(), values, strict=True):
        for table in sorted(tables & by_table.keys()):
            family.add_metric([table], by_table[table])
        yield family


SNAPSHOT_PHASES = ("reading", "paused", "verifying")


def _snapshots(poll: PollStats) -> Iterator[Metric]:
    """The snapshot under way per table (agents/snapshots.py), on the worker running it."""
    phase = GaugeMetricFamily(
        "ctstream_snapshot_phase",
        "1 for the phase of the snapshot under way: reading chunks, paused, or verifying "
        "(waiting for BigQuery to hold its rows)",
        labels=["table", "phase"],
    )
    gauges = {
        key: GaugeMetricFamily(name, doc, labels=["table"])
        for key, name, doc in (
            ("chunks", "ctstream_snapshot_chunks", "Chunks of the snapshot sent"),
            ("rows", "ctstream_snapshot_rows", "Rows of the snapshot sent"),
            (
                "rows_left_estimate",
                "ctstream_snapshot_rows_left_estimate",
                "Rows of the snapshot still to read, as estimated at its start",
            ),
            ("rows_per_s", "ctstream_snapshot_rows_per_second", "Rows sent per second"),
            ("eta_s", "ctstream_snapshot_eta_seconds", "Estimated seconds to the last chunk"),
        )
    }
    for table, shown in sorted(poll.snapshot_progress.items()):
        for name in SNAPSHOT_PHASES:
            phase.add_metric([table, name], 1 if shown.get("phase") == name else 0)
        for key, family in gauges.items():
            value = shown.get(key)
            if isinstance(value, int | float):
                family.add_metric([table], value)
    yield phase
    yield from gauges.values()


def polled_here(pipeline: Pipeline) -> set[str]:
    """The tables whose source lag this worker reports: those whose poll ticks it receives
    now (one worker polls a table), or every table it measured when it cannot tell."""
    measured = set(pipeline.poll_stats.lag_checked_at)
    consumer = consumer_if_created(pipeline.app)
    if consumer is None:
        return measured
    topic = pipeline.topics.names.poll_ticks
    try:
        owned = {tp.partition for tp in consumer.assignment() if tp.topic == topic}
    except Exception:  # the consumer is not started yet
        return measured
    # Ticks are keyed by table name and hashed as Kafka's default partitioner does.
    partitions = list(range(pipeline.topics.partitions))
    partitioner = DefaultPartitioner()
    return {t for t in measured if partitioner(t.encode("utf-8"), partitions, partitions) in owned}


def consumer_lag(app: PipelineApp) -> dict[tuple[str, int], int]:
    """Highwater minus committed offset for each partition this worker owns."""
    consumer = consumer_if_created(app)
    if consumer is None:
        return {}
    lags: dict[tuple[str, int], int] = {}
    try:
        for tp in consumer.assignment():
            committed = committed_offsets(consumer).get(tp)
            highwater = consumer.highwater(tp)
            if committed is None or highwater is None or highwater < 0:
                continue  # changelogs are read, never committed: no lag to speak of
            lags[(tp.topic, tp.partition)] = max(0, int(highwater) - int(committed))
    except Exception:
        return lags
    return lags


def metrics_text(pipeline: Pipeline) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(pipeline))
    return generate_latest(registry)
