"""The leader's compaction timer: every ``bigquery.compact_interval``, each table's change
log (and its restricted copy's) is merged into ``<t>_current`` (bigquery/compaction.py),
and once a day copied into ``<t>_daily`` when the change log has a retention
(bigquery/daily_copies.py).

Only the group's leader runs it, so one worker at a time merges; a failed merge is logged
and tried again at the next interval (the latest-state views stay right meanwhile: they
read the change log since the last merge).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ctstream.agents.registry import TableRegistry
from ctstream.bigquery.compaction import MergeResult
from ctstream.bigquery.daily_copies import merge_round
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.errors import CtstreamError
from ctstream.models import TableSpec
from ctstream.streams.app import PipelineApp

log = logging.getLogger(__name__)


@dataclass
class CompactionStats:
    """What this worker's merges did, by BigQuery table (main and restricted copies)."""

    last: dict[str, MergeResult] = field(default_factory=dict)
    merged_at: dict[str, float] = field(default_factory=dict)  # wall time of the last merge
    rows_merged: dict[str, int] = field(default_factory=dict)  # since start
    merges: dict[str, int] = field(default_factory=dict)  # since start
    merge_seconds: dict[str, float] = field(default_factory=dict)  # since start
    last_error: dict[str, str] = field(default_factory=dict)
    rounds: int = 0

    def note(self, result: MergeResult, at: float) -> None:
        table = result.table
        self.last[table] = result
        self.merged_at[table] = at
        self.rows_merged[table] = self.rows_merged.get(table, 0) + result.rows_merged
        if result.merged_to > result.merged_from:  # not a merge that found nothing to do
            self.merges[table] = self.merges.get(table, 0) + 1
            self.merge_seconds[table] = self.merge_seconds.get(table, 0.0) + result.seconds
        self.last_error.pop(table, None)

    def of(self, bq_table: str, now: float) -> dict[str, Any] | None:
        """The status of ``bq_table``'s compaction; None when this worker never merged it."""
        result = self.last.get(bq_table)
        error = self.last_error.get(bq_table)
        if result is None and error is None:
            return None
        return {
            "merged_to": result.merged_to.timestamp() if result else None,
            "merged_at": self.merged_at.get(bq_table),
            "lag_s": round(now - result.merged_to.timestamp(), 3) if result else None,
            "last_rows_merged": result.rows_merged if result else None,
            "last_seconds": round(result.seconds, 3) if result else None,
            "rows_merged": self.rows_merged.get(bq_table, 0),
            "merges": self.merges.get(bq_table, 0),
            "merge_seconds": round(self.merge_seconds.get(bq_table, 0.0), 3),
            "error": error,
        }


def compacted_specs(specs: dict[str, TableSpec]) -> list[TableSpec]:
    """The BigQuery tables to compact: each table and its restricted copy."""
    out: list[TableSpec] = []
    for spec in list(specs.values()):
        out.append(spec)
        if spec.restricted:
            out.append(spec.restricted_copy())
    return out


async def compact_all(
    registry: TableRegistry, writer: BigQueryWriter, stats: CompactionStats
) -> None:
    """One round: every table merged in turn; a failure is logged and left for the next."""
    stats.rounds += 1
    for spec in compacted_specs(registry.specs):
        try:
            result = await merge_round(writer, spec)
        except CtstreamError as exc:
            stats.last_error[spec.bq_table] = str(exc)
            log.warning(
                "merging %s into %s_current failed (tried again in the next round): %s",
                spec.bq_table,
                spec.bq_table,
                exc,
                extra={"ctstream": {"table": spec.name}},
            )
            continue
        stats.note(result, time.time())
        log.debug("merged %s", spec.bq_table, extra={"ctstream": result.as_json()})


def install_compaction(
    app: PipelineApp, registry: TableRegistry, writer: BigQueryWriter, stats: CompactionStats
) -> None:
    """The ``ctstream.compact`` timer, on the leader only."""
    interval = writer.settings.compact_interval

    @app.timer(interval, on_leader=True, name="ctstream.compact")
    async def compact_tables() -> None:
        try:
            await compact_all(registry, writer, stats)
        except Exception:  # a bug must not stop the timer: the next round tries again
            log.exception("a compaction round failed")
