"""The tables a worker carries right now: found at start, and found or lost while running."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ctstream.models import TableSpec


@dataclass
class TableRegistry:
    """Shared, live: the pollers, the sink and the status views all read these dicts."""

    # Every table carried since start (one no longer tracked stays: its rows still flow).
    specs: dict[str, TableSpec]
    # Tables not polled any more because the source stopped tracking them → why.
    untracked: dict[str, str] = field(default_factory=dict)
    # Source columns that changed in ways BigQuery cannot follow → what to do.
    schema_notes: dict[str, list[str]] = field(default_factory=dict)
    # When each table was found while running (epoch seconds); absent for start tables.
    found_at: dict[str, float] = field(default_factory=dict)
    # Looks at the source catalog while running, and when the last one completed.
    discovery_rounds: int = 0
    discovered_at: float | None = None

    def polled(self) -> list[str]:
        """The tables to send poll ticks for."""
        return [name for name in self.specs if name not in self.untracked]


def name_clash(existing: Iterable[TableSpec], spec: TableSpec) -> str | None:
    """Why ``spec`` cannot join ``existing``: two source tables must not share a BigQuery
    table or a topic (``a.b_c`` and ``a_b.c`` both become ``a_b_c``)."""
    for other in existing:
        if other.name == spec.name:
            continue
        if other.bq_table.lower() == spec.bq_table.lower():
            what, clash = "BigQuery table", spec.bq_table
        elif other.topic_part == spec.topic_part:
            what, clash = "topic name", spec.topic_part
        else:
            continue
        return (
            f"source.tables: {other.name!r} and {spec.name!r} map to the same {what} "
            f"{clash!r}; carry only one of them per pipeline (exclude the other with '!')"
        )
    return None
