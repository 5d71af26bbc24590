"""The pipeline's agents: poll (CT → raw), dedup (raw → deduped), sink (deduped → BigQuery),
table discovery and compaction; :func:`install` puts those of the worker's roles on its app."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctstream.agents.compaction import CompactionStats, install_compaction
from ctstream.agents.dedup import install_dedup
from ctstream.agents.discovery import TableDiscovery, install_discovery
from ctstream.agents.exactly_once import ExactlyOnceWrites
from ctstream.agents.poll import TablePoller
from ctstream.agents.poll_ticks import install_pollers
from ctstream.agents.registry import TableRegistry
from ctstream.agents.sink import BigQuerySink, install_sink
from ctstream.agents.stats import DedupStats, PollStats, SinkStats
from ctstream.bigquery.error_sink import ErrorReporter
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack.crash_points import CrashPoints
from ctstream.models import TableSpec
from ctstream.settings import Settings
from ctstream.source.reader import SourceReader
from ctstream.streams.app import PipelineApp
from ctstream.streams.commit_holes import install_hole_repair
from ctstream.streams.faust_compat import apply_patches
from ctstream.streams.partitioner import kafka_partitioner
from ctstream.streams.topics import PipelineTopics, declare

# Changelog messages of table writes wait in faust's producer buffer; at faust's default of
# 100 every stream pauses to flush it (logging a warning each time), which throttles the
# dedup stage. Acks are still awaited before offsets are committed.
PRODUCER_BUFFER_MESSAGES = 10_000


@dataclass
class Pipeline:
    """Everything a worker runs, and the counters its status views read."""

    app: PipelineApp
    settings: Settings
    registry: TableRegistry
    topics: PipelineTopics
    writer: BigQueryWriter
    errors: ErrorReporter
    poll_stats: PollStats
    dedup_stats: DedupStats
    sink_stats: SinkStats
    crash: CrashPoints = field(default_factory=CrashPoints)
    compaction_stats: CompactionStats = field(default_factory=CompactionStats)
    # Source connections the agents opened; closed when the worker stops.
    readers: list[SourceReader] = field(default_factory=list)

    @property
    def specs(self) -> Mapping[str, TableSpec]:
        return self.registry.specs


def install(
    app: PipelineApp,
    settings: Settings,
    registry: TableRegistry,
    writer: BigQueryWriter,
    crash: CrashPoints | None = None,
) -> Pipeline:
    """Declare the topics and put the agents of ``settings.app.roles`` on ``app``."""
    apply_patches()
    install_hole_repair(app)
    specs = registry.specs  # shared and live: tables found while running join it
    topics = declare(app, settings, list(specs.values()))
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
    # Kafka's default partitioner, faster (streams/partitioner.py); read when the producer
    # starts, which is after this. (faust's consumer keeps aiokafka's for key_partition:
    # the same function, so the same partitions.)
    app.producer.partitioner = kafka_partitioner
    errors = ErrorReporter(
        writer,
        topics.errors,
        settings.sink.retry_initial,
        settings.sink.retry_max,
        should_abort=lambda: bool(app.should_stop),
    )
    pipeline = Pipeline(
        app,
        settings,
        registry,
        topics,
        writer,
        errors,
        PollStats(),
        DedupStats(),
        SinkStats(),
        crash or CrashPoints(),
    )
    crash = pipeline.crash
    roles = settings.app.roles
    # Whatever its roles, the leader merges the change tables into <t>_current.
    install_compaction(app, registry, writer, pipeline.compaction_stats)
    discovery = None
    if settings.source.discover:
        # Its own connection: polls run long.
        discovery = TableDiscovery(app, settings, registry, topics, writer)
        pipeline.readers.append(discovery.reader)
        install_discovery(app, discovery)
    if "poll" in roles:
        reader = SourceReader(settings.source)
        pipeline.readers.append(reader)
        poller = TablePoller(
            app, settings, registry, topics, reader, writer, pipeline.poll_stats, crash
        )
        install_pollers(
            app,
            poller,
            errors,
            on_unknown_table=discovery.wake if discovery else lambda name: None,
        )
    if "dedup" in roles:
        install_dedup(app, topics, errors, pipeline.dedup_stats, specs, crash)
    if "sink" in roles:
        exactly_once = None
        if topics.written_ids is not None:
            exactly_once = ExactlyOnceWrites(
                app, writer, topics.written_ids, settings.sink, pipeline.sink_stats, crash
            )
        sink = BigQuerySink(
            app,
            settings.sink,
            specs,
            topics,
            writer,
            errors,
            pipeline.sink_stats,
            crash,
            exactly_once,
        )
        install_sink(app, sink)

    async def close_readers(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        for reader in pipeline.readers:
            await reader.close()

    # mode types its handlers with mypy_extensions' VarArg/NamedArg, which mypy does not
    # match against a plain ``async def``.
    app.on_before_shutdown.connect(close_readers)  # type: ignore[arg-type]

    return pipeline
