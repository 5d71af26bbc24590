"""Producing many messages as one Kafka record batch per partition.

``producer.send`` costs two coroutines, a metadata check, a partitioner call through
faust's wrapper and a future per message; the poller and the dedup stage send thousands at
once and wait for all of them anyway. Here each topic's messages are partitioned with the
producer's own partitioner (so a key lands where ``send`` would put it), appended to one
aiokafka ``BatchBuilder`` per partition, and handed over with ``send_batch``: one future
per record batch. Within a partition the messages keep their order, and a batch holds at
most the producer's ``max_batch_size`` (a full one is sent and a new one begun).

The producer's metadata, partitioner and metadata wait are aiokafka's private parts, read
through streams/faust_compat/internals.py; the partitioner gets the arguments aiokafka's own
``AIOKafkaProducer._partition`` passes it (the fingerprint test holds that function to the
verified source).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

from ctstream.models.change_event import Record
from ctstream.streams.acks import discard
from ctstream.streams.faust_compat.internals import (
    aiokafka_producer_of,
    producer_metadata,
    producer_partitioner,
    wait_on_metadata,
)


def aiokafka_producer(app: faust.App) -> AIOKafkaProducer:
    """The aiokafka producer inside faust's (raises faust's NotReady before it started)."""
    return aiokafka_producer_of(app.producer)


async def partition_count(producer: AIOKafkaProducer, topic: str) -> int:
    """How many partitions ``topic`` has, as the producer's metadata knows it."""
    await wait_on_metadata(producer, topic)
    return len(producer_metadata(producer).partitions_for_topic(topic) or ())


async def send_batched(
    producer: AIOKafkaProducer,
    topic: str,
    records: Iterable[Record],
    partitions: Sequence[int] | None = None,
) -> list[asyncio.Future[Any]]:
    """Queue ``records`` for ``topic``; the futures complete when Kafka acknowledged them.

    ``partitions``: the partition of each record, where the caller knows it already (the
    dedup stage forwards a record to the partition its copy was read from, when the two
    topics have as many partitions: the key hashed there). Else the partitioner decides.

    Await the result with ``streams.acks.acknowledged``. Raises as ``send`` does when the
    producer is closed or has failed; then nothing may be taken as written.
    """
    await wait_on_metadata(producer, topic)
    metadata = producer_metadata(producer)
    # The same arguments aiokafka's own ``_partition`` passes to the partitioner.
    all_partitions = list(metadata.partitions_for_topic(topic))
    available = list(metadata.available_partitions_for_topic(topic))
    partitioner = producer_partitioner(producer)
    given = iter(partitions) if partitions is not None else None
    builders: dict[int, Any] = {}
    futures: list[asyncio.Future[Any]] = []
    try:
        for key, value, timestamp in records:
            if given is None:
                partition = partitioner(key, all_partitions, available)
            else:
                partition = next(given)
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
            ms = None if timestamp is None else int(timestamp * 1000)  # None: the time of sending
            if builder.append(timestamp=ms, key=key, value=value) is None:  # full
                futures.append(await _submit(producer, builder, topic, partition))
                builder = builders[partition] = producer.create_batch()
                builder.append(timestamp=ms, key=key, value=value)  # a new batch takes any one
        for partition, builder in builders.items():
            futures.append(await _submit(producer, builder, topic, partition))
    except BaseException:
        discard(futures)  # the caller sends everything again
        raise
    return futures


async def _submit(
    producer: AIOKafkaProducer, builder: Any, topic: str, partition: int
) -> asyncio.Future[Any]:
    builder.close()  # nothing sent with ``send`` joins it: its order is the caller's
    future: asyncio.Future[Any] = await producer.send_batch(builder, topic, partition=partition)
    return future
