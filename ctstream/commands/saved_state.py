"""The pollers' saved state per table, read back from Kafka (``doctor`` and ``status``).

Each poller keeps its table's :class:`SourceState` (saved Change Tracking version, a
pending snapshot request) in the ``<app id>-ct-versions-changelog`` topic; the newest
message per table wins, as in the worker's table.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from ctstream.models import SourceState
from ctstream.settings import Settings
from ctstream.streams.offsets import true_end_offsets
from ctstream.streams.security import client_options


async def saved_states(settings: Settings, timeout: float = 15.0) -> dict[str, SourceState]:  # noqa: ASYNC109
    """The pollers' saved state per table, read from the ``ct-versions`` changelog."""
    topic = f"{settings.app.id}-ct-versions-changelog"
    options = client_options(settings.kafka)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        enable_auto_commit=False,
        request_timeout_ms=int(timeout * 1000),
        **options,
    )
    states: dict[str, SourceState] = {}
    try:
        # Inside the try: a consumer whose start failed (no broker) must still be stopped.
        await asyncio.wait_for(consumer.start(), timeout)
        if topic not in await consumer.topics():  # also refreshes the metadata
            return states
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return states
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await true_end_offsets(settings.kafka.bootstrap_servers, tps, client_options=options)
        remaining = {tp for tp in tps if ends.get(tp, 0) > 0}
        deadline = asyncio.get_running_loop().time() + timeout
        while remaining and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, messages in batches.items():
                for message in messages:
                    name = _decode_key(message.key)
                    if name is not None and message.value is not None:
                        with contextlib.suppress(ValueError, orjson.JSONDecodeError):
                            states[name] = SourceState.from_value(orjson.loads(message.value))
                    if message.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return states
    finally:
        await consumer.stop()


def _decode_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    text = key.decode("utf-8", "replace")
    with contextlib.suppress(orjson.JSONDecodeError):
        value = orjson.loads(key)
        if isinstance(value, str):
            return value
    return text
