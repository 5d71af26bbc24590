"""Dedup agent: drops a change seen before within the window, by message_unique_id.

The dedup state (``streams/seen_ids.py``) is co-partitioned with the raw topics (an id
contains the primary key, and events are keyed by primary key, so every copy of an id
arrives on the same partition). A copy is a duplicate if its id is in its event's window
or the one before, so copies straddling a window boundary are caught too.

Per batch: look every id up, forward the unique events and wait until Kafka acknowledged
them, and only then record their ids — so a crash can cause a duplicate but never a
loss. The ids are recorded as one table entry per partition and window of the batch; a
faust table write needs the current event to know its partition, so it is set to an
event of that partition first (through faust's ``_current_event`` context variable —
private, hence faust is pinned; tests cover it). Only this task's context changes.
Batches come straight from the agent's channel (streams/channel_batches.py).

An event as the poller writes it has only its id read (``peek_unique_id``); the sink
parses and checks every event in full. So an event whose id and table are right but
whose rest is not is refused by the sink, from the deduped topic, with its reason. Any
other payload is parsed here and refused with the reason if it is not a change event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ctstream.agents.batches import run_batch
from ctstream.agents.stats import DedupStats
from ctstream.bigquery.error_sink import ErrorReporter
from ctstream.devstack.crash_points import CrashPoints
from ctstream.errors import BadEvent, CtstreamError, KafkaSendFailed
from ctstream.models import ChangeEvent, TableSpec
from ctstream.models.change_event import Record, peek_unique_id
from ctstream.retry import retry_forever
from ctstream.streams.acks import acknowledged, discard
from ctstream.streams.app import PipelineApp
from ctstream.streams.channel_batches import channel_batches
from ctstream.streams.faust_compat.internals import set_current_event
from ctstream.streams.producer import aiokafka_producer, partition_count, send_batched
from ctstream.streams.seen_ids import digest_utf8
from ctstream.streams.topics import PipelineTopics

log = logging.getLogger("ctstream.dedup")


def install_dedup(
    app: PipelineApp,
    topics: PipelineTopics,
    errors: ErrorReporter,
    stats: DedupStats,
    specs: Mapping[str, TableSpec],
    crash: CrashPoints,
    batch: int = 1000,
) -> None:
    """The ``ctstream.dedup`` agent: raw topics → deduped topics, ``batch`` events at a time."""
    seen_ids = topics.seen_ids
    if seen_ids is None:
        raise CtstreamError("the dedup role needs the seen-ids table (declare with it)")
    deduped = topics.deduped  # updated in place when a table is added while running

    @app.agent(topics.raw_source, name="ctstream.dedup")
    async def dedup(stream: Any) -> None:
        async for events in channel_batches(app, stream, batch, within=0.2):
            await run_batch(app, events, dedup_batch, "dedup batch")

    async def dedup_batch(events: Sequence[Any]) -> None:
        # (event, table, id digest, the restricted copy's payload if the table has one)
        fresh: list[tuple[Any, str, bytes, bytes | None]] = []
        in_batch: set[bytes] = set()
        for event in events:
            message = event.message
            table = topics.table_of_raw_topic.get(message.topic, message.topic)
            stats.seen[table] = stats.seen.get(table, 0) + 1
            # An event as the poller writes it needs only its id read; anything else, and
            # an event of a table with a restricted copy (made from the parsed event), is
            # parsed and checked in full.
            spec = specs.get(table)
            restricted = spec if spec is not None and spec.restricted else None
            uid = None if restricted else peek_unique_id(event.value, table)
            change = None
            if uid is None:
                try:
                    change = _change_of(event, table)
                    uid = change.message_unique_id.encode("utf-8")
                except BadEvent as exc:
                    stats.bad += 1
                    await errors.report(
                        reason=f"dedup: {exc}",
                        payload=event.value,
                        source_table=table,
                        message=message,
                    )
                    continue
            id_digest = digest_utf8(uid)
            if id_digest in in_batch or seen_ids.seen(
                message.partition, message.timestamp, id_digest
            ):
                stats.dropped[table] = stats.dropped.get(table, 0) + 1
                continue
            in_batch.add(id_digest)
            copy = restricted_copy(change, restricted) if restricted and change else None
            fresh.append((event, table, id_digest, copy))
        if not fresh:
            return
        # The copies must be durable in Kafka *before* their ids are remembered: were the
        # ids' changelog written first and the worker died before the copies were, the
        # re-read events would be dropped as duplicates of copies that never arrived.
        await retry_forever(
            lambda: _send_all(fresh),
            "forwarding deduplicated events",
            0.2,
            10.0,
            should_abort=lambda: bool(app.should_stop),
        )
        crash.reach("dedup.forwarded")
        # One table entry (one changelog message) per partition and window of the batch.
        groups: dict[tuple[int, int], tuple[Any, list[bytes]]] = {}
        for event, table, id_digest, _ in fresh:
            message = event.message
            group = groups.setdefault(
                (message.partition, seen_ids.window_of(message.timestamp)), (event, [])
            )
            group[1].append(id_digest)
            stats.forwarded[table] = stats.forwarded.get(table, 0) + 1
        for (partition, _), (event, digests) in groups.items():
            set_current_event(event)  # the changelog message goes to this partition
            seen_ids.remember(partition, event.message.timestamp, digests)
        set_current_event(None)

    async def _send_all(fresh: list[tuple[Any, str, bytes, bytes | None]]) -> None:
        # topic → (records, the partition each was read from, the topic they were read from)
        by_topic: dict[str, tuple[list[Record], list[int], str]] = {}
        for e, table, _, copy in fresh:
            message = e.message
            key, ts, partition = message.key, message.timestamp, message.partition
            topic = deduped[table].topics[0]
            target = by_topic.get(topic)
            if target is None:
                target = by_topic[topic] = ([], [], message.topic)
            target[0].append((key, e.value, ts))
            target[1].append(partition)
            if copy is not None:
                restricted = topics.restricted[table].topics[0]
                target = by_topic.setdefault(restricted, ([], [], message.topic))
                target[0].append((key, copy, ts))
                target[1].append(partition)
        pending: list[Any] = []
        try:
            producer = aiokafka_producer(app)
            for topic, (records, partitions, source) in by_topic.items():
                # A copy is forwarded to the partition it came from when that is where the
                # key hashes (as many partitions both sides): no second hash of the key.
                same = await partition_count(producer, topic) == await partition_count(
                    producer, source
                )
                pending.extend(
                    await send_batched(producer, topic, records, partitions if same else None)
                )
            await acknowledged(pending)
        except Exception as exc:
            discard(pending)  # any producer failure: resend all (duplicates, not loss)
            raise KafkaSendFailed(f"{type(exc).__name__}: {exc}") from exc


def restricted_copy(change: ChangeEvent, spec: TableSpec) -> bytes:
    """The event with the restricted copy's columns NULL (a delete carries only its key)."""
    targets = spec.targets
    hidden = {*spec.restricted, *(targets[c] for c in spec.restricted if c in targets)}
    row = {k: (None if k in hidden else v) for k, v in change.row.items()}
    return replace(change, row=row).to_bytes()


def _change_of(event: Any, table: str) -> ChangeEvent:
    change = ChangeEvent.from_bytes(event.value)
    if change.table_name != table:
        raise BadEvent(
            f"table_name {change.table_name!r} does not belong on topic {event.message.topic}"
        )
    return change
