"""Re-reading a partition whose commit is stuck behind a message never processed.

faust commits a partition up to the first offset not acknowledged (streams/faust_compat/
commits.py makes sure it never passes one). A message that was fetched but never reached a
stream is such a hole: later messages are processed and acknowledged, the commit stays at
the hole, and nothing reads the hole again until the next rebalance seeks to the committed
offset. faust drops fetched messages in a few places: at the end of table recovery (closed
by faust patch 9, docs/faust-patches.md), or when a stream skips what it fetched as a
rebalance starts (patch 8 leaves those to the rebalance's seek). Each leaves the data in
Kafka, but a worker that never rebalanced again would sit on a hole nobody found yet. This
watch seeks such a partition back to its committed offset once the hole has outlived
``after`` seconds: what follows the hole is read again (duplicates, which dedup and
BigQuery's insertId drop), and the hole is processed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from ctstream.streams.faust_compat.internals import acked_offsets, committed_offsets

log = logging.getLogger("ctstream.commit_holes")

# Long enough that a message fetched an instant before its neighbours finishes first; a
# hole never closes by itself, so waiting longer only delays the repair.
HOLE_AFTER_SECONDS = 20.0
CHECK_EVERY_SECONDS = 5.0
# In every re-read's warning; the fault suite counts re-reads by it.
REREAD_NOTICE = "a message fetched but never processed; reading again from"


class HoleWatch:
    """Partitions whose commit is stuck behind the same hole, and since when."""

    def __init__(self, after: float = HOLE_AFTER_SECONDS) -> None:
        self.after = after
        self.since: dict[Any, tuple[int, float]] = {}  # tp → (committed offset, first seen)

    def due(self, consumer: Any, now: float) -> dict[Any, int]:
        """tp → offset to read again from, for holes older than ``after`` seconds."""
        due: dict[Any, int] = {}
        stuck: dict[Any, tuple[int, float]] = {}
        acks_enabled_for = consumer.app.topics.acks_enabled_for
        acked_of, committed_of = acked_offsets(consumer), committed_offsets(consumer)
        for tp in consumer.assignment():
            acked = acked_of.get(tp)
            committed = committed_of.get(tp)
            if not acked or committed is None or min(acked) <= committed:
                continue  # nothing done past the committed offset, or no hole at it
            if not acks_enabled_for(tp.topic):
                continue
            seen = self.since.get(tp)
            if seen is None or seen[0] != committed:
                stuck[tp] = (committed, now)  # a new hole (or the commit moved on)
            elif now - seen[1] >= self.after:
                due[tp] = committed
                stuck[tp] = (committed, now)  # give the re-read as long again
            else:
                stuck[tp] = seen
        self.since = stuck
        return due


def install_hole_repair(app: faust.App, after: float = HOLE_AFTER_SECONDS) -> HoleWatch:
    """A timer on ``app`` that seeks partitions stuck behind a hole back to the hole."""
    watch = HoleWatch(after)

    async def repair_holes() -> None:
        if app.should_stop or getattr(app, "rebalancing", False):
            watch.since.clear()  # a rebalance ends with a seek of its own
            return
        try:
            await _repair(app.consumer, watch)
        except Exception as exc:  # a safety net must not bring the worker down
            log.warning("checking for commit holes failed: %r", exc)

    app.timer(CHECK_EVERY_SECONDS, name="ctstream.commit_holes")(repair_holes)
    return watch


async def _repair(consumer: Any, watch: HoleWatch) -> None:
    for tp, offset in watch.due(consumer, time.monotonic()).items():
        log.warning(
            "%s/%d: nothing committed past offset %d for %.0fs although later messages "
            "are done: %s %d",
            tp.topic,
            tp.partition,
            offset,
            watch.after,
            REREAD_NOTICE,
            offset,
        )
        await consumer.seek(tp, offset)
