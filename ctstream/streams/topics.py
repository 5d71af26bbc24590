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
from datetime import timedelta
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from ctstream.errors import CtstreamError
from ctstream.models import TableSpec
from ctstream.settings import Settings, TopicRetention

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str

    def raw(self, spec: TableSpec) -> str:
        return f"{self.prefix}.{spec.topic_part}.raw"

    def deduped(self, spec: TableSpec) -> str:
        return f"{self.prefix}.{spec.topic_part}.deduped"

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
        return seconds

    def all_for(self, specs: Iterable[TableSpec]) -> list[str]:
        names = [self.errors, self.poll_ticks]
        for spec in specs:
            names += [self.raw(spec), self.deduped(spec)]
        return names


class KafkaUnavailable(CtstreamError):
    retriable = True


async def ensure_topics(
    bootstrap: str,
    names: Sequence[str],
    partitions: int,
    replication: int,
    timeout: float = 30,  # noqa: ASYNC109 - also passed to the broker as timeout_ms
    retention: Mapping[str, float] | None = None,
) -> list[str]:
    """Create the topics that are missing; returns the ones created.

    ``retention``: seconds per topic name, set as ``retention.ms`` on the topics created
    (an existing topic keeps its own; change it with the broker's tools).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        raise KafkaUnavailable(
            f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); "
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
    """The Faust objects for one app: topics per table, the dedup and version tables."""

    names: TopicNames
    raw: dict[str, Any]  # table name → faust Topic
    deduped: dict[str, Any]
    errors: Any
    poll_ticks: Any
    seen_ids: Any  # windowed table: message_unique_id → copies; None without the dedup role
    versions: Any  # table: source table name → SourceState; None without the poll role
    table_of_raw_topic: dict[str, str]
    table_of_deduped_topic: dict[str, str]


def declare(app: Any, settings: Settings, specs: Sequence[TableSpec]) -> PipelineTopics:
    names = TopicNames(settings.kafka.topic_prefix)
    n = settings.kafka.partitions

    def topic(name: str) -> Any:
        return app.topic(
            name,
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
        seen_ids = app.Table(
            "seen-ids",
            default=int,
            partitions=n,
            help="message_unique_id → copies seen, per dedup window",
        ).tumbling(timedelta(seconds=window), expires=timedelta(seconds=window * 3))
    if "poll" in roles:
        versions = app.Table(
            "ct-versions",
            default=None,
            partitions=n,
            help="source table → Change Tracking version acknowledged by Kafka, snapshots",
        )
    return PipelineTopics(
        names=names,
        raw=raw,
        deduped=deduped,
        errors=topic(names.errors),
        poll_ticks=topic(names.poll_ticks),
        seen_ids=seen_ids,
        versions=versions,
        table_of_raw_topic={names.raw(s): s.name for s in specs},
        table_of_deduped_topic={names.deduped(s): s.name for s in specs},
    )
