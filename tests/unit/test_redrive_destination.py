"""Redrive sends each error record to the BigQuery table it was parked from: the
restricted copy for a record read from the table's restricted-copy topic, else the main
table; a row parked from both tables is redriven to both."""

from __future__ import annotations

from typing import Any

import pytest

from ctstream.commands.redrive import (
    destination,
    newest_per_destination,
    parked_from_restricted_copy,
)
from ctstream.models import TableSpec
from ctstream.streams.topics import TopicNames

ITEMS = TableSpec("items", None, "items", ())
DBO_ITEMS = TableSpec("dbo.items", "dbo", "items", ())


def record(table: str, topic: str | None, uid: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"source_table": table, "topic": topic, "message_unique_id": uid, **extra}


@pytest.mark.parametrize("prefix", ["ctstream", "team.pipeline.v2", "a-b_c"])
@pytest.mark.parametrize("spec", [ITEMS, DBO_ITEMS])
def test_the_restricted_copy_topic_means_the_restricted_copy(prefix: str, spec: TableSpec) -> None:
    names = TopicNames(prefix)
    assert parked_from_restricted_copy(record(spec.name, names.restricted(spec)))
    for topic in (names.raw(spec), names.deduped(spec), names.errors, names.poll_ticks):
        assert not parked_from_restricted_copy(record(spec.name, topic)), topic


def test_no_topic_or_another_tables_restricted_topic_means_the_main_table() -> None:
    other = TopicNames("ctstream").restricted(TableSpec("other_items", None, "other_items", ()))
    assert other.endswith("_items.restricted")  # shares a tail with items' topic
    assert not parked_from_restricted_copy(record("items", other))
    assert not parked_from_restricted_copy(record("items", None))
    assert not parked_from_restricted_copy(record("items", ""))
    assert not parked_from_restricted_copy({"source_table": "items"})  # no topic column


def test_destination_names_the_restricted_copys_table() -> None:
    assert destination("items", restricted=False).bq_table == "items"
    assert destination("items", restricted=True).bq_table == "items_restricted"
    assert destination("dbo.items", restricted=True).bq_table == "dbo_items_restricted"
    assert destination("dbo.items", restricted=True).variant == "restricted"


def test_a_row_parked_from_both_tables_is_selected_once_for_each() -> None:
    names = TopicNames("p")
    deduped, restricted = names.deduped(ITEMS), names.restricted(ITEMS)
    rows = [  # oldest first, as select_records queries them
        record("items", deduped, "u1", reason="old main"),
        record("items", restricted, "u1", reason="old restricted"),
        record("items", deduped, "u1", reason="new main"),
        record("items", restricted, "u1", reason="new restricted"),
        record("items", restricted, "u2", reason="u2 restricted"),
        record("orders", deduped, "u3", reason="not selected"),
    ]
    chosen = newest_per_destination(rows, {"items"})
    assert sorted(r["reason"] for r in chosen) == ["new main", "new restricted", "u2 restricted"]
    by_reason = {r["reason"]: parked_from_restricted_copy(r) for r in chosen}
    assert by_reason == {"new main": False, "new restricted": True, "u2 restricted": True}
