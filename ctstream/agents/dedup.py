"""Dedup agent: drops a change seen before within the window, by message_unique_id.

The windowed ``seen-ids`` table is co-partitioned with the raw topics (an id contains the
primary key, and events are keyed by primary key, so every copy of an id arrives on the
same partition). A copy is a duplicate if its id is in the current window or in the
window one window-length earlier, so copies straddling a window boundary are caught too.

Events are processed in batches (``take_events``): faust table writes need the current
event to know their partition, so it is set for each event before its table access
(through faust's ``_current_event`` context variable — private, hence faust is pinned;
tests cover it). Only this task's context changes: ``Stream.current_event``, which the
stream's background reader uses to fill the take buffer, must not be touched, or the
buffer would record — and later acknowledge — the wrong event.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from faust.streams import _current_event

from ctstream.models import BadEvent, ChangeEvent
from ctstream.streams.error_sink import ErrorReporter
from ctstream.streams.topics import PipelineTopics

log = logging.getLogger("ctstream.dedup")


def set_current_event(event: Any) -> None:
    """Make ``event`` the current one for table access in this task only."""
    _current_event.set(None if event is None else weakref.ref(event))


class DedupStats:
    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.forwarded: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.bad: int = 0


def install_dedup(
    app: Any,
    topics: PipelineTopics,
    window: float,
    errors: ErrorReporter,
    stats: DedupStats,
    batch: int = 1000,
) -> None:
    raw_topics = app.topic(
        *(t.get_topic_name() for t in topics.raw.values()),
        key_serializer="raw",
        value_serializer="raw",
    )
    seen_ids = topics.seen_ids
    deduped_names = {t: topic.get_topic_name() for t, topic in topics.deduped.items()}

    @app.agent(raw_topics, name="ctstream.dedup")
    async def dedup(stream: Any) -> None:
        async for events in stream.take_events(batch, within=0.2):
            for event in events:
                set_current_event(event)
                await _handle(event)
            set_current_event(None)

    async def _handle(event: Any) -> None:
        message = event.message
        table = topics.table_of_raw_topic.get(message.topic, message.topic)
        stats.seen[table] = stats.seen.get(table, 0) + 1
        for attempt in range(1, 6):
            try:
                change = ChangeEvent.from_bytes(event.value)
                if change.table_name != table:
                    raise BadEvent(
                        f"table_name {change.table_name!r} does not belong on topic {message.topic}"
                    )
                key = change.message_unique_id
                copies = seen_ids[key]
                if copies.current() or copies.delta(window):
                    stats.dropped[table] = stats.dropped.get(table, 0) + 1
                    return
                seen_ids[key] = 1
                # The raw producer, not topic.send: cheaper per event. Offsets are committed
                # only after faust flushed this producer, so the copy is never lost.
                await app.producer.send(
                    deduped_names[table],
                    message.key,
                    event.value,
                    None,
                    message.timestamp,
                    None,
                )
                stats.forwarded[table] = stats.forwarded.get(table, 0) + 1
                return
            except BadEvent as exc:
                stats.bad += 1
                await errors.report(
                    reason=f"dedup: {exc}",
                    payload=event.value,
                    source_table=table,
                    message=message,
                )
                return
            except Exception as exc:
                # Acknowledging now would lose the event: retry a few times, then park it
                # in the error topic (with the reason) rather than drop it.
                if attempt == 5:
                    await errors.report(
                        reason=f"dedup failed 5 times: {type(exc).__name__}: {exc}",
                        payload=event.value,
                        source_table=table,
                        message=message,
                    )
                    return
                log.warning("dedup of %s failed (attempt %d): %r", table, attempt, exc)
                await asyncio.sleep(0.2 * 2**attempt)
