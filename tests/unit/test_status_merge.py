"""``ctstream status --worker URL…``: the workers' own counters add up per table."""

from __future__ import annotations

from typing import Any

from ctstream.commands.status import merge_live_counters


def test_counters_and_failed_polls_are_summed_over_the_workers() -> None:
    tables: dict[str, dict[str, Any]] = {"items": {"saved_version": 5}, "orders": {}}
    progress = {"phase": "reading", "rows": 40, "chunks": 4}
    statuses = [
        {"tables": {"items": {"polls": 3, "rows_written": 10, "poll_failures": {"kafka": 1}}}},
        {
            "tables": {
                "items": {
                    "polls": 2,
                    "rows_written": 5,
                    "poll_failures": {"kafka": 2, "timeout": 1},
                    "snapshot": progress,
                },
                "elsewhere": {"polls": 9},  # a table this config does not select
            }
        },
    ]
    merge_live_counters(tables, statuses)
    items = tables["items"]
    assert (items["polls"], items["rows_written"], items["saved_version"]) == (5, 15, 5)
    assert items["poll_failures"] == {"kafka": 3, "timeout": 1}
    assert items["snapshot"] == progress
    assert tables["orders"] == {}  # no worker reported it
    assert "elsewhere" not in tables
