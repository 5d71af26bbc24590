"""The dedup index's compact digest set: membership, growth, and the edge digests."""

from __future__ import annotations

import hashlib
import sys

import pytest

from ctstream.streams.digest_set import SHARDS, SLOT, DigestSet


def _digests(prefix: str, n: int) -> list[bytes]:
    return [hashlib.blake2b(f"{prefix}{i}".encode(), digest_size=SLOT).digest() for i in range(n)]


def test_holds_what_was_added_and_nothing_else_across_many_resizes() -> None:
    added, others = _digests("in-", 50_000), _digests("out-", 50_000)
    ids = DigestSet()
    for start in range(0, len(added), 700):  # batches, as the dedup agent adds them
        ids.update(added[start : start + 700])
    assert len(ids) == len(added)
    assert all(d in ids for d in added)
    assert not any(d in ids for d in others)
    assert sorted(ids) == sorted(added)


def test_adding_again_does_not_count_twice() -> None:
    ids = DigestSet(_digests("a", 100))
    ids.update(_digests("a", 100))
    assert len(ids) == 100


def test_digests_that_share_a_shard_and_a_start_slot_are_kept_apart() -> None:
    # Same first byte (shard) and same probe start: only linear probing separates them.
    base = bytes([7]) + bytes(8)
    colliding = [base + bytes([i]) * 7 for i in range(1, 40)]
    ids = DigestSet(colliding)
    assert all(d in ids for d in colliding)
    assert base + bytes([200]) * 7 not in ids
    assert len(ids) == len(colliding)


def test_the_all_zero_digest_is_a_member_like_any_other() -> None:
    # The free-slot marker must not be confused with a stored digest.
    zero = bytes(SLOT)
    ids = DigestSet()
    assert zero not in ids
    ids.add(zero)
    ids.add(zero)
    assert zero in ids and len(ids) == 1 and list(ids) == [zero]


def test_a_wrong_size_is_refused_on_add_and_absent_on_lookup() -> None:
    ids = DigestSet()
    with pytest.raises(ValueError, match="16 bytes, got 3"):
        ids.add(b"abc")
    assert b"abc" not in ids
    assert "not bytes" not in ids


def test_costs_far_less_than_a_set_of_bytes() -> None:
    digests = _digests("m-", 100_000)
    ids = DigestSet(digests)
    table_bytes = sum(sys.getsizeof(shard) for shard in ids._shards)
    assert len(ids._shards) == SHARDS
    # 16-byte slots at most 70% full after growth: between 23 and 46 bytes per id; a set of
    # bytes objects is about 96.
    assert table_bytes / len(digests) < 50
