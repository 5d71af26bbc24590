"""The batches an agent has taken and not finished, and the commit cap they set.

faust acknowledges a batch when the agent takes the next one (streams/channel_batches.py,
as faust's ``take_events`` did) — also when it leaves by an exception or is cancelled at
shutdown — so acknowledgements alone would let a batch still being written be committed.
Every batch is therefore registered here while it runs, and the commit of a partition is
capped below the first offset of any batch that has not finished (:meth:`commit_ceiling`,
applied to faust's commit by streams/faust_compat). An unfinished batch is *withheld*: its
offsets stay under the cap until the batch is processed again (a rebalance or a restart
re-reads it), and its messages are marked acknowledged without being registered, so faust
does not wait for them either.

One :class:`InFlightBatches` belongs to each app (``PipelineApp.in_flight``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

TopicPartition = tuple[str, int]


def first_offsets(events: Sequence[Any]) -> dict[TopicPartition, int]:
    """The lowest offset per topic-partition among ``events`` (faust events)."""
    firsts: dict[TopicPartition, int] = {}
    for event in events:
        message = event.message
        tp = (message.topic, message.partition)
        offset = int(message.offset)
        if tp not in firsts or offset < firsts[tp]:
            firsts[tp] = offset
    return firsts


class InFlightBatches:
    """Running and withheld batches of one app, and the commit cap they set."""

    def __init__(self) -> None:
        self._tokens = itertools.count()
        self._running: dict[int, dict[TopicPartition, int]] = {}  # token → first offset per tp
        self._withheld: dict[TopicPartition, int] = {}  # tp → first offset not finished

    def register(self, events: Sequence[Any]) -> int:
        """Cap commits below these events until :meth:`finish`; returns the batch's token.

        Call it synchronously before the batch runs in a task of its own, so that faust,
        which acknowledges the batch as soon as the agent takes the next one, cannot
        commit it first.
        """
        token = next(self._tokens)
        self._running[token] = first_offsets(events)
        return token

    def finish(self, token: int, *, done: bool) -> None:
        """The batch of ``token`` ended; ``done``: it was processed (what it withheld before
        is lifted), else it must have been :meth:`withhold`-en."""
        firsts = self._running.pop(token, {})
        if not done:
            return
        for tp, offset in firsts.items():
            if tp in self._withheld and offset <= self._withheld[tp]:
                del self._withheld[tp]  # what was withheld has now been processed again

    def withhold(self, events: Sequence[Any]) -> None:
        """Keep faust from committing these events' offsets (they will be read again)."""
        for tp, offset in first_offsets(events).items():
            self._withheld[tp] = min(offset, self._withheld.get(tp, offset))
        for event in events:
            event.message.acked = True

    def commit_ceiling(self, topic: str, partition: int) -> int | None:
        """The highest offset that may be committed for a partition (None: no limit)."""
        tp = (topic, partition)
        limits = [firsts[tp] for firsts in self._running.values() if tp in firsts]
        if tp in self._withheld:
            limits.append(self._withheld[tp])
        return min(limits) if limits else None
