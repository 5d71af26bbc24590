"""Delivering a fetched message without tasks (ctstream/streams/faust_compat/eager_delivery.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.consumer import Consumer
from mode import Service
from mode.utils.locks import Event

from ctstream.streams.faust_compat import apply_patches
from ctstream.streams.faust_compat.patching import applied_patch
from ctstream.streams.faust_compat.register import replacement_for

# The patch's wait_first over mode's own, as faust's Consumer gets it.
eager_wait_first = replacement_for(Consumer, "wait_first")


class Fetcher(Service):
    """A real mode service: ``wait_first`` reads its stopped and crashed events."""


def tasks_now() -> int:
    return len(asyncio.all_tasks())


def test_applied_with_the_other_faust_patches() -> None:
    apply_patches()
    mark = applied_patch(Consumer, "wait_first")
    assert mark is not None and mark.patch.number == 12
    assert mark.original is Service.wait_first  # mode's, which it calls when a delivery waits


async def test_a_delivery_that_does_not_suspend_makes_no_task() -> None:
    service, suspend = Fetcher(), Event()
    created: list[int] = []

    async def deliver() -> str:
        created.append(tasks_now())
        return "delivered"

    before = tasks_now()
    result = await eager_wait_first(service, deliver(), suspend.wait())
    assert len(result.done) == 1 and result.results == ["delivered"]
    assert not result.stopped
    assert created == [before]  # ran in the caller's task, none was created for it
    # The unstarted suspend.wait() coroutine was closed: no "never awaited" warning
    # (pytest turns warnings into errors).


async def test_a_delivery_that_suspends_is_continued_until_done() -> None:
    service, suspend = Fetcher(), Event()
    room = asyncio.get_running_loop().create_future()
    steps: list[str] = []
    started = asyncio.Event()

    async def deliver() -> str:
        steps.append("started")
        started.set()
        value = await room  # a full queue, say
        steps.append(f"resumed with {value}")
        await asyncio.sleep(0)
        return "delivered"

    waiting = asyncio.create_task(eager_wait_first(service, deliver(), suspend.wait()))
    await asyncio.wait_for(started.wait(), 5)
    assert steps == ["started"]  # run at once, once only
    room.set_result("room")
    result = await asyncio.wait_for(waiting, 5)
    assert steps == ["started", "resumed with room"]
    assert result.results == ["delivered"]


async def test_a_suspended_delivery_is_cancelled_when_the_flow_is_suspended() -> None:
    service, suspend = Fetcher(), Event()
    room = asyncio.get_running_loop().create_future()
    outcome: list[str] = []
    started, ended = asyncio.Event(), asyncio.Event()

    async def deliver() -> None:
        started.set()
        try:
            await room
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        finally:
            ended.set()
        outcome.append("delivered")

    waiting = asyncio.create_task(eager_wait_first(service, deliver(), suspend.wait()))
    await asyncio.wait_for(started.wait(), 5)
    suspend.set()  # a rebalance: faust's wait_first returns with the suspend as winner
    result = await asyncio.wait_for(waiting, 5)
    assert result.results == [True]
    await asyncio.wait_for(ended.wait(), 5)  # the cancellation reaches the delivery's task
    assert outcome == ["cancelled"]


async def test_an_error_in_the_delivery_reaches_the_caller() -> None:
    service, suspend = Fetcher(), Event()

    async def deliver() -> None:
        raise ValueError("bad message")

    try:
        await eager_wait_first(service, deliver(), suspend.wait())
    except ValueError as exc:
        assert str(exc) == "bad message"
    else:
        raise AssertionError("the error was swallowed")


async def test_waits_on_events_and_stopped_services_go_to_faust() -> None:
    service, ready = Fetcher(), Event()
    ready.set()
    result = await eager_wait_first(service, ready)  # Service.wait(event) passes events
    assert result.results == [True]

    stopped = Fetcher()
    stopped._stopped.set()
    suspend = Event()

    async def deliver() -> str:
        return "delivered"

    result: Any = await eager_wait_first(stopped, deliver(), suspend.wait())
    assert result.stopped  # faust's answer for a stopped service, as before
