"""What faust commits: never an offset past a message that was not processed.

faust commits a partition up to the end of the run of acknowledged offsets that starts at
its committed offset. These patches (1, 2, 3, 5 and 8 in docs/faust-patches.md) keep
every offset that was not processed — a *hole* — out of that run, so the commit stops at
the hole; a rebalance's seek, or streams/commit_holes.py, reads the hole again:

- 1 ``Consumer._new_offset``: no run while the offset at the committed one is missing;
- 2 ``Consumer._add_gap``: a jump in the offsets read is never acknowledged;
- 3 ``Consumer.perform_seek``: a partition with nothing committed is sought to its
  beginning, which then counts as its committed offset;
- 5 ``Consumer._filter_committable_offsets``: capped below any batch an agent has not
  finished (the app's ``in_flight``, streams/in_flight.py);
- 8 ``Consumer.ack``: a message no stream took up stays unacknowledged;

and one for speed:

- 16 ``AIOKafkaConsumerThread._commit``: the assignment is read once per commit, not
  once per partition committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata
from faust.transport.drivers.aiokafka import ensure_aiokafka_TP
from faust.utils.functional import consecutive_numbers

log = logging.getLogger("ctstream.faust")


def new_offset(self: Any, tp: Any) -> int | None:
    """The offset to commit for ``tp``: one past the acknowledged run that starts at the
    committed offset, or None when the next message to read is not acknowledged yet."""
    acked: list[int] = self._acked[tp]
    if not acked:
        return None
    acked.sort()
    committed: int | None = self._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None  # the message at `committed` has not been processed: wait for it
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


async def add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Never acknowledge offsets that were not processed."""
    log.debug("not treating offsets %d..%d of %s as a gap", offset_from, offset_to, tp)


def wrap_ack(faust_ack: Callable[..., Any]) -> Callable[..., bool]:
    """``Consumer.ack`` that leaves a message no stream took up unacknowledged (8)."""

    def ack(self: Any, message: Any) -> bool:
        """faust's ``Consumer.ack``, except for a message no stream took up.

        A stream marks a message ``tracked`` when it starts processing it; the only message
        of an acknowledged topic that reaches here untracked is one a stream skipped. (A
        decode error would too, but ctstream's topics are raw bytes: faust decodes nothing.)
        """
        if not message.tracked and self.app.topics.acks_enabled_for(message.topic):
            message.acked = True  # nothing waits for it; its offset stays a hole
            return False
        result: bool = faust_ack(self, message)
        return result

    return ack


def wrap_filter_committable_offsets(
    faust_filter: Callable[..., Any],
) -> Callable[..., dict[Any, int]]:
    """``Consumer._filter_committable_offsets`` capped by the app's ``in_flight`` (5)."""

    def filter_committable_offsets(self: Any, tps: Any) -> dict[Any, int]:
        """faust's choice of offsets to commit, capped below any unfinished batch.

        faust drops the acknowledged offsets it is about to commit from its bookkeeping;
        those at or above a cap stay there, to be committed once the cap is lifted (a batch
        running in a task is acknowledged while it runs, see agents/batches.py). An app
        without ``in_flight`` (not a ``PipelineApp``) commits as faust does.
        """
        tps = list(tps)  # faust passes a generator
        before = {tp: list(self._acked[tp]) for tp in tps}
        offsets: dict[Any, int] = faust_filter(self, tps)
        in_flight = getattr(self.app, "in_flight", None)  # streams/in_flight.py
        if in_flight is None:
            return offsets
        for tp in list(offsets):
            ceiling = in_flight.commit_ceiling(tp.topic, tp.partition)
            if ceiling is not None and offsets[tp] > ceiling:
                committed = self._committed_offset[tp]
                keep_from = ceiling
                if committed is not None and ceiling <= committed:
                    del offsets[tp]
                    keep_from = committed
                else:
                    offsets[tp] = ceiling
                _restore_acked(self, tp, [o for o in before.get(tp, ()) if o >= keep_from])
        return offsets

    return filter_committable_offsets


def _restore_acked(consumer: Any, tp: Any, offsets: list[int]) -> None:
    index = consumer._acked_index[tp]
    acked = consumer._acked[tp]
    for offset in offsets:
        if offset not in index:
            index.add(offset)
            acked.append(offset)
    acked.sort()


def wrap_perform_seek(faust_perform_seek: Callable[..., Any]) -> Callable[..., Any]:
    """``Consumer.perform_seek`` that gives every partition a committed offset (3)."""

    async def perform_seek(self: Any) -> None:
        """Seek to the committed offsets; where none is committed yet, seek to the
        beginning (``auto_offset_reset = earliest``) and take that as the committed offset,
        so that a hole right there is not committed past either.

        A partition assigned while running (a table found by discovery) may have had
        records fetched and skipped before its stream was ready; this seek reads them
        again. If the beginnings cannot be read within 10 s the partition keeps faust's
        behaviour (a warning is logged).
        """
        await faust_perform_seek(self)
        fresh = [
            tp
            for tp in self.assignment()
            if self._committed_offset[tp] is None and self.app.topics.acks_enabled_for(tp.topic)
        ]
        if not fresh:
            return
        try:
            beginnings = await asyncio.wait_for(self.earliest_offsets(*fresh), 10.0)
        except (TimeoutError, Exception) as exc:  # keep faust's behaviour for these
            log.warning("no start offsets for %s (%r); commits as faust does", fresh, exc)
            return
        for tp in fresh:
            start = beginnings.get(tp)
            if start is not None and start >= 0:
                await self.seek(tp, start)
                self._committed_offset[tp] = start

    return perform_seek


async def commit(self: Any, offsets: Any) -> bool:
    """faust's ``AIOKafkaConsumerThread._commit`` (16), reading the assignment once.

    Upstream reads ``self.assignment()`` — a new set of every assigned partition — for
    each partition it commits: with a few hundred tables (thousands of partitions) that
    took a third of a worker's CPU (benchmarks.snapshot tables, 500 tables).
    """
    consumer = self._ensure_consumer()
    now = time.monotonic()
    assignment = self.assignment()
    commitable_offsets = {tp: offset for tp, offset in offsets.items() if tp in assignment}
    try:
        aiokafka_offsets = {
            ensure_aiokafka_TP(tp): OffsetAndMetadata(offset, "")
            for tp, offset in commitable_offsets.items()
        }
        self.tp_last_committed_at.update({tp: now for tp in commitable_offsets})
        await consumer.commit(aiokafka_offsets)
    except CommitFailedError as exc:
        if "already rebalanced" in str(exc):
            return False
        self.log.exception("Committing raised exception: %r", exc)
        await self.crash(exc)
        return False
    except IllegalStateError as exc:
        self.log.exception("Got exception: %r\nCurrent assignment: %r", exc, self.assignment())
        await self.crash(exc)
        return False
    except Exception as exc:
        self.log.exception("Got exception: %r\nCurrent assignment: %r", exc, self.assignment())
        await self.crash(exc)
        return False
    return True
