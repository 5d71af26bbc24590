"""The dedup window's state: which message_unique_ids were forwarded, per partition and window.

Stored in a changelog-backed faust table with **one entry per dedup batch, partition and
window** — key ``b"<partition>:<window>:<token>"``, value the ids' 16-byte BLAKE2b digests
concatenated — instead of one windowed entry per id. That is one changelog message per
batch instead of one per event, and about 16 bytes of table per id instead of faust's
windowed key, value and expiry index (~450 bytes per id measured with faust's windowed
table). Lookups use an in-memory ``DigestSet`` per partition and window (about 33 bytes
per id, where a Python set of digests takes about 96), built from the table entries on
first use and again after every recovery (a rebalance can bring a partition's entries
written by another worker).

Windows are tumbling by the event's timestamp, as faust's were: an id is a duplicate if
it is in its event's window or the one before, so copies straddling a boundary are caught.
A partition keeps ``KEPT_WINDOWS`` windows; older entries are deleted (tombstones on the
changelog) when its newest window moves on. Two different ids share a 128-bit digest with
a probability of about n²/2¹²⁹ — for 10⁹ ids in one window, below 10⁻²⁰.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctstream.streams.digest_set import DigestSet

DIGEST_BYTES = 16
# The event's window and the one before are looked up; one more is kept for events that
# arrive late (re-read after a crash, or a partition whose newest window moved ahead).
KEPT_WINDOWS = 3


def digest(unique_id: str) -> bytes:
    return digest_utf8(unique_id.encode("utf-8"))


def digest_utf8(unique_id: bytes) -> bytes:
    """The digest of an id already encoded (as UTF-8, the form ``digest`` encodes to)."""
    return hashlib.blake2b(unique_id, digest_size=DIGEST_BYTES).digest()


def split_digests(value: bytes) -> Iterator[bytes]:
    return (value[i : i + DIGEST_BYTES] for i in range(0, len(value), DIGEST_BYTES))


@dataclass
class _Window:
    ids: DigestSet = field(default_factory=DigestSet)
    keys: list[bytes] = field(default_factory=list)  # the table entries holding them


class SeenIds:
    """The dedup table and its in-memory index.

    ``remember`` writes the table, so faust's current event must be one of the partition
    being written (the changelog message goes to the current event's partition).
    """

    def __init__(self, table: Any, window: float) -> None:
        self.table = table
        self.window = window
        self._index: dict[int, dict[int, _Window]] = {}  # partition → window → ids
        # Entry keys must not collide with those another process (or an earlier run of
        # this one) wrote in the same window.
        self._token_prefix = uuid.uuid4().hex[:12]
        self._tokens = itertools.count()
        table.on_recover(self._on_recover)

    async def _on_recover(self) -> None:
        self._index.clear()  # rebuilt from the recovered table on next use

    def window_of(self, timestamp: float) -> int:
        return int(timestamp // self.window)

    def window_span(self, window: int) -> tuple[float, float]:
        """Start and end of a window, in epoch seconds."""
        start = window * self.window
        return start, start + self.window

    def seen(self, partition: int, timestamp: float, id_digest: bytes) -> bool:
        windows = self._windows(partition)
        current = self.window_of(timestamp)
        for w in (current, current - 1):
            found = windows.get(w)
            if found is not None and id_digest in found.ids:
                return True
        return False

    def remember(self, partition: int, timestamp: float, digests: Sequence[bytes]) -> None:
        """Record ids forwarded from ``partition`` (faust's current event must be of it)."""
        if not digests:
            return
        windows = self._windows(partition)  # before the write: loading would count it twice
        w = self.window_of(timestamp)
        key = f"{partition}:{w}:{self._token_prefix}{next(self._tokens)}".encode()
        self.table[key] = b"".join(digests)
        entry = windows.setdefault(w, _Window())
        entry.keys.append(key)
        entry.ids.update(digests)
        newest = max(windows)
        for old in [o for o in windows if o <= newest - KEPT_WINDOWS]:
            for stale in windows.pop(old).keys:
                if stale in self.table.data:
                    del self.table[stale]

    def entries(self) -> Iterator[tuple[int, int, bytes]]:
        """(partition, window, digest) of every id this worker holds."""
        for partition, window, _, value in self._stored():
            for id_digest in split_digests(value):
                yield partition, window, id_digest

    def count(self) -> int:
        """Ids this worker holds."""
        return sum(len(value) // DIGEST_BYTES for _, _, _, value in self._stored())

    def _windows(self, partition: int) -> dict[int, _Window]:
        windows = self._index.get(partition)
        if windows is None:
            windows = self._index[partition] = self._load(partition)
        return windows

    def _load(self, partition: int) -> dict[int, _Window]:
        windows: dict[int, _Window] = {}
        for stored_partition, window, key, value in self._stored():
            if stored_partition == partition:
                entry = windows.setdefault(window, _Window())
                entry.keys.append(key)
                entry.ids.update(split_digests(value))
        return windows

    def _stored(self) -> Iterator[tuple[int, int, bytes, bytes]]:
        """(partition, window, key, value) of each table entry of this format."""
        for key, value in list(self.table.data.items()):
            parsed = _parse_key(key)
            if parsed is not None and value:
                yield parsed[0], parsed[1], key, value


def _parse_key(key: Any) -> tuple[int, int] | None:
    if isinstance(key, str):
        key = key.encode()
    try:
        partition, window, _ = bytes(key).split(b":", 2)
        return int(partition), int(window)
    except (TypeError, ValueError):
        return None  # not an entry of this format
