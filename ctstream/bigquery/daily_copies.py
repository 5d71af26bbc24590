"""Daily copies of ``<t>_current`` in ``<t>_daily``, so that ``<t>_at(ts)`` outlives the
change log's retention (``bigquery.change_log_retention``).

Once a day the leader merges up to exactly 00:00 UTC and copies ``<t>_current`` into
``<t>_daily`` with ``_ctstream_merged_to`` = that midnight: ``<t>_at`` at a midnight is
then the copy itself, and between two copies the copy plus the change rows after it.
``<t>_daily`` is partitioned by day of ``_ctstream_merged_to``, partitions expiring after
``bigquery.daily_snapshot_retention``.

Why one partitioned table and not BigQuery table snapshots: a table function cannot pick
a table by a parameter, so ``<t>_at(ts)`` could not choose among snapshots; a partition
per day gives the same retention by partition expiry, and the query reads one day of it.
A copy stores the whole current table each day (table snapshots would store only what
changed).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING

from google.cloud import bigquery

from ctstream.bigquery.compaction import MergeResult, compact, current_table, watermark
from ctstream.bigquery.compaction_sql import COPY_COLUMN, daily_copy_sql
from ctstream.bigquery.layout import quote_bq
from ctstream.models import TableSpec

if TYPE_CHECKING:
    from ctstream.bigquery.writer import BigQueryWriter


def daily_table(bq_table: str) -> str:
    return f"{bq_table}_daily"


async def ensure_daily(
    writer: BigQueryWriter, spec: TableSpec, fields: list[bigquery.SchemaField]
) -> None:
    """``<t>_daily``: the change table's columns and ``_ctstream_merged_to``."""
    name = daily_table(spec.bq_table)
    marker = bigquery.SchemaField(COPY_COLUMN, "TIMESTAMP", mode="REQUIRED")
    table = bigquery.Table(writer.ref(name), schema=[*fields, marker])
    table.time_partitioning = bigquery.TimePartitioning(
        type_="DAY",
        field=COPY_COLUMN,
        expiration_ms=int(writer.settings.daily_snapshot_retention * 1000),
    )
    table.clustering_fields = [c.bq_name for c in spec.key_columns][:4] or None
    await writer.create(table, f"creating table {name}")
    await writer.add_fields(name, fields)


async def newest_copy(writer: BigQueryWriter, bq_table: str) -> dt.datetime | None:
    """The watermark of the newest copy of the last two days (None: none that recent)."""
    rows = await writer.query(
        f"SELECT MAX({COPY_COLUMN}) AS merged_to FROM "
        f"{quote_bq(writer.ref(daily_table(bq_table)))} WHERE {COPY_COLUMN} > "
        "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 48 HOUR)"
    )
    value = rows[0].get("merged_to") if rows else None
    return value if isinstance(value, dt.datetime) else None


async def copy_current(writer: BigQueryWriter, spec: TableSpec, merged_to: dt.datetime) -> int:
    """Copy ``<t>_current`` (merged up to ``merged_to``) into ``<t>_daily``; rows copied."""
    table = spec.bq_table
    columns = [f.name for f in (await writer.table(table)).schema]
    sql = daily_copy_sql(columns, writer.ref(current_table(table)), writer.ref(daily_table(table)))
    param = bigquery.ScalarQueryParameter("merged_to", "TIMESTAMP", merged_to)
    return await writer.execute(sql, [param], f"copying {current_table(table)} of the day")


async def merge_round(
    writer: BigQueryWriter, spec: TableSpec, now: float | None = None
) -> MergeResult:
    """One table's merge for the leader's round: with a change-log retention, first up to
    today's 00:00 UTC and the day's copy there, when due."""
    if writer.settings.change_log_retention is not None:
        wall = time.time() if now is None else now
        midnight = dt.datetime.fromtimestamp(wall, dt.UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        newest = await newest_copy(writer, spec.bq_table)
        settled = wall - writer.settings.compact_settle
        if (newest is None or newest < midnight) and midnight.timestamp() <= settled:
            merged = await watermark(writer, spec.bq_table)
            if merged is None or merged < midnight:
                await compact(writer, spec, merged_to=midnight)
                merged = midnight
            # Past midnight already (the first day, or `ctstream compact` ran): the copy
            # is of the state at the watermark.
            await copy_current(writer, spec, merged)
    return await compact(writer, spec)
