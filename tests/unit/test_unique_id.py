"""The change's unique id and Kafka key: injective, deterministic, reversible."""

from __future__ import annotations

import itertools

import pytest

from ctstream.models.unique_id import (
    encode_key,
    parse_unique_id,
    snapshot_id_suffix,
    unique_id,
)
from ctstream.models.values import JsonValue

HOSTILE_VALUES: list[str] = [
    "",
    ",",
    '"',
    "]",
    "[",
    "\\",
    "|",
    '","',
    '"],["',
    "a,b",
    'a"b',
    "a]b",
    "a\\b",
    "a\\",
    "a|b",
    "é",
    "e\u0301",  # e + combining acute: looks like 'é' but is a different string
    "日本",
    "😀",
    "\n",
    "\x00",
    " ",
]


def test_seed_collision_is_gone() -> None:
    # The seed system joined ('1', '23') and ('12', '3') into the same '123'.
    assert unique_id("items", ["1", "23"], 7) != unique_id("items", ["12", "3"], 7)


def test_composite_key_order_matters() -> None:
    assert unique_id("t", ["a", "b"], 1) != unique_id("t", ["b", "a"], 1)


def test_version_is_part_of_the_id() -> None:
    assert unique_id("t", [1], 1) != unique_id("t", [1], 2)
    assert unique_id("t", [1], 12) != unique_id("t", [11], 2)


def test_table_is_part_of_the_id() -> None:
    assert unique_id("a", [1], 1) != unique_id("b", [1], 1)


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_hostile_values_round_trip(value: str) -> None:
    uid = unique_id("t", [value, "x"], 3)
    assert parse_unique_id(uid) == ("t", [value, "x"], 3)


def test_hostile_values_stay_distinct() -> None:
    ids = {unique_id("t", [v], 1) for v in HOSTILE_VALUES}
    assert len(ids) == len(set(HOSTILE_VALUES))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, "1"),
        (True, 1),
        (True, "true"),
        (None, "null"),
        (None, ""),
        (1.0, 1),
        (False, 0),
        (1.5, "1.5"),
    ],
)
def test_types_are_distinguished(a: JsonValue, b: JsonValue) -> None:
    assert unique_id("t", [a], 1) != unique_id("t", [b], 1)
    assert encode_key([a]) != encode_key([b])


def test_int_and_str_round_trip_with_their_types() -> None:
    _, key, _ = parse_unique_id(unique_id("t", [1, "1"], 5))
    assert key == [1, "1"]
    assert type(key[0]) is int
    assert type(key[1]) is str


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a,b", ["c"]), ("a", ["b", "c"])),
        (('a",["b', ["c"]), ("a", ["b", "c"])),
        (('a",["b"],1', []), ("a", ["b"])),
        (("a]", ["b"]), ("a", ["]b"])),
        (("a\\", ["b"]), ("a", ["\\b"])),
        (("a|b", ["c"]), ("a", ["b|c"])),
    ],
)
def test_table_names_with_separators_cannot_collide(
    first: tuple[str, list[JsonValue]], second: tuple[str, list[JsonValue]]
) -> None:
    id1 = unique_id(first[0], first[1], 1)
    id2 = unique_id(second[0], second[1], 1)
    assert id1 != id2
    assert parse_unique_id(id1) == (first[0], first[1], 1)
    assert parse_unique_id(id2) == (second[0], second[1], 1)


def test_deterministic() -> None:
    key: list[JsonValue] = ["a,b", 1, None, True, 2.5, "日本"]
    first = unique_id("dbo.items", key, 42)
    assert unique_id("dbo.items", list(key), 42) == first
    assert unique_id("dbo.items", tuple(key), 42) == first  # any sequence, same id
    assert isinstance(first, str)


def test_brute_force_two_tuples_never_collide() -> None:
    words = ["123", "a,b", 'x"y]', "\\|\\", "ab]c", "日,本"]
    tuples: set[tuple[str, str]] = set()
    for word in words:
        for i in range(len(word) + 1):
            tuples.add((word[:i], word[i:]))
    # Also pairs formed from different words, to mix separators across positions.
    for a, b in itertools.product(words, repeat=2):
        tuples.add((a, b))
    ids: dict[str, tuple[str, str]] = {}
    for t in tuples:
        uid = unique_id("t", list(t), 1)
        assert uid not in ids, f"{t!r} and {ids[uid]!r} share the id {uid!r}"
        ids[uid] = t
        assert parse_unique_id(uid) == ("t", list(t), 1)
    assert len(ids) == len(tuples)


def test_brute_force_table_and_key_splits_never_collide() -> None:
    # Split one string into (table, k1, k2) in every way: moving characters between the
    # table name and the key parts must always change the id.
    words = ['a,b"c', "x]y\\z", "1|2,3"]
    seen: dict[str, tuple[str, str, str]] = {}
    for word in words:
        n = len(word)
        for i in range(n + 1):
            for j in range(i, n + 1):
                parts = (word[:i], word[i:j], word[j:])
                uid = unique_id(parts[0], [parts[1], parts[2]], 9)
                assert uid not in seen, f"{parts!r} and {seen[uid]!r} collide"
                seen[uid] = parts


def test_encode_key_equal_keys_equal_bytes() -> None:
    a = encode_key(["12", 3, None])
    b = encode_key(("12", 3, None))
    assert a == b
    assert isinstance(a, bytes)
    assert encode_key(["1", "23"]) != encode_key(["12", "3"])


def test_encode_key_is_independent_of_table_and_version() -> None:
    # Same key → same Kafka key (same partition) whatever the version of the change.
    assert encode_key([5]) == encode_key([5])
    assert encode_key([5]) != encode_key([6])


def test_a_snapshot_row_is_identified_by_its_snapshot_not_its_version() -> None:
    """Copies of one snapshot row (read again at another version) share one id; another
    snapshot's row, or a change at the same version, never does."""
    first = unique_id("t", [1, "a"], 7, "r1")
    assert unique_id("t", [1, "a"], 9, "r1") == first
    assert first != unique_id("t", [1, "a"], 7, "r2")
    assert first != unique_id("t", [1, "a"], 7)
    assert parse_unique_id(first) == ("t", [1, "a"], "S:r1")
    assert first.endswith(snapshot_id_suffix("r1"))
    assert not unique_id("t", [1], 7, "r10").endswith(snapshot_id_suffix("r1"))
