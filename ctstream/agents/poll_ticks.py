"""The poll ticks and the poll agent: which worker polls which table, and when.

The leader sends a tick per table every poll interval to the poll-ticks topic, keyed by
table name, so each table's ticks reach the one worker that owns its partition (and its
``ct-versions`` state); that worker's ``ctstream.poll`` agent runs the table's poll
(agents/poll.py) for a tick when the table is due. ``ctstream snapshot`` sends its
requests and controls as ticks too.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

from ctstream.agents.poll import TablePoller
from ctstream.bigquery.error_sink import ErrorReporter
from ctstream.models import PollTick
from ctstream.streams.app import PipelineApp


def _forget(running: dict[str, asyncio.Task[None]], name: str, _: object) -> None:
    running.pop(name, None)


def install_pollers(
    app: PipelineApp,
    poller: TablePoller,
    errors: ErrorReporter,
    on_unknown_table: Callable[[str], None] = lambda name: None,
) -> None:
    """The leader's ``ctstream.poll_ticks`` timer (a tick per table per poll interval) and
    the ``ctstream.poll`` agent, which runs ``poller`` for the ticks of its partitions."""
    registry, topics, stats = poller.registry, poller.topics, poller.stats
    interval = poller.settings.source.poll_interval

    @app.timer(interval, on_leader=True, name="ctstream.poll_ticks")
    async def send_poll_ticks() -> None:
        now = time.time()
        for name in registry.polled():
            tick = PollTick(name, now)
            await topics.poll_ticks.send(key=name.encode("utf-8"), value=tick.to_bytes())

    # Tables are polled side by side, each by one task at a time, at most
    # source.max_connections at once (the reader's pool holds as many connections): a
    # table with a big backlog or a snapshot under way does not hold up the others.
    running: dict[str, asyncio.Task[None]] = {}
    limit = poller.settings.source.max_connections
    ticks_topic = topics.names.poll_ticks

    @app.on_partitions_revoked.connect
    async def stop_polls(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Cancel the polls under way when poll-ticks partitions are revoked, before the
        rebalance completes: the tables' next owner must not poll them at the same time
        (their events would interleave out of version order). What they had not saved
        is read again by the next owner."""
        revoked = args[0] if args else kwargs.get("revoked", ())
        if not any(tp.topic == ticks_topic for tp in revoked):
            return
        tasks = list(running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @app.agent(topics.poll_ticks, name="ctstream.poll")
    async def poll(stream: Any) -> None:
        async def run(name: str, event: Any) -> None:
            # The task runs in a copy of the tick's context, where faust finds the
            # changelog partition of the ct-versions table through a weak reference to
            # the tick's event: ``event`` keeps it alive until the poll ends.
            await poller.run(name)
            assert event is not None

        try:
            async for event in stream.events():
                try:
                    tick = PollTick.from_bytes(event.value)
                except ValueError as exc:
                    # Not ours or damaged: parked with its reason, like a bad change event.
                    await errors.report(
                        reason=f"poll tick: {exc}", payload=event.value, message=event.message
                    )
                    continue
                name = tick.table
                if name not in poller.specs:
                    # Another worker found a table this one has not seen yet (or one
                    # removed from the config): look at the catalog now, not next round.
                    on_unknown_table(name)
                    continue
                if name in registry.untracked:
                    continue
                if tick.control is not None or tick.snapshot is not None:
                    if name in running:  # the state is the running task's until it ends
                        await asyncio.wait([running[name]])
                    if tick.control is not None:
                        poller.snapshots.control(name, tick.control)
                        continue
                    assert tick.snapshot is not None
                    poller.request_snapshot(name, tick.snapshot, tick.request_id)
                # A poll that took longer than the interval leaves ticks queued; a tick
                # only polls a table that is due (and not being polled), so queued ticks
                # drain fast and no table starves.
                elif (
                    name in running
                    or time.time() - stats.last_start.get(name, 0.0) < interval * 0.8
                ):
                    continue
                while len(running) >= limit:
                    await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(run(name, event), name=f"ctstream.poll:{name}")
                running[name] = task
                task.add_done_callback(functools.partial(_forget, running, name))
        finally:
            tasks = list(running.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
