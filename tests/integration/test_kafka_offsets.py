"""true_end_offsets against the real local broker, whose ListOffsets is off by a batch."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ctstream.devstack.local_stack import StackInfo
from ctstream.streams.offsets import true_end_offsets
from ctstream.streams.topics import ensure_topics

pytestmark = pytest.mark.integration


async def test_true_end_offsets_count_every_record(stack: StackInfo) -> None:
    topic = "offsets-check"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=2, replication=1)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        for size in (10, 40):  # two batches per partition
            futures = [
                await producer.send(topic, b"v", partition=p) for p in (0, 1) for _ in range(size)
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    parts = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    ends = await true_end_offsets(stack.kafka_bootstrap, parts)
    assert ends == {parts[0]: 50, parts[1]: 50}

    # The quirk this works around; if the broker is fixed, this shows it.
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
    await consumer.start()
    try:
        reported = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    assert all(reported[tp] <= ends[tp] for tp in parts)


async def test_empty_partitions_end_at_zero(stack: StackInfo) -> None:
    topic = "offsets-empty"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1, replication=1)
    tp = TopicPartition(topic, 0)
    assert await true_end_offsets(stack.kafka_bootstrap, [tp]) == {tp: 0}


async def test_topics_are_created_with_a_retention(stack: StackInfo) -> None:
    # The broker accepts the topic with its retention.ms (Tansu answers no DescribeConfigs,
    # so the value itself is not read back here).
    topic = f"retention-{time.time_ns()}"
    created = await ensure_topics(
        stack.kafka_bootstrap, [topic], partitions=1, replication=1, retention={topic: 7 * 86400}
    )
    assert created == [topic]
    tp = TopicPartition(topic, 0)
    assert await true_end_offsets(stack.kafka_bootstrap, [tp]) == {tp: 0}


async def test_a_topic_being_written_to_still_gets_an_end(stack: StackInfo) -> None:
    """Regression: reading on to the end never finished while a producer kept writing
    (the poll-ticks topic of a running pipeline, raw topics under load)."""
    topic = "offsets-live"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1, replication=1)
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=5)
    await producer.start()
    stop = asyncio.Event()
    sent = 0

    async def keep_writing() -> None:
        nonlocal sent
        while not stop.is_set():
            await producer.send_and_wait(topic, b"v", partition=0)
            sent += 1

    writer = asyncio.create_task(keep_writing())
    try:
        deadline = time.monotonic() + 20
        while sent < 50:
            assert time.monotonic() < deadline, f"only {sent} messages written in 20 s"
            await asyncio.sleep(0.05)
        before = sent
        ends = await asyncio.wait_for(true_end_offsets(stack.kafka_bootstrap, [tp]), 20)
        assert before <= ends[tp] <= sent
    finally:
        stop.set()
        await writer
        await producer.stop()
