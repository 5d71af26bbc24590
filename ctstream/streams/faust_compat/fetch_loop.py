"""faust's fetch loop with its ``getmany`` inline, partition by partition (patch 14).

A speed change, not a fix (docs/faust-patches.md). faust's ``Consumer._drain_messages``
iterates ``getmany``, an async generator that hands out one message at a time:
round-robin across topics through two more generators (the scheduler), a flow and
generation check, then ``highwater`` of the message's partition (through the consumer
service's delegate into aiokafka) for the monitor, then the message itself. Each message
so crosses three generator layers and asks aiokafka for its partition's highwater, and
every row is consumed twice (raw, deduped).

Here one fetch's records are delivered partition by partition, in a plain loop:

- per message, as faust: the consumer's flow and the consumer generation are checked
  (a rebalance ends the round; what was not delivered is read again from the committed
  offsets, as faust's ``getmany`` breaks off), then the read offset, gap and
  ``commit_every`` bookkeeping of faust's ``_drain_messages``, then the delivery — at once
  through the partition's :class:`~ctstream.streams.faust_compat.raw_delivery.RawDelivery` when
  nothing would wait, else through faust's ``wait_first(callback(message), …)``;
- per partition, and again after anything that awaited: the partition must still be
  assigned (aiokafka's ``highwater`` asserts it), and its highwater goes to the monitor.
  A partition unassigned under the loop (a subscription change makes aiokafka forget the
  assignment before the rebalance revokes anything: patch 11) ends the round quietly: the
  rest is never delivered nor acknowledged, and the partition's next owner reads it from
  the committed offset.

A message therefore meets faust's own checks in faust's order; only the partition's
assignment is looked at once per stretch without an await instead of once per message.
The loop yields to the event loop every 100 messages, as faust's does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING

log = logging.getLogger("ctstream.faust")

NOT_ASSIGNED = "Partition is not assigned"  # aiokafka's assertion in highwater()
YIELD_EVERY = 100


async def drain_messages(self: Any, fetcher: Any) -> None:
    """faust's ``Consumer._drain_messages`` and ``getmany`` in one loop (module docstring)."""
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            # As faust: sometimes the fetch returns at once, round after round.
            await self.sleep(0)
            if not self.should_stop:
                await _deliver_one_fetch(self)
            unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


async def _deliver_one_fetch(self: Any) -> None:
    """One round of faust's ``getmany`` and its delivery."""
    records, active_partitions = await self._wait_next_records(1.0)
    if records is None or self.should_stop:
        return
    if not self.flow_active:
        self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await self.perform_seek()
        except Exception as ex:
            self.log.warning(f"exception performing seek when flow not active {ex}")
        return
    app = self.app
    generation_id = app.consumer_generation_id
    callback = self.callback
    delivery_for: Callable[[Any], Any] = getattr(callback, "delivery_for", _no_delivery)
    to_message = self._to_message
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    commit_every = self._commit_every
    acks_enabled_for = app.topics.acks_enabled_for
    buffered = self._buffered_partitions
    sleep = asyncio.sleep
    since_yield = 0
    for tp, fetched in records.items():
        if active_partitions is not None and tp not in active_partitions and tp not in buffered:
            continue
        if not _still_assigned(self, tp):
            return
        delivery = delivery_for(tp)
        for record in fetched:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                since_yield = 0
                await sleep(0)
                if not _still_assigned(self, tp):
                    return
                delivery = delivery_for(tp)
            if not self.flow_active or app.consumer_generation_id != generation_id:
                self.log.dev("Generation or flow changed. Cancelling getmany.")
                return
            message = to_message(tp, record)
            offset = message.offset
            r_offset = get_read_offset(tp)
            if r_offset is None or offset >= r_offset:
                awaited = False
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                    awaited = True
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                    awaited = True
                if delivery is None or not delivery.deliver_now(message):
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    awaited = True
                set_read_offset(tp, offset)
                if awaited:
                    if not _still_assigned(self, tp):
                        return
                    delivery = delivery_for(tp)
            else:
                self.log.dev(
                    "DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value
                )


def _still_assigned(self: Any, tp: Any) -> bool:
    """True if ``tp`` is still assigned; its highwater goes to the monitor, as faust does."""
    try:
        highwater = self.highwater(tp)
    except AssertionError as exc:
        if not ended_by_unassignment(exc):
            raise
        return False
    self.app.monitor.track_tp_end_offset(tp, highwater)
    return True


def ended_by_unassignment(exc: AssertionError) -> bool:
    """True (and logged) if ``exc`` is aiokafka's "not assigned": a fetch ends quietly."""
    if str(exc) != NOT_ASSIGNED:
        return False
    log.info(
        "a fetch ended early: its partition was unassigned meanwhile (a rebalance); "
        "the rest is read again from the committed offsets"
    )
    return True


def _no_delivery(tp: Any) -> None:
    return None
