"""The offset bookkeeping fixes applied to faust (see ctstream/streams/faust_patches.py)."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer

from ctstream.streams import faust_patches


class FakeConsumer:
    def __init__(self, committed: int | None, acked: list[int]) -> None:
        self._acked: dict[str, list[int]] = defaultdict(list, {"tp": list(acked)})
        self._acked_index: dict[str, set[int]] = defaultdict(set, {"tp": set(acked)})
        self._committed_offset: dict[str, int | None] = defaultdict(lambda: None)
        self._committed_offset["tp"] = committed


def new_offset(committed: int | None, acked: list[int]) -> int | None:
    fake: Any = FakeConsumer(committed, acked)
    return faust_patches.new_offset(fake, "tp")


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
    assert faust_patches.new_offset(fake, "tp") == 12
    assert fake._acked["tp"] == [13]
    assert fake._acked_index["tp"] == {13}


def test_gaps_never_become_acknowledgements() -> None:
    fake: Any = FakeConsumer(0, [])
    asyncio.run(faust_patches.add_gap(fake, "tp", 5, 9))
    assert fake._acked["tp"] == []


def test_apply_patches_faust_once() -> None:
    faust_patches.apply()
    faust_patches.apply()
    assert Consumer._new_offset is faust_patches.new_offset
    assert Consumer._add_gap is faust_patches.add_gap
    assert Consumer.perform_seek is faust_patches.perform_seek
    assert Recovery.on_recovery_completed is faust_patches.on_recovery_completed
    assert Recovery._resume_streams is faust_patches.resume_streams
    assert Recovery._seek_offsets is faust_patches.seek_offsets


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
    faust_original = faust_patches._original_seek_offsets
    recorder = SeekRecorder()
    try:
        await faust_original(object(), recorder, tps, offsets, "standby")
    except ValueError:
        pass
    else:
        raise AssertionError("faust's own seek is expected to fail on None")
    await faust_patches.seek_offsets(object(), recorder, tps, offsets, "standby")
    assert recorder.sought == {"built": 41, "empty": 0, "added-late": 0}
