"""Poll agents: Change Tracking → raw topics, one poll per table per tick.

The leader worker sends a tick per table every poll interval to the poll-ticks topic,
keyed by table name. The worker that owns that partition runs the poll, so each table is
polled by one worker at a time and another takes over when it dies (Kafka rebalance).
The saved version lives in the changelog-backed ``ct-versions`` table, written inside
the tick's stream iteration, and only after Kafka acknowledged every event of the poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import orjson

from ctstream.errors import CtstreamError, VersionTooOld
from ctstream.models import TableSpec
from ctstream.settings import Settings
from ctstream.streams.change_capture import poll_table
from ctstream.streams.source_reader import SourceReader
from ctstream.streams.topics import PipelineTopics

log = logging.getLogger("ctstream.poll")


class PollStats:
    """What the pollers did, per table (read by status views and tests)."""

    def __init__(self) -> None:
        self.polls: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.last_error: dict[str, str] = {}
        self.last_start: dict[str, float] = {}


def install_pollers(
    app: Any,
    settings: Settings,
    specs: Mapping[str, TableSpec],
    topics: PipelineTopics,
    stats: PollStats,
) -> None:
    interval = settings.source.poll_interval
    reader = SourceReader(settings.source)
    app.ctstream_reader = reader  # closed on shutdown, see install()

    @app.timer(interval, on_leader=True, name="ctstream.poll_ticks")
    async def send_poll_ticks() -> None:
        now = time.time()
        for name in specs:
            await topics.poll_ticks.send(
                key=name.encode("utf-8"), value=orjson.dumps({"table": name, "at": now})
            )

    @app.agent(topics.poll_ticks, name="ctstream.poll")
    async def poll(stream: Any) -> None:
        async for event in stream.events():
            try:
                tick = orjson.loads(event.value)
                name = tick["table"]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("ignoring a malformed poll tick at offset %s", event.message.offset)
                continue
            spec = specs.get(name)
            if spec is None:
                continue  # a table removed from the config
            # A poll that took longer than the interval leaves ticks queued; a tick only
            # polls a table that is due, so queued ticks drain fast and no table starves.
            if time.time() - stats.last_start.get(name, 0.0) < interval * 0.8:
                continue
            await _poll_once(app, spec, topics, reader, stats)


async def _poll_once(
    app: Any, spec: TableSpec, topics: PipelineTopics, reader: SourceReader, stats: PollStats
) -> None:
    name = spec.name
    raw_topic = topics.names.raw(spec)
    producer = app.producer

    async def send(key: bytes, value: bytes, timestamp: float) -> Awaitable[object]:
        # Straight to the producer (same partitioner as topic.send, less overhead); the
        # returned future completes when Kafka acknowledged the event.
        fut: Awaitable[object] = await producer.send(raw_topic, key, value, None, timestamp, None)
        return fut

    try:
        last = topics.versions.get(name)
        if last is None:
            last = await reader.min_valid_version(spec)
            log.info("table %s: no saved version, starting at version %d", name, last)
        result = await poll_table(reader, spec, last, send, stats.last_start.get(name))
    except VersionTooOld as exc:
        stats.last_error[name] = str(exc)
        log.error("table %s: %s", name, exc)
        return
    except CtstreamError as exc:
        stats.last_error[name] = str(exc)
        log.warning("table %s: poll failed, will retry on the next tick: %s", name, exc)
        return
    except Exception as exc:
        # Nothing was saved, so the next tick re-reads the same changes: no loss.
        stats.last_error[name] = f"{type(exc).__name__}: {exc}"
        log.exception("table %s: poll failed, will retry on the next tick", name)
        return
    stats.last_start[name] = result.started_at
    if result.to_version != last:
        topics.versions[name] = result.to_version
    stats.polls[name] = stats.polls.get(name, 0) + 1
    stats.events[name] = stats.events.get(name, 0) + result.events
    stats.versions[name] = result.to_version
    stats.last_error.pop(name, None)
    if result.events:
        log.info(
            "table %s: %d changes, version %d → %d in %.3fs",
            name,
            result.events,
            result.from_version,
            result.to_version,
            result.seconds,
        )
