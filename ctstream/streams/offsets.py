"""End offsets that are right on the local broker too.

Tansu (the embedded broker) answers ListOffsets(latest) with the *base offset of the last
record batch* + 1, not the offset after its last record: after one batch of 100 messages
it reports 1. Where an exact end matters (lag, message counts), the last batch is read to
find the real end. On a broker that answers correctly this reads at most one batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def true_end_offsets(
    bootstrap: str,
    parts: Sequence[TopicPartition],
    idle_ms: int = 300,
    *,
    client_options: Mapping[str, Any] | None = None,
) -> dict[TopicPartition, int]:
    """``client_options``: TLS/SASL keyword arguments (``kafka_security.client_options``)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **(client_options or {})
    )
    try:
        await consumer.start()  # inside: a consumer whose start failed is stopped too
        reported = await consumer.end_offsets(list(parts))
        ends = dict(reported)
        todo = [tp for tp in parts if reported[tp] > 0]
        if not todo:
            return ends
        consumer.assign(todo)
        for tp in todo:
            consumer.seek(tp, reported[tp] - 1)
        # A fetch returns whole record batches, so the first records read at the reported
        # end minus one hold the rest of the last batch; a partition is done once a read
        # returned fewer records than asked for (nothing of it left buffered). Reading on
        # would never end on a topic that is being written to.
        limit = 10_000
        open_parts = set(todo)
        idle_rounds = 0
        while open_parts and idle_rounds < 2:
            batch = await consumer.getmany(*open_parts, timeout_ms=idle_ms, max_records=limit)
            if not any(batch.values()):
                idle_rounds += 1
                continue
            idle_rounds = 0
            drained = sum(len(r) for r in batch.values()) < limit
            for tp, records in batch.items():
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
                    if drained:
                        open_parts.discard(tp)
                        consumer.pause(tp)
        return ends
    finally:
        await consumer.stop()


async def group_lag(
    bootstrap: str,
    group: str,
    parts: Sequence[TopicPartition],
    *,
    client_options: Mapping[str, Any] | None = None,
) -> tuple[int, dict[TopicPartition, int]]:
    """Messages not yet committed by ``group`` in ``parts``, and the exact end offsets.

    ``committed()`` reads the group's offsets without joining the group.
    """
    ends = await true_end_offsets(bootstrap, parts, client_options=client_options)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        **(client_options or {}),
    )
    try:
        await consumer.start()
        lag = 0
        for tp in parts:
            lag += ends[tp] - (await consumer.committed(tp) or 0)
        return lag, ends
    finally:
        await consumer.stop()
