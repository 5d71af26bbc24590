"""The offset, recovery and fetch fixes applied to faust (ctstream/streams/faust_compat/;
the register of patches is docs/faust-patches.md)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter, defaultdict
from types import SimpleNamespace
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from ctstream.streams.faust_compat import apply_patches, commits, fetching, recovery
from ctstream.streams.faust_compat.patching import applied_patch, original_of
from ctstream.streams.faust_compat.register import PATCHES, replacement_for


class FakeConsumer:
    def __init__(self, committed: int | None, acked: list[int]) -> None:
        self._acked: dict[str, list[int]] = defaultdict(list, {"tp": list(acked)})
        self._acked_index: dict[str, set[int]] = defaultdict(set, {"tp": set(acked)})
        self._committed_offset: dict[str, int | None] = defaultdict(lambda: None)
        self._committed_offset["tp"] = committed


def new_offset(committed: int | None, acked: list[int]) -> int | None:
    fake: Any = FakeConsumer(committed, acked)
    return commits.new_offset(fake, "tp")


def test_a_hole_at_the_committed_offset_is_not_committed_past() -> None:
    # 466 is the next message to read and was skipped: committing 468 would lose it.
    assert new_offset(466, [467]) is None
    assert new_offset(466, [467, 468, 469]) is None


def test_a_run_from_the_committed_offset_is_committed_up_to_the_first_hole() -> None:
    assert new_offset(466, [466, 467, 468]) == 469
    assert new_offset(466, [468, 466, 467, 470]) == 469


def test_without_a_committed_offset_the_first_run_counts() -> None:
    assert new_offset(None, [3, 4, 5, 9]) == 6
    assert new_offset(None, []) is None


def test_acked_offsets_left_after_a_commit_stay_for_the_next() -> None:
    fake: Any = FakeConsumer(10, [10, 11, 13])
    assert commits.new_offset(fake, "tp") == 12
    assert fake._acked["tp"] == [13]
    assert fake._acked_index["tp"] == {13}


def test_gaps_never_become_acknowledgements() -> None:
    fake: Any = FakeConsumer(0, [])
    asyncio.run(commits.add_gap(fake, "tp", 5, 9))
    assert fake._acked["tp"] == []


def test_apply_patches_faust_once() -> None:
    apply_patches()
    installed = {p.where: getattr(p.owner, p.name) for p in PATCHES}
    apply_patches()
    for patch in PATCHES:
        replacement = getattr(patch.owner, patch.name)
        assert replacement is installed[patch.where]  # the second apply changed nothing
        mark = applied_patch(patch.owner, patch.name)
        assert mark is not None and mark.patch is patch
        # What it replaced is upstream's own function, not an earlier replacement.
        assert mark.original.__module__.partition(".")[0] in {"faust", "mode"}
    assert Consumer._new_offset is commits.new_offset
    assert Consumer._add_gap is commits.add_gap
    assert Recovery.on_recovery_completed is recovery.on_recovery_completed
    assert Recovery._resume_streams is recovery.resume_streams
    assert Recovery._seek_offsets is recovery.seek_offsets


class SeekRecorder:
    """aiokafka refuses to seek to anything but an int >= 0; so does this."""

    def __init__(self) -> None:
        self.sought: dict[str, int] = {}

    async def seek_wait(self, partitions: dict[str, Any]) -> None:
        for offset in partitions.values():
            if not isinstance(offset, int) or offset < 0:
                raise ValueError("Offset must be a positive integer")
        self.sought.update(partitions)


async def test_a_standby_partition_added_by_a_rebalance_during_recovery_is_read_from_0() -> None:
    # What the soak saw: a standby changelog partition added by a rebalance while the
    # actives recovered keeps faust's placeholder None; faust sought to it and crashed.
    offsets: Counter[str] = Counter({"built": 41, "empty": -1})
    offsets["added-late"] = None  # type: ignore[assignment]
    tps = {"built", "empty", "added-late"}
    faust_original = original_of(Recovery, "_seek_offsets")
    recorder = SeekRecorder()
    try:
        await faust_original(object(), recorder, tps, offsets, "standby")
    except ValueError:
        pass
    else:
        raise AssertionError("faust's own seek is expected to fail on None")
    await recovery.seek_offsets(object(), recorder, tps, offsets, "standby")
    assert recorder.sought == {"built": 41, "empty": 0, "added-late": 0}


class AckBook:
    """The parts of faust's Consumer that its ``ack`` bookkeeping touches."""

    def __init__(self, committed: int) -> None:
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda t: True))
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: committed)
        self._acked: dict[Any, list[int]] = defaultdict(list)
        self._acked_index: dict[Any, set[int]] = defaultdict(set)
        self._unacked_messages: set[Any] = set()
        self._n_acked = 0
        self._waiting_for_ack = None


def fetched(offset: int, tracked: bool) -> ConsumerMessage:
    message = ConsumerMessage("t", 0, offset, 0.0, 0, [], b"k", b"v", None)
    message.tracked = tracked  # a stream sets this when it starts processing the message
    return message


def test_a_message_a_stream_skipped_is_not_acknowledged() -> None:
    # During a rebalance or a stop a stream skips what it fetched (flow control suspended)
    # and faust acknowledges it, so a commit could pass a message nobody processed.
    faust_book: Any = AckBook(committed=10)
    assert original_of(Consumer, "ack")(faust_book, fetched(10, tracked=False)) is True
    assert faust_book._acked[TP("t", 0)] == [10]  # faust's own: the skip counts as done

    book: Any = AckBook(committed=10)
    ack = replacement_for(Consumer, "ack")
    skipped, processed = fetched(10, tracked=False), fetched(11, tracked=True)
    assert ack(book, skipped) is False
    assert skipped.acked  # nothing waits for it ...
    assert ack(book, processed) is True
    assert book._acked[TP("t", 0)] == [11]  # ... but its offset stays a hole
    assert commits.new_offset(book, TP("t", 0)) is None  # and holds the commit


class FetchedBatch:
    """Stands in for a partition's fetched records; knows whether aiokafka handed it out."""

    taken = False

    def check_raise(self) -> None:  # aiokafka's last step when it hands a batch out
        self.taken = True


def aiokafka_consumer_holding(tp: TP, batch: FetchedBatch) -> Any:
    """An aiokafka consumer whose fetcher (aiokafka's own code) holds ``batch`` for ``tp``."""
    subscriptions = SimpleNamespace(
        reassignment_in_progress=False,
        is_assigned=lambda tp: True,
        fetch_context=contextlib.nullcontext,
    )
    fetcher = SimpleNamespace(
        _records={tp: batch},
        _subscriptions=subscriptions,
        _closed=False,
        _notify=lambda future: None,
        _wait_consume_future=None,
    )
    fetcher.fetched_records = functools.partial(Fetcher.fetched_records, fetcher)
    return SimpleNamespace(_closed=False, _fetcher=fetcher)


async def test_a_fetch_while_no_partition_is_active_hands_out_nothing() -> None:
    # The end of table recovery: changelogs paused, stream partitions not resumed yet.
    # faust passes its (live, now empty) active set; aiokafka reads empty as "all", and
    # faust then dropped the stream records it was handed — they were never read again.
    tp = TP("deduped", 0)
    thread: Any = SimpleNamespace(consumer=SimpleNamespace(flow_active=True))
    faust_fetch_records = original_of(AIOKafkaConsumerThread, "_fetch_records")
    fetch_records = replacement_for(AIOKafkaConsumerThread, "_fetch_records")

    batch = FetchedBatch()
    consumer = aiokafka_consumer_holding(tp, batch)
    await faust_fetch_records(thread, consumer, set(), timeout=0)
    assert batch.taken  # faust's own: handed out although no partition is active

    batch = FetchedBatch()
    consumer = aiokafka_consumer_holding(tp, batch)
    assert await fetch_records(thread, consumer, set(), timeout=0) == {}
    assert not batch.taken  # left in aiokafka's buffer for when the partition resumes

    batch = FetchedBatch()
    consumer = aiokafka_consumer_holding(tp, batch)
    await fetch_records(thread, consumer, {tp}, timeout=0)
    assert batch.taken  # an active partition's records are handed out as before


async def test_the_worker_consumer_waits_at_most_fetch_max_wait_ms() -> None:
    import faust

    app = faust.App("ctstream-test-fetch-wait", broker="kafka://127.0.0.1:9")
    thread = app.consumer._thread
    apply_patches()
    original = original_of(AIOKafkaConsumerThread, "_create_worker_consumer")(thread, app.transport)
    patched = thread._create_worker_consumer(app.transport)
    try:
        assert original._fetch_max_wait_ms == 1500  # faust's, fixed in its code
        assert patched._fetch_max_wait_ms == fetching.FETCH_MAX_WAIT_MS == 100
    finally:
        await original.stop()
        await patched.stop()


def test_a_commit_reads_the_assignment_once_and_commits_only_assigned_partitions() -> None:
    assigned = {TP("t", p) for p in range(0, 400, 2)}
    reads: list[int] = []
    sent: list[dict[Any, Any]] = []

    class Kafka:
        async def commit(self, offsets: dict[Any, Any]) -> None:
            sent.append(offsets)

    def assignment() -> set[TP]:
        reads.append(1)
        return set(assigned)

    thread: Any = SimpleNamespace(
        _ensure_consumer=Kafka, assignment=assignment, tp_last_committed_at={}
    )
    offsets = {TP("t", p): 10 + p for p in range(400)}
    assert asyncio.run(commits.commit(thread, offsets)) is True
    assert len(reads) == 1
    [committed] = sent
    assert {(tp.topic, tp.partition): o.offset for tp, o in committed.items()} == {
        ("t", p): 10 + p for p in range(0, 400, 2)
    }
    assert set(thread.tp_last_committed_at) == assigned
