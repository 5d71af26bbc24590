"""The fault suite's checks catch what they are meant to catch (synthetic inputs)."""

from __future__ import annotations

from collections import Counter

import orjson

from tests.faults.invariants import (
    Message,
    dedup_effect,
    poison_not_reported,
    versions_going_backwards,
)
from tests.faults.poison import Poison


def _event(offset: int, key: bytes, version: int, partition: int = 0) -> Message:
    value = orjson.dumps({"changetrack_ver": version})
    return Message("p.accounts.raw", partition, offset, key, value)


def test_versions_may_repeat_and_grow_but_not_go_back() -> None:
    fine = [_event(0, b"k", 5), _event(1, b"k", 5), _event(2, b"j", 3), _event(3, b"k", 9)]
    assert versions_going_backwards(fine) == []
    back = [*fine, _event(4, b"k", 7), Message("p.accounts.raw", 0, 5, b"x", b"\xff")]
    (problem,) = versions_going_backwards(back)
    assert "version 7 at offset 4 after version 9 at offset 3" in problem
    # Checked in offset order, whatever order the messages were read in.
    assert versions_going_backwards(list(reversed(back))) == [problem]


def test_every_poison_message_needs_an_error_record_with_a_reason() -> None:
    poison = [
        Poison("not-json", "p.accounts.raw", 1, 40),
        Poison("wrong-type", "p.accounts.raw", 0, 41, unique_id="u-1"),
    ]

    def record(**fields: object) -> Message:
        return Message("p.errors", 0, 0, None, orjson.dumps(fields))

    found = [
        record(reason="dedup: not JSON", topic="p.accounts.raw", partition=1, offset=40),
        record(
            reason="invalid row",
            topic="p.accounts.deduped",
            partition=0,
            offset=9,
            message_unique_id="u-1",
        ),
    ]
    assert poison_not_reported(poison, found) == []
    no_reason = [record(reason="", topic="p.accounts.raw", partition=1, offset=40), found[1]]
    assert poison_not_reported(poison, no_reason) == [
        "not-json poison at p.accounts.raw/1/40 not reported"
    ]
    assert len(poison_not_reported(poison, [])) == 2


def test_dedup_effect_counts_dropped_and_passed_copies_per_id() -> None:
    raw = Counter({"a": 3, "b": 1, "c": 2})  # a: re-read twice; c: once
    deduped = Counter({"a": 1, "b": 2, "c": 1})  # b: forwarded twice (a kill in between)
    assert dedup_effect(raw, deduped) == (3, 1)
