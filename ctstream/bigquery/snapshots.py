"""The BigQuery side of a snapshot: has BigQuery every row of it yet, and its record.

A snapshot is recorded in ``_ctstream_snapshots`` only once its rows are in BigQuery
(:func:`snapshot_rows_landed` counts them), because the record makes the latest-state
view hide every key whose newest row is older than the snapshot's start version: recorded
earlier, a key whose snapshot row is still on its way would vanish from the view.
"""

from __future__ import annotations

from google.cloud import bigquery

from ctstream.bigquery.layout import quote_bq
from ctstream.bigquery.schema import ERROR_RECORDS_TABLE, SNAPSHOTS_TABLE
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.errors import SinkError
from ctstream.models import TableSpec
from ctstream.models.unique_id import snapshot_id_suffix


async def snapshot_rows_landed(writer: BigQueryWriter, spec: TableSpec, snapshot: str) -> int:
    """How many distinct rows of ``snapshot`` BigQuery holds: written to the change table
    or parked in ``_error_records`` (a parked row is accounted for, not lost)."""
    suffix = bigquery.ScalarQueryParameter("suffix", "STRING", snapshot_id_suffix(snapshot))
    source = bigquery.ScalarQueryParameter("source", "STRING", spec.name)
    change_table = quote_bq(writer.ref(spec.bq_table))
    errors = quote_bq(writer.ref(ERROR_RECORDS_TABLE))
    rows = await writer.query(
        "SELECT (SELECT COUNT(DISTINCT message_unique_id) FROM "
        f"{change_table} WHERE changetrack_type = 'S' "
        "AND ENDS_WITH(message_unique_id, @suffix)) AS written, "
        f"(SELECT COUNT(DISTINCT message_unique_id) FROM {errors} "
        "WHERE source_table = @source AND ENDS_WITH(message_unique_id, @suffix)) AS parked",
        [suffix, source],
    )
    row = rows[0] if rows else {}
    return int(row.get("written") or 0) + int(row.get("parked") or 0)


async def record_snapshot(
    writer: BigQueryWriter,
    spec: TableSpec,
    version: int,
    row_count: int,
    reason: str,
    completed_at: str,
) -> None:
    """Note a completed snapshot that started at ``version``; the table's latest view
    then hides keys whose newest row is older (deleted while their changes were lost)."""
    row = {
        "table_name": spec.base_bq_table,
        "source_table": spec.name,
        "snapshot_version": version,
        "row_count": row_count,
        "reason": reason[:1000],
        "completed_at": completed_at,
    }
    rejected = await writer.insert(SNAPSHOTS_TABLE, [row], [f"{spec.base_bq_table}:{version}"])
    if rejected:
        raise SinkError(f"recording the snapshot of {spec.name!r}: {rejected[0][1]}")
