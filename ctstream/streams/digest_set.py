"""A set of fixed-size digests stored in flat byte arrays, for the dedup window's index.

A Python ``set`` of 16-byte ``bytes`` costs about 96 bytes per id: a 64-byte object
(49 bytes, rounded up by the allocator) and a 16-byte hash slot at most 60% full. This
set keeps the digests themselves in open-addressing tables (linear probing) of 16-byte
slots: 23 to 46 bytes per id, and no Python object per id. It is split into shards by
the digest's first byte so that growing one shard copies 1/64 of the ids, not all of
them: at a million ids a resize pauses the event loop for milliseconds, not a second.

The digests are uniformly distributed (BLAKE2b), so their own bytes are the hash.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

SLOT = 16
SHARDS = 64  # a power of two: the shard is the digest's first byte's low bits
_INITIAL_SLOTS = 8
_EMPTY = bytes(SLOT)
_SLOTS = struct.Struct(f"{SLOT}s")
# Grow at 70% full: linear probing then averages under 2 probes for a hit, 6 for a miss.
_MAX_LOAD_NUM, _MAX_LOAD_DEN = 7, 10


class DigestSet:
    """Membership of 16-byte digests; add-only (a window's index is dropped whole)."""

    __slots__ = ("_counts", "_has_empty", "_len", "_shards")

    def __init__(self, digests: Iterable[bytes] = ()) -> None:
        self._shards = [bytearray(SLOT * _INITIAL_SLOTS) for _ in range(SHARDS)]
        self._counts = [0] * SHARDS
        self._has_empty = False  # the all-zero digest marks a free slot, so it is kept aside
        self._len = 0
        self.update(digests)

    def __len__(self) -> int:
        return self._len

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, bytes) or len(item) != SLOT:
            return False
        if item == _EMPTY:
            return self._has_empty
        table = self._shards[item[0] & (SHARDS - 1)]
        mask = len(table) // SLOT - 1
        i = int.from_bytes(item[1:9], "little") & mask
        while True:
            offset = i * SLOT
            slot = table[offset : offset + SLOT]
            if slot == item:
                return True
            if slot == _EMPTY:
                return False
            i = (i + 1) & mask

    def add(self, item: bytes) -> None:
        self.update((item,))

    def update(self, digests: Iterable[bytes]) -> None:
        # One loop with the probing inlined: this runs once per id the dedup forwards.
        shards, counts = self._shards, self._counts
        for item in digests:
            if len(item) != SLOT:
                raise ValueError(f"a digest is {SLOT} bytes, got {len(item)}")
            if item == _EMPTY:
                if not self._has_empty:
                    self._has_empty = True
                    self._len += 1
                continue
            shard = item[0] & (SHARDS - 1)
            table = shards[shard]
            slots = len(table) // SLOT
            mask = slots - 1
            i = int.from_bytes(item[1:9], "little") & mask
            while True:
                offset = i * SLOT
                slot = table[offset : offset + SLOT]
                if slot == item:
                    break
                if slot == _EMPTY:
                    table[offset : offset + SLOT] = item
                    self._len += 1
                    count = counts[shard] = counts[shard] + 1
                    if count * _MAX_LOAD_DEN > slots * _MAX_LOAD_NUM:
                        shards[shard] = _grown(table)
                    break
                i = (i + 1) & mask

    def __iter__(self) -> Iterator[bytes]:
        if self._has_empty:
            yield _EMPTY
        for table in self._shards:
            for offset in range(0, len(table), SLOT):
                slot = bytes(table[offset : offset + SLOT])
                if slot != _EMPTY:
                    yield slot


def _grown(table: bytearray) -> bytearray:
    """The same digests in a table of twice the slots."""
    bigger = bytearray(len(table) * 2)
    mask = len(bigger) // SLOT - 1
    # The slots are read by struct's iterator (no slicing per slot in Python); the bigger
    # table is half full at most, so a probe rarely passes its first slot.
    for (item,) in _SLOTS.iter_unpack(table):
        if item == _EMPTY:
            continue
        offset = (int.from_bytes(item[1:9], "little") & mask) * SLOT
        while bigger[offset : offset + SLOT] != _EMPTY:
            offset = (offset + SLOT) & (len(bigger) - 1)
        bigger[offset : offset + SLOT] = item
    return bigger
