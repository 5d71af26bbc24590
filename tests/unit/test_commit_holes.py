"""The watch that re-reads a partition stuck behind a message never processed."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from ctstream.streams.commit_holes import REREAD_NOTICE, HoleWatch, install_hole_repair

RAW, TICKS = TP("raw", 0), TP("ticks", 0)


class Book:
    """faust's Consumer as the watch reads it: assignment, acknowledged, committed."""

    def __init__(self) -> None:
        acking = {"raw"}
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=acking.__contains__))
        self._acked: dict[TP, list[int]] = defaultdict(list)
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self.assigned = {RAW, TICKS}

    def assignment(self) -> set[TP]:
        return self.assigned


def test_a_hole_is_due_for_a_re_read_only_once_it_is_old() -> None:
    book: Any = Book()
    book._committed_offset[RAW] = 100
    book._acked[RAW] = [101, 102, 103]  # 100 was fetched, never processed
    watch = HoleWatch(after=20)
    assert watch.due(book, now=0) == {}
    assert watch.due(book, now=19) == {}
    assert watch.due(book, now=20) == {RAW: 100}
    assert watch.due(book, now=21) == {}  # the re-read gets as long again
    assert watch.due(book, now=40) == {RAW: 100}


def test_work_in_order_or_a_moving_commit_is_not_a_hole() -> None:
    book: Any = Book()
    watch = HoleWatch(after=20)
    book._committed_offset[RAW] = 100
    book._acked[RAW] = [100, 101]  # committed at the next commit
    assert watch.due(book, now=0) == {}
    assert watch.due(book, now=30) == {}
    book._acked[RAW] = [105]  # a hole at 100 .. 104
    assert watch.due(book, now=31) == {}
    book._committed_offset[RAW] = 103  # ... being filled: the clock starts again
    assert watch.due(book, now=50) == {}
    assert watch.due(book, now=69) == {}
    assert watch.due(book, now=70) == {RAW: 103}


def test_partitions_not_acknowledged_or_never_committed_or_revoked_are_left_alone() -> None:
    book: Any = Book()
    watch = HoleWatch(after=20)
    book._committed_offset[TICKS] = 5
    book._acked[TICKS] = [7]  # acks disabled for this topic: faust does not commit it
    book._acked[RAW] = [3]  # nothing committed yet: faust's own first run counts
    assert watch.due(book, now=0) == {}
    assert watch.due(book, now=60) == {}
    book._committed_offset[RAW] = 1
    assert watch.due(book, now=61) == {}
    book.assigned = {TICKS}  # revoked: the next owner reads from the committed offset
    assert watch.due(book, now=100) == {}


class TimerApp:
    """What install_hole_repair asks of a faust app: a timer, and its state."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.should_stop = False
        self.rebalancing = False
        self.timers: list[Any] = []

    def timer(self, interval: float, name: str) -> Any:
        return self.timers.append


class Seeking(Book):
    def __init__(self) -> None:
        super().__init__()
        self.sought: list[tuple[TP, int]] = []

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


async def test_the_timer_seeks_an_old_hole_back_and_never_crashes_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = Seeking()
    consumer._committed_offset[RAW] = 100
    consumer._acked[RAW] = [101]
    app = TimerApp(consumer)
    watch = install_hole_repair(app, after=0)
    (tick,) = app.timers
    await tick()  # the hole is seen ...
    await tick()  # ... and, old enough, read again
    assert consumer.sought == [(RAW, 100)]
    assert f"{REREAD_NOTICE} 100" in caplog.text  # what the fault suite counts

    app.rebalancing = True  # a rebalance ends with its own seek: the clock starts over
    await tick()
    assert watch.since == {}

    def not_started() -> set[TP]:
        raise RuntimeError("Consumer thread not yet started")

    app.rebalancing = False
    consumer.assignment = not_started  # type: ignore[method-assign]
    await tick()  # logged, not raised
