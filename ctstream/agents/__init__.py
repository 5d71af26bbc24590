"""The pipeline's agents: poll (CT → raw), dedup (raw → deduped), sink (deduped → BigQuery)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctstream.agents.dedup import DedupStats, install_dedup
from ctstream.agents.discovery import install_discovery
from ctstream.agents.poll import PollStats, install_pollers
from ctstream.agents.registry import TableRegistry
from ctstream.agents.sink import SinkStats, install_sink
from ctstream.bigquery.error_sink import ErrorReporter
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.models import TableSpec
from ctstream.settings import Settings
from ctstream.streams.commit_holes import install_hole_repair
from ctstream.streams.faust_compat import patches as faust_patches
from ctstream.streams.partitioner import kafka_partitioner
from ctstream.streams.topics import PipelineTopics, declare


@dataclass
class Pipeline:
    """Everything a worker runs, and the counters its status views read."""

    app: Any
    settings: Settings
    registry: TableRegistry
    topics: PipelineTopics
    writer: BigQueryWriter
    errors: ErrorReporter
    poll_stats: PollStats
    dedup_stats: DedupStats
    sink_stats: SinkStats

    @property
    def specs(self) -> Mapping[str, TableSpec]:
        return self.registry.specs


def install(
    app: Any, settings: Settings, registry: TableRegistry, writer: BigQueryWriter
) -> Pipeline:
    faust_patches.apply()
    install_hole_repair(app)
    specs = registry.specs  # shared and live: tables found while running join it
    topics = declare(app, settings, list(specs.values()))
    # Table writes queue their changelog messages in faust's producer buffer; at the
    # default of 100 every stream pauses to flush it (logging a warning each time), which
    # throttles the dedup stage. Acks are still awaited before offsets are committed.
    app.producer.buffer.max_messages = 10_000
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
        app, settings, registry, topics, writer, errors, PollStats(), DedupStats(), SinkStats()
    )
    roles = settings.app.roles
    discovery = None
    if settings.source.discover:
        discovery = install_discovery(app, settings, registry, topics, writer)
    if "poll" in roles:
        install_pollers(
            app,
            settings,
            registry,
            topics,
            writer,
            pipeline.poll_stats,
            errors,
            on_unknown_table=discovery.wake if discovery else lambda name: None,
        )
    if "dedup" in roles:
        install_dedup(app, topics, errors, pipeline.dedup_stats, specs)
    if "sink" in roles:
        install_sink(app, settings.sink, specs, topics, writer, errors, pipeline.sink_stats)

    @app.on_before_shutdown.connect
    async def _close(app_: Any, **kwargs: Any) -> None:
        for attr in ("ctstream_reader", "ctstream_discovery_reader"):
            reader = getattr(app, attr, None)
            if reader is not None:
                await reader.close()

    return pipeline
