"""send_batched against the real local broker: partitions, order, timestamps, full batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerClosed
from aiokafka.partitioner import DefaultPartitioner

from ctstream.devstack.local_stack import StackInfo
from ctstream.models.change_event import Record
from ctstream.streams.acks import acknowledged
from ctstream.streams.partitioner import kafka_partitioner
from ctstream.streams.producer import partition_count, send_batched
from ctstream.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def _topic(stack: StackInfo, name: str) -> str:
    topic = f"{name}-{time.time_ns()}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=PARTITIONS, replication=1)
    return topic


@pytest.fixture
async def producer(stack: StackInfo) -> AsyncIterator[AIOKafkaProducer]:
    # As the worker's: ctstream's partitioner, big batches.
    p = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap,
        acks="all",
        partitioner=kafka_partitioner,
        max_batch_size=512 * 1024,
    )
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def _read(
    stack: StackInfo, topic: str, count: int
) -> list[tuple[int, bytes | None, bytes | None, int]]:
    """(partition, key, value, timestamp_ms) of ``count`` records, each partition in order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        got: list[tuple[int, bytes | None, bytes | None, int]] = []
        async with asyncio.timeout(30):
            while len(got) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for tp in sorted(batch, key=lambda t: t.partition):
                    got.extend((tp.partition, m.key, m.value, m.timestamp) for m in batch[tp])
        return got
    finally:
        await consumer.stop()


async def test_records_land_where_send_puts_them_in_order(
    stack: StackInfo, producer: AIOKafkaProducer
) -> None:
    topic = await _topic(stack, "batched")
    records: list[Record] = [
        (f"key-{i % 50}".encode(), f"value-{i}".encode(), 1_700_000_000.0 + i / 1000)
        for i in range(1000)
    ]
    records.append((b"key-7", None, 1_700_000_001.5))  # a tombstone keeps its place too
    futures = await send_batched(producer, topic, records)
    assert len(futures) == PARTITIONS  # one record batch per partition
    await acknowledged(futures)

    got = await _read(stack, topic, len(records))
    assert len(got) == len(records)
    aiokafka_default = DefaultPartitioner()
    parts = list(range(PARTITIONS))
    for partition, key, _, _ in got:
        assert partition == aiokafka_default(key, parts, parts)
    for partition in parts:
        sent = [
            (k, v, int(ts * 1000))
            for k, v, ts in records
            if ts is not None and aiokafka_default(k, parts, parts) == partition
        ]
        assert [(k, v, ts) for p, k, v, ts in got if p == partition] == sent


async def test_a_full_batch_is_sent_and_the_next_one_begun(
    stack: StackInfo,
) -> None:
    topic = await _topic(stack, "batched-full")
    small = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, partitioner=kafka_partitioner, max_batch_size=2048
    )
    await small.start()
    try:
        records: list[Record] = [
            (b"one-key", b"x" * 100 + str(i).encode(), None) for i in range(300)
        ]
        futures = await send_batched(small, topic, records)
        assert len(futures) > 10  # ~30 KB in 2 KB batches, all on one partition
        await acknowledged(futures)
    finally:
        await small.stop()
    got = await _read(stack, topic, len(records))
    assert [v for _, _, v, _ in got] == [v for _, v, _ in records]
    assert len({p for p, _, _, _ in got}) == 1
    now_ms = time.time() * 1000
    assert all(abs(ts - now_ms) < 60_000 for _, _, _, ts in got)  # None: the time of sending


async def test_a_closed_producer_raises_instead_of_dropping(stack: StackInfo) -> None:
    topic = await _topic(stack, "batched-closed")
    closed = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await closed.start()
    await closed.stop()
    with pytest.raises(ProducerClosed):
        await send_batched(closed, topic, [(b"k", b"v", None)])


async def test_records_go_to_the_partitions_given_in_order(
    stack: StackInfo, producer: AIOKafkaProducer
) -> None:
    topic = await _topic(stack, "given")
    assert await partition_count(producer, topic) == PARTITIONS
    records: list[Record] = [(b"same-key", f"v{i}".encode(), 1_700_000_000.0) for i in range(8)]
    given = [3, 1, 3, 0, 1, 3, 0, 0]  # not where the key hashes: the caller's choice wins
    await acknowledged(await send_batched(producer, topic, records, given))
    got = await _read(stack, topic, len(records))
    by_partition = {p: [v for q, _, v, _ in got if q == p] for p in range(PARTITIONS)}
    assert by_partition == {
        0: [b"v3", b"v6", b"v7"],
        1: [b"v1", b"v4"],
        2: [],
        3: [b"v0", b"v2", b"v5"],
    }
