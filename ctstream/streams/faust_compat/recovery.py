"""Table recovery that neither skips stream records nor stops short of a changelog's end.

Patches 4, 6 and 7 of docs/faust-patches.md, on faust's ``Recovery`` service:

- 4 ``on_recovery_completed`` and ``_resume_streams`` are faust's own steps with the stream
  partitions sought to their committed offsets *before* they are resumed, so no record
  fetched in between moves the read offset past records nobody processed;
- 6 ``_build_highwaters``: each changelog's highwater is raised to the partition's true
  end (streams/offsets.py), which the embedded broker's ListOffsets answer can understate;
- 7 ``_seek_offsets``: a partition whose start offset was never built is read from 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from ctstream.streams.offsets import true_end_offsets

log = logging.getLogger("ctstream.faust")


async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """faust's ``Recovery.on_recovery_completed``, seeking before resuming (4)."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
            f"param {generation_id}"
        )
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def resume_streams(self: Any, generation_id: int = 0) -> None:
    """faust's ``Recovery._resume_streams``, seeking before resuming (4)."""
    app = self.app
    consumer = app.consumer
    await app.on_rebalance_complete.send()
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    else:
        self.log.info("Resuming streams with empty assignment")
    self.completed.set()
    self.log.info("Resuming flow...")
    app.flow_control.resume()
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


def wrap_build_highwaters(faust_build_highwaters: Callable[..., Any]) -> Callable[..., Any]:
    """``Recovery._build_highwaters``, each then raised to its partition's true end (6)."""

    async def build_highwaters(
        self: Any, consumer: Any, tps: Any, destination: Any, title: str
    ) -> None:
        """faust's highwaters, each raised to the true end - 1 of its partition.

        If the true ends cannot be read within the broker request timeout, faust's values
        stay (a warning is logged): a recovery that stops short, never one that hangs.
        """
        await faust_build_highwaters(self, consumer, tps, destination, title)
        if not tps:
            return
        conf = self.app.conf
        bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in conf.broker)
        options = dict(credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))
        parts = {tp: TopicPartition(tp.topic, tp.partition) for tp in tps}
        try:
            ends = await asyncio.wait_for(
                true_end_offsets(bootstrap, list(parts.values()), client_options=options),
                conf.broker_request_timeout,
            )
        except Exception as exc:  # keep faust's values: a short recovery, not a stuck one
            log.warning("reading the true end of the %s changelogs failed: %r", title, exc)
            return
        for tp, part in parts.items():
            end = ends.get(part)
            if end is not None and end - 1 > destination[tp]:  # faust's highwater is end - 1
                destination[tp] = end - 1

    return build_highwaters


async def seek_offsets(self: Any, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
    """faust's ``Recovery._seek_offsets``, an offset never built read from 0 (7)."""
    new_offsets = {}
    for tp in tps:
        offset = offsets.get(tp)
        # -1 is faust's "nothing read yet"; None: added by a rebalance after the offsets
        # were built. Both mean: from the beginning.
        new_offsets[tp] = offset if isinstance(offset, int) and offset >= 0 else 0
    await consumer.seek_wait(new_offsets)
