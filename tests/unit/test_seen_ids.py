"""The dedup state's index: windows, expiry, and rebuilding after a recovery.

The faust table is stood in for by a dict with faust's table surface used here (``data``,
item set/delete, ``on_recover``); the pipeline tests run the real table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ctstream.streams.seen_ids import DIGEST_BYTES, KEPT_WINDOWS, SeenIds, digest


class TableStandIn:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.deleted: list[bytes] = []
        self.recover_callbacks: list[Callable[[], Awaitable[None]]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def __delitem__(self, key: bytes) -> None:
        del self.data[key]
        self.deleted.append(key)

    def on_recover(self, fun: Callable[[], Awaitable[None]]) -> Any:
        self.recover_callbacks.append(fun)
        return fun


WINDOW = 10.0


def test_an_id_is_seen_in_its_window_and_the_next_only() -> None:
    seen = SeenIds(TableStandIn(), WINDOW)
    a = digest("a")
    seen.remember(0, 105.0, [a])  # window 10
    assert seen.seen(0, 100.0, a) and seen.seen(0, 109.9, a)
    assert seen.seen(0, 119.9, a)  # the next window looks one back
    assert not seen.seen(0, 120.0, a)  # two windows on: not a duplicate any more
    assert not seen.seen(0, 99.9, a)  # the window before: not yet recorded there
    assert not seen.seen(1, 105.0, a)  # another partition's state


def test_a_batch_is_one_table_entry_of_concatenated_digests() -> None:
    table = TableStandIn()
    seen = SeenIds(table, WINDOW)
    digests = [digest(f"id-{i}") for i in range(1000)]
    seen.remember(3, 55.0, digests)
    assert len(table.data) == 1
    [(key, value)] = table.data.items()
    assert key.startswith(b"3:5:")
    assert len(value) == 1000 * DIGEST_BYTES
    assert sorted(p for p, _, _ in seen.entries()) == [3] * 1000
    assert seen.count() == 1000


def test_old_windows_are_deleted_when_the_newest_moves_on() -> None:
    table = TableStandIn()
    seen = SeenIds(table, WINDOW)
    for w in range(KEPT_WINDOWS + 2):
        seen.remember(0, w * WINDOW, [digest(f"w{w}")])
        seen.remember(1, 0.0, [digest(f"p1-w{w}")])  # partition 1 stays in window 0
    kept = sorted({w for p, w, _ in seen.entries() if p == 0})
    assert kept == list(range(2, KEPT_WINDOWS + 2))
    assert [k.split(b":")[1] for k in table.deleted] == [b"0", b"1"]
    assert sum(1 for p, _, _ in seen.entries() if p == 1) == KEPT_WINDOWS + 2


async def test_after_a_recovery_the_index_is_rebuilt_from_the_table() -> None:
    table = TableStandIn()
    seen = SeenIds(table, WINDOW)
    mine, theirs = digest("mine"), digest("theirs")
    seen.remember(2, 5.0, [mine])
    table.data[b"2:0:otherworker1"] = theirs  # restored from another worker's changelog
    assert not seen.seen(2, 5.0, theirs)  # the index does not read the table on each lookup
    for callback in table.recover_callbacks:
        await callback()
    assert seen.seen(2, 5.0, theirs) and seen.seen(2, 5.0, mine)


def test_entries_of_another_format_are_ignored() -> None:
    table = TableStandIn()
    table.data[b"not-an-entry"] = b"x" * DIGEST_BYTES
    seen = SeenIds(table, WINDOW)
    assert list(seen.entries()) == []
    assert seen.count() == 0
    assert not seen.seen(0, 0.0, b"x" * DIGEST_BYTES)


def test_two_workers_never_write_the_same_entry_key() -> None:
    table = TableStandIn()
    first, second = SeenIds(table, WINDOW), SeenIds(table, WINDOW)
    first.remember(0, 1.0, [digest("a")])
    second.remember(0, 1.0, [digest("b")])
    assert len(table.data) == 2
