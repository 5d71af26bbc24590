"""The objects ctstream keeps beside each change table: ``<t>_current``, ``<t>_daily``
(with a change-log retention), the latest-state view and the time-travel function."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from google.cloud import bigquery

from ctstream.bigquery.compaction import compact, current_table, watermark
from ctstream.bigquery.compaction_sql import latest_view_sql, time_travel_from_copies_sql
from ctstream.bigquery.daily_copies import daily_table, ensure_daily
from ctstream.bigquery.layout import time_travel_function_sql
from ctstream.bigquery.schema import COMPACTION_TABLE, SNAPSHOTS_TABLE
from ctstream.errors import CtstreamError
from ctstream.models import TableSpec

if TYPE_CHECKING:
    from ctstream.bigquery.writer import BigQueryWriter

log = logging.getLogger(__name__)


async def ensure_current_and_views(writer: BigQueryWriter, spec: TableSpec) -> None:
    """``<t>_current`` with every column of the change table (created like it, clustered
    by the key; columns it lacks added), merged at least once, then the latest-state
    view on both and the time-travel function (from ``<t>_daily`` and the change log when
    the change log has a retention, else from the change log alone)."""
    table = spec.bq_table
    change = await writer.table(table)
    retention = writer.settings.change_log_retention
    if retention is not None and change.time_partitioning is None:
        log.warning(
            "table %s was created unpartitioned, so bigquery.change_log_retention does not "
            "apply to it; BigQuery cannot partition an existing table (copy it into a "
            "partitioned one to apply a retention)",
            table,
        )
    fields = list(change.schema)
    current = bigquery.Table(writer.ref(current_table(table)), schema=fields)
    current.clustering_fields = (
        change.clustering_fields or [c.bq_name for c in spec.key_columns][:4]
    )
    await writer.create(current, f"creating table {current_table(table)}")
    await writer.add_fields(current_table(table), fields)
    if await watermark(writer, table) is None:
        # The view's tail reaches back a horizon only: merge what is there first (all of
        # it when an older ctstream wrote this change log).
        try:
            result = await compact(writer, spec)
            log.info(
                "table %s: first merge into %s",
                table,
                current_table(table),
                extra={"ctstream": result.as_json()},
            )
        except CtstreamError:
            if await watermark(writer, table) is None:  # another worker's merge won
                raise
    snapshots = writer.ref(SNAPSHOTS_TABLE)
    horizon = int(writer.settings.compact_horizon)
    view = latest_view_sql(
        spec,
        [f.name for f in fields],
        writer.ref(table),
        writer.ref(current_table(table)),
        snapshots,
        writer.ref(COMPACTION_TABLE),
        horizon,
    )
    await writer.ensure_view(f"{table}_latest", view)
    function = writer.ref(f"{table}_at")
    if retention is None:  # the change log holds the whole past
        sql = time_travel_function_sql(function, writer.ref(table), spec, snapshots)
    else:
        await ensure_daily(writer, spec, fields)
        sql = time_travel_from_copies_sql(
            function,
            spec,
            [f.name for f in fields],
            writer.ref(table),
            writer.ref(daily_table(table)),
            snapshots,
            int(retention),
        )
    await writer.execute(sql, (), f"creating table function {table}_at")
