"""A stand-alone redundant collector: the same poll code, its own version, no Faust.

The seed system ran two collectors for availability, each sending every change; the
demo runs this one beside the workers' pollers so the dedup stage has real duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer

from ctstream.errors import CtstreamError
from ctstream.models.change_event import Record
from ctstream.settings import Settings
from ctstream.source.change_capture import poll_table
from ctstream.source.reader import SourceReader, selected_tables
from ctstream.streams.acks import Sent
from ctstream.streams.producer import send_batched
from ctstream.streams.security import client_options
from ctstream.streams.topics import TopicNames

log = logging.getLogger("ctstream.collector")


async def run_collector(settings: Settings, stop: asyncio.Event) -> int:
    """Poll every table until ``stop`` is set, then once more; returns events sent."""
    reader = SourceReader(settings.source)
    names = TopicNames(settings.kafka.topic_prefix)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        acks="all",
        linger_ms=5,
        **client_options(settings.kafka),
    )
    await producer.start()
    sent = 0
    try:
        specs = await reader.describe_all(await selected_tables(settings.source, reader))
        versions = {name: await reader.min_valid_version(s) for name, s in specs.items()}
        last_start: dict[str, float] = {}
        final = False
        while True:
            for name, spec in specs.items():
                topic = names.raw(spec)

                async def send(records: list[Record], topic: str = topic) -> Sent:
                    return Sent(await send_batched(producer, topic, records))

                try:
                    result = await poll_table(
                        reader, spec, versions[name], send, last_start.get(name)
                    )
                except CtstreamError as exc:
                    log.warning("collector: %s: %s", name, exc)
                    continue
                versions[name] = result.to_version
                last_start[name] = result.started_at
                sent += result.events
            if final:
                return sent
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.source.poll_interval)
            final = stop.is_set()
    finally:
        await producer.stop()
        await reader.close()
