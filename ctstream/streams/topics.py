"""Topic names, their explicit creation, and the Faust topic and table objects.

The local broker does not create topics on produce (and a producer to a missing topic
stalls instead of failing), so every topic is created up front with its partition count.
All topics an event passes through share one partition count: the dedup table is
co-partitioned with the raw topics, and the deduped topic keeps the same key → partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from ctstream.errors import KafkaUnavailable
from ctstream.models import TableSpec
from ctstream.settings import Settings, TopicRetention
from ctstream.streams.faust_compat.internals import (
    callbacks_being_rebuilt,
    flag_subscription_change,
    set_resubscribe_delay,
    subscribed_topics,
)
from ctstream.streams.security import tls_failure
from ctstream.streams.seen_ids import SeenIds
from ctstream.streams.written_ids import WrittenIds

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str

    def raw(self, spec: TableSpec) -> str:
        return f"{self.prefix}.{spec.topic_part}.raw"

    def deduped(self, spec: TableSpec) -> str:
        return f"{self.prefix}.{spec.topic_part}.deduped"

    def restricted(self, spec: TableSpec) -> str:
        """The restricted copy of the deduped topic (source.restricted's columns NULL)."""
        return f"{self.prefix}.{spec.topic_part}.restricted"

    def per_table(self, spec: TableSpec) -> list[str]:
        names = [self.raw(spec), self.deduped(spec)]
        return [*names, self.restricted(spec)] if spec.restricted else names

    @property
    def errors(self) -> str:
        return f"{self.prefix}.errors"

    @property
    def poll_ticks(self) -> str:
        return f"{self.prefix}.poll-ticks"

    def retention_of(
        self, specs: Iterable[TableSpec], retention: TopicRetention
    ) -> dict[str, float]:
        """Seconds of retention per topic name, by the kind of topic."""
        seconds = {self.errors: retention.errors, self.poll_ticks: retention.poll_ticks}
        for spec in specs:
            seconds[self.raw(spec)] = retention.raw
            seconds[self.deduped(spec)] = retention.deduped
            if spec.restricted:
                seconds[self.restricted(spec)] = retention.deduped
        return seconds

    def all_for(self, specs: Iterable[TableSpec]) -> list[str]:
        names = [self.errors, self.poll_ticks]
        for spec in specs:
            names += self.per_table(spec)
        return names


async def ensure_topics(
    bootstrap: str,
    names: Sequence[str],
    partitions: int,
    replication: int,
    timeout: float = 30,  # noqa: ASYNC109 - also passed to the broker as timeout_ms
    retention: Mapping[str, float] | None = None,
    *,
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics that are missing; returns the ones created.

    ``retention``: seconds per topic name, set as ``retention.ms`` on the topics created
    (an existing topic keeps its own; change it with the broker's tools).
    ``client_options``: TLS/SASL keyword arguments (``kafka_security.client_options``).
    """
    options = dict(client_options or {})
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **options)
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        with contextlib.suppress(Exception):
            await admin.close()
        tls = await tls_failure(bootstrap, options)
        raise KafkaUnavailable(
            tls
            or f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); "
            "check kafka.bootstrap_servers and that the broker is running "
            "(`ctstream stack up` starts a local one)"
        ) from None
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
                await admin.create_topics(
                    [
                        NewTopic(
                            n,
                            partitions,
                            replication,
                            topic_configs=(
                                {"retention.ms": str(int(retention[n] * 1000))}
                                if retention and n in retention
                                else {}
                            ),
                        )
                        for n in missing
                    ],
                    timeout_ms=int(timeout * 1000),
                )
            log.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()


@dataclass
class PipelineTopics:
    """The Faust objects for one app: topics per table, the dedup and version tables.

    Tables can be added while the app runs (``add_table``): the per-table maps are updated
    in place and the dedup and sink agents' subscriptions are widened.
    """

    app: faust.App
    names: TopicNames
    partitions: int
    raw: dict[str, Any]  # table name → faust Topic
    deduped: dict[str, Any]
    errors: Any
    poll_ticks: Any
    seen_ids: SeenIds | None  # ids forwarded per dedup window; None without the dedup role
    # What the exactly-once sink wrote (streams/written_ids.py); None on other write paths.
    written_ids: WrittenIds | None
    versions: Any  # table: source table name → SourceState; None without the poll role
    table_of_raw_topic: dict[str, str]
    # The sink's topics → table: the deduped topics and the restricted copies' topics.
    table_of_deduped_topic: dict[str, str]
    restricted: dict[str, Any]  # table name → faust Topic of its restricted copy
    restricted_topics: set[str]
    # What the dedup and sink agents subscribe to: every raw / every deduped topic.
    raw_source: Any
    deduped_source: Any

    def topic(self, name: str) -> Any:
        return self.app.topic(
            name,
            partitions=self.partitions,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
        )

    def add_table(self, spec: TableSpec) -> None:
        """Carry a table found while running: its topics join the agents' subscriptions."""
        raw, deduped = self.names.raw(spec), self.names.deduped(spec)
        self.raw[spec.name] = self.topic(raw)
        self.deduped[spec.name] = self.topic(deduped)
        self.table_of_raw_topic[raw] = spec.name
        self.table_of_deduped_topic[deduped] = spec.name
        widen_subscription(self.app, self.raw_source, [raw])
        sink_topics = [deduped]
        if spec.restricted:
            restricted = self.names.restricted(spec)
            self.restricted[spec.name] = self.topic(restricted)
            self.table_of_deduped_topic[restricted] = spec.name
            self.restricted_topics.add(restricted)
            sink_topics.append(restricted)
        widen_subscription(self.app, self.deduped_source, sink_topics)

    def ensure_subscribed(self) -> list[str]:
        """Ask again for a subscription change faust dropped; returns the missing topics.

        faust's conductor ignores a change signalled while a rebalance is under way.
        """
        conductor = self.app.topics
        if self.app.rebalancing or callbacks_being_rebuilt(conductor):
            return []  # mid-change: the index is being rebuilt; look again next round
        subscribed = set(subscribed_topics(conductor))
        wanted: list[str] = []
        for source in (self.raw_source, self.deduped_source):
            # Only a source an agent iterates over (its clones are registered).
            if any(c.topics is source.topics for c in self.app.topics):
                wanted += source.topics
        missing = [t for t in wanted if t not in subscribed]
        if missing:
            flag_subscription_change(self.app.topics)
        return missing


def widen_subscription(app: faust.App, source: Any, names: Sequence[str]) -> None:
    """Add topics to a running agent's source and to the clones its stream iterates over.

    faust's clones of a topic share its ``topics`` list (a clone gets the same object), so
    the list is extended in place; faust's conductor then resubscribes the consumer, which
    starts a rebalance. ``declare`` makes that list; faust would keep a tuple.
    """
    new = [n for n in names if n not in source.topics]
    if not new:
        return
    shared = source.topics
    clones = sum(1 for c in app.topics if c.topics is shared)
    shared.extend(new)
    log.info("subscribing %d streams to %s", clones, ", ".join(new))
    flag_subscription_change(app.topics)


def declare(app: faust.App, settings: Settings, specs: Sequence[TableSpec]) -> PipelineTopics:
    names = TopicNames(settings.kafka.topic_prefix)
    n = settings.kafka.partitions

    def topic(*names: str) -> Any:
        return app.topic(
            *names,
            partitions=n,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
        )

    raw = {s.name: topic(names.raw(s)) for s in specs}
    deduped = {s.name: topic(names.deduped(s)) for s in specs}
    window = settings.dedup.window
    roles = settings.app.roles
    # Tables only where a stage uses them: each has a changelog topic to restore.
    seen_ids = versions = None
    if "dedup" in roles:
        # Its changelog holds one entry per batch (streams/seen_ids.py); the name says so,
        # so that no table of another format is ever read as this one.
        seen_ids = SeenIds(
            app.Table(
                "seen-id-batches",
                default=None,
                partitions=n,
                key_type=bytes,  # bytes keys and values go through the "raw" codec
                value_type=bytes,
                help="message_unique_ids forwarded, per partition and dedup window "
                "(one entry per batch: 16-byte digests)",
            ),
            window,
        )
    written_ids = None
    if "sink" in roles and settings.bigquery.write_api == "storage_write_committed":
        written_ids = WrittenIds(
            app.Table(
                "sink-written",
                default=None,
                partitions=n,
                key_type=bytes,
                value_type=bytes,
                help="message_unique_ids the exactly-once sink wrote, per partition and "
                "dedup window, and its write streams",
            ),
            window,
        )
    if "poll" in roles:
        versions = app.Table(
            "ct-versions",
            default=None,
            partitions=n,
            help="source table → Change Tracking version acknowledged by Kafka, snapshots",
        )
    # faust waits 45 s after a subscription change before resubscribing (to gather
    # changes into one rebalance); a table found while running should flow sooner.
    set_resubscribe_delay(app.topics, 2.0)
    return PipelineTopics(
        app=app,
        names=names,
        partitions=n,
        raw=raw,
        deduped=deduped,
        errors=topic(names.errors),
        poll_ticks=topic(names.poll_ticks),
        seen_ids=seen_ids,
        written_ids=written_ids,
        versions=versions,
        table_of_raw_topic={names.raw(s): s.name for s in specs},
        table_of_deduped_topic={
            **{names.deduped(s): s.name for s in specs},
            **{names.restricted(s): s.name for s in specs if s.restricted},
        },
        restricted={s.name: topic(names.restricted(s)) for s in specs if s.restricted},
        restricted_topics={names.restricted(s) for s in specs if s.restricted},
        raw_source=_widenable(topic(*(names.raw(s) for s in specs))),
        deduped_source=_widenable(
            topic(
                *(names.deduped(s) for s in specs),
                *(names.restricted(s) for s in specs if s.restricted),
            )
        ),
    )


def _widenable(topic: Any) -> Any:
    topic.topics = list(topic.topics)  # see widen_subscription
    return topic
