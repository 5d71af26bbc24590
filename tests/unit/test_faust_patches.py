"""The offset bookkeeping fixes applied to faust (see ctstream/streams/faust_patches.py)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
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
