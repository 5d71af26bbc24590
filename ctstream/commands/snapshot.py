"""``ctstream snapshot``: ask the pipeline to re-read tables, through the poll-ticks topic.

The request is a poll tick with a ``snapshot`` reason, keyed by table name like the
leader's ticks, so it lands in the same partition and reaches the worker that owns the
table's state. That worker saves the request in the state first, so it survives a crash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ctstream.models import PollTick
from ctstream.settings import Settings
from ctstream.streams.security import client_options, tls_failure
from ctstream.streams.topics import KafkaUnavailable, TopicNames


async def request_snapshots(
    settings: Settings,
    tables: Sequence[str],
    reason: str,
    timeout: float = 30.0,  # noqa: ASYNC109
) -> None:
    topic = TopicNames(settings.kafka.topic_prefix).poll_ticks
    bootstrap = settings.kafka.bootstrap_servers
    options = client_options(settings.kafka)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    try:
        await asyncio.wait_for(producer.start(), timeout)
        metadata = await producer.client.fetch_all_metadata()
        if topic not in metadata.topics():
            raise KafkaUnavailable(
                f"topic {topic!r} does not exist on {bootstrap}: start a worker of this "
                "config once (it creates the topics), then ask again"
            )
        now = time.time()
        for table in tables:
            tick = PollTick(table, now, snapshot=reason)
            await asyncio.wait_for(
                producer.send_and_wait(topic, tick.to_bytes(), key=table.encode("utf-8")),
                timeout,
            )
    except (TimeoutError, KafkaError, OSError) as exc:
        raise KafkaUnavailable(
            await tls_failure(bootstrap, options)
            or f"cannot send the snapshot request to Kafka at {bootstrap} "
            f"({type(exc).__name__}); check kafka.bootstrap_servers and the broker"
        ) from None
    finally:
        await producer.stop()
