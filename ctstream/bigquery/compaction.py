"""Compaction: ``<t>_current`` kept up to date from the change log (the views reading it
are made in table_views.py).

One merge of a table (:func:`compact`) runs three statements, each idempotent, so a crash
between any two is repaired by the next merge:

1. MERGE the change log's rows inserted after the saved watermark and up to
   ``now - settle`` into ``<t>_current`` (the newest row per key wins; compaction_sql.py);
2. DELETE the rows older than the table's newest snapshot completed by then;
3. record ``merged_to = now - settle`` in ``_ctstream_compaction``.

``settle`` (``bigquery.compact_settle``) covers a write in flight: the writer stamps
``bigquery_insert_time`` at each attempt, so a row is in BigQuery at most one request
timeout after its stamp; a row stamped before ``merged_to`` that landed after the merge
would be missed by both ``<t>_current`` and the view's tail. Worker clocks must agree
within the settle time's margin over the request timeout (NTP).

``<t>_current`` and the compaction table are written by DML only (never streamed), as
BigQuery allows DML on them at any time.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.cloud import bigquery

from ctstream.bigquery.compaction_sql import (
    merge_sql,
    prune_sql,
    save_watermark_sql,
)
from ctstream.bigquery.layout import quote_bq
from ctstream.bigquery.schema import COMPACTION_TABLE, SNAPSHOTS_TABLE
from ctstream.models import TableSpec

if TYPE_CHECKING:
    from ctstream.bigquery.writer import BigQueryWriter

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def current_table(bq_table: str) -> str:
    """The compacted table of the change table ``bq_table``."""
    return f"{bq_table}_current"


@dataclass(frozen=True)
class MergeResult:
    """One merge of one BigQuery table."""

    table: str  # the change table
    merged_from: dt.datetime
    merged_to: dt.datetime
    rows_merged: int  # rows of <t>_current inserted or updated
    rows_pruned: int  # rows removed as older than the newest snapshot
    seconds: float

    def as_json(self) -> dict[str, object]:
        return {
            "table": self.table,
            "merged_from": self.merged_from.isoformat(),
            "merged_to": self.merged_to.isoformat(),
            "rows_merged": self.rows_merged,
            "rows_pruned": self.rows_pruned,
            "seconds": round(self.seconds, 3),
        }


async def watermark(writer: BigQueryWriter, bq_table: str) -> dt.datetime | None:
    """Up to when ``bq_table``'s change log is merged; None if it never was."""
    rows = await writer.query(
        f"SELECT MAX(merged_to) AS merged_to FROM {quote_bq(writer.ref(COMPACTION_TABLE))} "
        "WHERE table_name = @table_name",
        [bigquery.ScalarQueryParameter("table_name", "STRING", bq_table)],
    )
    value = rows[0].get("merged_to") if rows else None
    return value if isinstance(value, dt.datetime) else None


async def compact(
    writer: BigQueryWriter, spec: TableSpec, merged_to: dt.datetime | None = None
) -> MergeResult:
    """Merge ``spec``'s change log into ``<t>_current`` up to ``merged_to`` (by default
    ``bigquery.compact_settle`` ago: only a test or a repair passes a later time)."""
    started = time.monotonic()
    table = spec.bq_table
    change = await writer.table(table)
    columns = [f.name for f in change.schema]
    merged_from = await watermark(writer, table) or _EPOCH
    if merged_to is None:
        settle = writer.settings.compact_settle
        merged_to = dt.datetime.fromtimestamp(time.time() - settle, dt.UTC)
    if merged_to <= merged_from:  # merged moments ago (e.g. by `ctstream compact`)
        return MergeResult(table, merged_from, merged_from, 0, 0, 0.0)
    window = [
        bigquery.ScalarQueryParameter("merged_from", "TIMESTAMP", merged_from),
        bigquery.ScalarQueryParameter("merged_to", "TIMESTAMP", merged_to),
    ]
    current = writer.ref(current_table(table))
    snapshots = writer.ref(SNAPSHOTS_TABLE)
    merged = await writer.execute(
        merge_sql(spec, columns, writer.ref(table), current), window, f"merging {table}"
    )
    pruned = await writer.execute(
        prune_sql(spec, current, snapshots), window[1:], f"pruning {current_table(table)}"
    )
    seconds = time.monotonic() - started
    await writer.execute(
        save_watermark_sql(writer.ref(COMPACTION_TABLE)),
        [
            bigquery.ScalarQueryParameter("table_name", "STRING", table),
            bigquery.ScalarQueryParameter("merged_to", "TIMESTAMP", merged_to),
            bigquery.ScalarQueryParameter("merged_at", "TIMESTAMP", dt.datetime.now(dt.UTC)),
            bigquery.ScalarQueryParameter("rows_merged", "INT64", merged),
            bigquery.ScalarQueryParameter("merge_seconds", "FLOAT64", seconds),
        ],
        f"recording the merge of {table}",
    )
    return MergeResult(table, merged_from, merged_to, merged, pruned, seconds)


async def rebuild(
    writer: BigQueryWriter, spec: TableSpec, merged_to: dt.datetime | None = None
) -> MergeResult:
    """Empty ``<t>_current`` and merge the whole change log again. Meanwhile the view
    reads the whole change log (the watermark is gone first), so it stays right; rows
    the change log no longer holds (expired partitions) cannot come back."""
    table = spec.bq_table
    await writer.execute(
        f"DELETE FROM {quote_bq(writer.ref(COMPACTION_TABLE))} WHERE table_name = @table_name",
        [bigquery.ScalarQueryParameter("table_name", "STRING", table)],
        f"forgetting the merges of {table}",
    )
    await writer.execute(
        f"DELETE FROM {quote_bq(writer.ref(current_table(table)))} WHERE TRUE",
        (),
        f"emptying {current_table(table)}",
    )
    return await compact(writer, spec, merged_to)
