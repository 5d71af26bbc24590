"""run_batch and retry_forever: unfinished batches are never committed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from ctstream.agents.batches import run_batch, run_in_flight
from ctstream.errors import RetryAborted, SinkUnavailable
from ctstream.retry import retry_forever
from ctstream.streams.in_flight import InFlightBatches


def events(n: int) -> list[Any]:
    return [
        SimpleNamespace(message=SimpleNamespace(acked=False, offset=i, topic="t", partition=0))
        for i in range(n)
    ]


# One ledger for the module's tests, as a worker has one per app.
LEDGER = InFlightBatches()
commit_ceiling = LEDGER.commit_ceiling
withhold = LEDGER.withhold


class App:
    def __init__(self) -> None:
        self.should_stop = False
        self.in_flight = LEDGER


async def test_a_finished_batch_is_left_to_faust_to_acknowledge() -> None:
    batch = events(3)
    seen: list[int] = []

    async def handler(evs: Any) -> None:
        seen.extend(e.message.offset for e in evs)

    await run_batch(App(), batch, handler, "test")
    assert seen == [0, 1, 2]
    assert not any(e.message.acked for e in batch)


async def test_unexpected_errors_retry_the_batch() -> None:
    calls = 0

    async def handler(evs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("transient")

    await run_batch(App(), events(2), handler, "test", retry_initial=0.001, retry_max=0.01)
    assert calls == 3


async def test_a_batch_aborted_at_shutdown_is_withheld() -> None:
    app = App()
    batch = events(4)

    async def handler(evs: Any) -> None:
        async def fail() -> None:
            raise SinkUnavailable("503")

        app.should_stop = True
        await retry_forever(fail, "write", 0.001, 0.01, should_abort=lambda: app.should_stop)

    await run_batch(app, batch, handler, "test")
    assert all(e.message.acked for e in batch)  # faust will neither wait for nor commit them


async def test_a_cancelled_batch_is_withheld_and_the_cancel_goes_on() -> None:
    batch = events(2)
    started = asyncio.Event()

    async def handler(evs: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(run_batch(App(), batch, handler, "test"))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(e.message.acked for e in batch)


async def test_retry_forever_retries_retriable_errors_only() -> None:
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 4:
            raise SinkUnavailable("503")
        return "ok"

    retries: list[int] = []
    result = await retry_forever(flaky, "w", 0.001, 0.01, on_retry=lambda n, e: retries.append(n))
    assert result == "ok" and retries == [1, 2, 3]

    async def broken() -> None:
        raise RetryAborted("not retriable")

    with pytest.raises(RetryAborted):
        await retry_forever(broken, "w", 0.001, 0.01)


def test_withhold_marks_every_message() -> None:
    batch = events(3)
    withhold(batch)
    assert all(e.message.acked for e in batch)


def tp_events(topic: str, partition: int, offsets: list[int]) -> list[Any]:
    return [
        SimpleNamespace(
            message=SimpleNamespace(acked=False, offset=o, topic=topic, partition=partition)
        )
        for o in offsets
    ]


async def test_commits_are_capped_below_a_running_batch() -> None:
    batch = tp_events("ceil-a", 0, [10, 11, 12])
    inside: list[int | None] = []

    async def handler(evs: Any) -> None:
        inside.append(commit_ceiling("ceil-a", 0))

    await run_batch(App(), batch, handler, "test")
    assert inside == [10]
    assert commit_ceiling("ceil-a", 0) is None  # finished: no cap any more


async def test_a_withheld_batch_caps_commits_until_it_is_processed_again() -> None:
    first = tp_events("ceil-b", 1, [40, 41])
    withhold(first)
    assert commit_ceiling("ceil-b", 1) == 40
    assert commit_ceiling("ceil-b", 0) is None

    async def handler(evs: Any) -> None:
        return None

    await run_batch(App(), tp_events("ceil-b", 1, [40, 41, 42]), handler, "test")
    assert commit_ceiling("ceil-b", 1) is None


class FakeConsumer:
    """faust's commit bookkeeping for one partition, with the patched functions."""

    def __init__(self, tp: Any, committed: int, acked: list[int]) -> None:
        from collections import defaultdict

        self._committed_offset: Any = defaultdict(lambda: None, {tp: committed})
        self._acked: Any = defaultdict(list, {tp: list(acked)})
        self._acked_index: Any = defaultdict(set, {tp: set(acked)})
        self.app = App()

    def _new_offset(self, tp: Any) -> int | None:
        from ctstream.streams.faust_compat import commits

        return commits.new_offset(self, tp)

    def _should_commit(self, tp: Any, offset: int) -> bool:
        from faust.transport.consumer import Consumer

        return bool(Consumer._should_commit(self, tp, offset))  # type: ignore[arg-type]


def test_faust_commit_filter_applies_the_ceiling_and_keeps_what_it_cannot_commit() -> None:
    from faust.transport.consumer import Consumer
    from faust.types import TP

    from ctstream.streams.faust_compat.register import replacement_for

    filter_committable_offsets = replacement_for(Consumer, "_filter_committable_offsets")

    tp = TP("ceil-c", 0)
    withhold(tp_events("ceil-c", 0, [8, 9]))
    consumer = FakeConsumer(tp, committed=5, acked=[5, 6, 7, 8, 9, 10])
    assert filter_committable_offsets(consumer, (t for t in [tp])) == {tp: 8}
    assert consumer._acked[tp] == [8, 9, 10]  # above the cap: kept for a later commit
    consumer._committed_offset[tp] = 8
    assert filter_committable_offsets(consumer, [tp]) == {}
    assert consumer._acked[tp] == [8, 9, 10]

    async def handler(evs: Any) -> None:
        return None

    asyncio.run(run_batch(App(), tp_events("ceil-c", 0, [8, 9]), handler, "test"))
    assert filter_committable_offsets(consumer, [tp]) == {tp: 11}  # cap lifted
    assert consumer._acked[tp] == []


async def test_in_flight_batches_are_bounded_and_capped_until_the_earliest_finishes() -> None:
    gates = {n: asyncio.Event() for n in range(4)}
    running: list[int] = []
    most = 0
    taken = 0

    async def batches() -> Any:
        nonlocal taken
        for n in range(4):
            taken += 1
            yield tp_events("fly", 0, [n * 10, n * 10 + 1])

    async def handler(evs: Any) -> None:
        nonlocal most
        n = evs[0].message.offset // 10
        running.append(n)
        most = max(most, len(running))
        await gates[n].wait()
        running.remove(n)

    task = asyncio.create_task(run_in_flight(App(), batches(), handler, "test", limit=2))
    while len(running) < 2:
        await asyncio.sleep(0)
    assert taken == 2  # the third batch is not taken while two are unfinished
    gates[1].set()  # the later batch finishes first ...
    while 2 not in running:
        await asyncio.sleep(0)
    assert commit_ceiling("fly", 0) == 0  # ... and nothing past the earlier one commits
    gates[0].set()
    while 3 not in running:
        await asyncio.sleep(0)
    assert commit_ceiling("fly", 0) == 20
    gates[2].set()
    gates[3].set()
    await asyncio.wait_for(task, 5)
    assert most == 2 and commit_ceiling("fly", 0) is None


async def test_cancelling_in_flight_batches_withholds_them() -> None:
    started = asyncio.Event()

    async def batches() -> Any:
        yield tp_events("fly-c", 0, [5, 6])
        yield tp_events("fly-c", 0, [7])
        await asyncio.sleep(60)
        yield []

    async def handler(evs: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(run_in_flight(App(), batches(), handler, "test", limit=4))
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert commit_ceiling("fly-c", 0) == 5  # both withheld: read again by the next owner
