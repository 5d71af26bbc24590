"""``ctstream snapshot``: ask the pipeline to re-read tables, through the poll-ticks topic.

The request is a poll tick with a ``snapshot`` reason, keyed by table name like the
leader's ticks, so it lands in the same partition and reaches the worker that owns the
table's state. That worker saves the request in the state first, so it survives a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ctstream.commands.snapshot_progress import follow_snapshots
from ctstream.errors import ConfigError, KafkaUnavailable
from ctstream.models import PollTick
from ctstream.models.source_state import SnapshotControl
from ctstream.settings import Settings, load_settings
from ctstream.source.reader import selected_tables
from ctstream.streams.security import client_options, tls_failure
from ctstream.streams.topics import TopicNames


def run(args: argparse.Namespace) -> int:
    """``ctstream snapshot --config FILE (--table T… | --all) [--reason R | --pause |
    --resume | --cancel]``: send the requests and say so; 0. A table outside
    ``source.tables`` is a :class:`ConfigError`."""
    settings = load_settings(args.config)
    tables = asyncio.run(selected_tables(settings.source)) if args.all else args.table
    if not tables:
        raise ConfigError("name the tables to snapshot with --table T (repeatable) or --all")
    unknown = [t for t in tables if not settings.source.selection.selects(t)]
    if unknown:
        raise ConfigError(
            f"--table {unknown[0]!r} is not in source.tables of {args.config} "
            f"({', '.join(settings.source.tables)})"
        )
    control: SnapshotControl | None = getattr(args, "control", None)
    wait = control is None and getattr(args, "wait", False)
    requests = asyncio.run(request_snapshots(settings, tables, args.reason, control=control))
    for table in tables:
        if control is None:
            print(f"snapshot of {table!r} requested ({args.reason})")
        else:
            print(f"{control} of the snapshot of {table!r} requested")
    if wait:
        try:
            asyncio.run(follow_snapshots(settings, requests))
        except KeyboardInterrupt:
            print("\nstopped waiting; the snapshots go on")
        return 0
    print(
        "the worker that polls each table carries it out; follow it with --wait, "
        "`ctstream status`, the worker log or /api/status/"
    )
    return 0


async def request_snapshots(
    settings: Settings,
    tables: Sequence[str],
    reason: str,
    timeout: float = 30.0,  # noqa: ASYNC109
    *,
    control: SnapshotControl | None = None,
) -> dict[str, str]:
    """Send one snapshot request (or ``control`` of the snapshot under way) per table to
    the poll-ticks topic, acknowledged by Kafka; returns each table's request id.

    Raises :class:`KafkaUnavailable` when Kafka cannot be reached in ``timeout`` s or the
    topic does not exist yet (no worker of this config has run).
    """
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
        requests: dict[str, str] = {}
        for table in tables:
            if control is None:
                tick = PollTick(table, now, snapshot=reason)
            else:
                tick = PollTick(table, now, control=control)
            requests[table] = tick.request_id
            await asyncio.wait_for(
                producer.send_and_wait(topic, tick.to_bytes(), key=table.encode("utf-8")),
                timeout,
            )
        return requests
    except (TimeoutError, KafkaError, OSError) as exc:
        raise KafkaUnavailable(
            await tls_failure(bootstrap, options)
            or f"cannot send the snapshot request to Kafka at {bootstrap} "
            f"({type(exc).__name__}); check kafka.bootstrap_servers and the broker"
        ) from None
    finally:
        await producer.stop()
