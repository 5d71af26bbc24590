"""Poison messages for every topic the pipeline reads, and where each one landed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from ctstream.models import ChangeEvent, TableSpec, encode_key, unique_id
from ctstream.streams.topics import TopicNames

# Over the error records' payload limit (512 KB): the record points back to Kafka instead.
HUGE = 600 * 1024


@dataclass(frozen=True)
class Poison:
    kind: str  # not-json | wrong-schema | huge | wrong-type
    topic: str
    partition: int
    offset: int
    # A well-formed event whose row BigQuery cannot take passes dedup and is refused by
    # the sink, from the deduped topic: it is found by its unique id instead.
    unique_id: str | None = None


def _bad_type_event(table: str, n: int) -> tuple[bytes, bytes, str]:
    """An ``accounts`` insert whose balance is text (far outside the workload's keys)."""
    key: list[bool | int | float | str | None] = [10**9 + n]
    uid = unique_id(table, key, 1)
    change = ChangeEvent(
        message_unique_id=uid,
        table_name=table,
        changetrack_interval=0.0,
        changetrack_start_time="2026-11-22T00:00:00.000000Z",
        changetrack_type="I",
        changetrack_ver=1,
        key=key,
        row={"id": key[0], "owner": "poison", "balance": "not a number", "rev": 0},
    )
    return encode_key(key), change.to_bytes(), uid


async def inject(bootstrap: str, prefix: str, tables: Sequence[str], round_no: int) -> list[Poison]:
    """Not-JSON, wrong-schema and huge messages on every raw and deduped topic and on the
    poll ticks, plus a well-formed event of the wrong type; returns where each landed."""
    names = TopicNames(prefix)
    planned: list[tuple[str, str, bytes, bytes, str | None]] = []
    for table in tables:
        spec = TableSpec(table, None, table, ())
        for topic in (names.raw(spec), names.deduped(spec)):
            planned += [
                ("not-json", topic, b"poison-a", b"\xff\x00 not json", None),
                (
                    "wrong-schema",
                    topic,
                    b"poison-b",
                    b'{"table_name": "%s"}' % table.encode(),
                    None,
                ),
                ("huge", topic, b"poison-c", b'{"pad": "' + b"x" * HUGE + b'"}', None),
            ]
        if table == "accounts":
            key, value, uid = _bad_type_event(table, round_no)
            planned.append(("wrong-type", names.raw(spec), key, value, uid))
    planned += [
        ("not-json", names.poll_ticks, b"accounts", b"\x00tick?", None),
        ("wrong-schema", names.poll_ticks, b"accounts", b'{"table": 5}', None),
        ("huge", names.poll_ticks, b"tags", b'{"pad": "' + b"y" * HUGE + b'"}', None),
    ]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    landed: list[Poison] = []
    try:
        for kind, topic, key, value, event_id in planned:
            meta = await producer.send_and_wait(
                topic, value=value, key=key, timestamp_ms=int(time.time() * 1000)
            )
            landed.append(Poison(kind, topic, meta.partition, meta.offset, event_id))
    finally:
        await producer.stop()
    return landed
