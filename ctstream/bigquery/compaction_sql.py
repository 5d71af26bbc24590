"""The SQL of compaction: ``<t>_current`` merged from the change log, and the views on it.

``<t>_current`` holds one row per key ever written: the newest by ``changetrack_ver``
(then ``bigquery_insert_time``), deletes kept as tombstones so that an older copy of a
change written later cannot bring a deleted key back. The leader merges the change log's
rows with ``bigquery_insert_time`` in ``(merged_from, merged_to]`` into it and records
``merged_to`` in ``_ctstream_compaction``; the latest-state view reads ``<t>_current``
plus the change log's rows after ``merged_to`` (the tail).

The tail is also bounded by a constant ``compact_horizon`` before ``CURRENT_TIMESTAMP()``,
because BigQuery prunes partitions for constant filters only (a subquery's result does
not prune): the view's cost follows the rows that exist and the last horizon of changes.
When compaction falls further behind than the horizon, the view raises an error naming
the table and what to do instead of leaving changes out.

Every name is quoted (``quote_bq``); table names go into string literals only as
BigQuery table names, which are ``[A-Za-z0-9_]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ctstream.bigquery.layout import quote_bq
from ctstream.models import TableSpec

# Rows ranked per key: the newest change version wins; among copies of one change (the
# same version), the one written last.
_RANK = "ORDER BY changetrack_ver DESC, bigquery_insert_time DESC"
_EPOCH = "TIMESTAMP '1970-01-01 00:00:00+00'"


def _keys(spec: TableSpec) -> list[str]:
    return [quote_bq(c.bq_name) for c in spec.key_columns]


def _snapshot_version(spec: TableSpec, snapshots_ref: str, completed_by: str = "") -> str:
    """The table's newest completed snapshot's version (0: none), of those completed by
    the SQL time ``completed_by`` when given."""
    by = f" AND completed_at <= {completed_by}" if completed_by else ""
    return (
        f"(SELECT IFNULL(MAX(snapshot_version), 0) FROM {quote_bq(snapshots_ref)} "
        f"WHERE table_name = '{spec.base_bq_table}'{by})"
    )


def merge_sql(
    spec: TableSpec,
    columns: Sequence[str],
    change_ref: str,
    current_ref: str,
) -> str:
    """MERGE the change log's rows of ``(@merged_from, @merged_to]`` (by insert time) into
    ``<t>_current``: per key the newest row of the window, replacing the current row only
    when newer. Idempotent: merging a window again changes nothing."""
    cols = [quote_bq(c) for c in columns]
    keys = _keys(spec)
    on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)
    updates = ", ".join(f"{c} = s.{c}" for c in cols)
    return (
        f"MERGE {quote_bq(current_ref)} AS t USING ("
        "SELECT * EXCEPT (_ctstream_rank) FROM ("
        f"SELECT {', '.join(cols)}, ROW_NUMBER() OVER (PARTITION BY {', '.join(keys)} "
        f"{_RANK}) AS _ctstream_rank FROM {quote_bq(change_ref)} "
        "WHERE bigquery_insert_time > @merged_from AND bigquery_insert_time <= @merged_to) "
        f"WHERE _ctstream_rank = 1) AS s ON {on} "
        "WHEN MATCHED AND (s.changetrack_ver > t.changetrack_ver OR "
        "(s.changetrack_ver = t.changetrack_ver AND "
        "s.bigquery_insert_time > t.bigquery_insert_time)) "
        f"THEN UPDATE SET {updates} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) "
        f"VALUES ({', '.join('s.' + c for c in cols)})"
    )


def prune_sql(spec: TableSpec, current_ref: str, snapshots_ref: str) -> str:
    """Remove the rows older than the table's newest snapshot completed by ``@merged_to``:
    their keys were not seen by it, so they were deleted while their changes were lost
    (the latest-state view hides them as well). Snapshots completed later wait for a later
    merge, so ``<t>_current`` is the state at its watermark (what a daily copy keeps)."""
    return (
        f"DELETE FROM {quote_bq(current_ref)} WHERE changetrack_ver < "
        f"{_snapshot_version(spec, snapshots_ref, '@merged_to')}"
    )


def save_watermark_sql(compaction_ref: str) -> str:
    """Record a merge: ``@table_name``'s change log is merged up to ``@merged_to``."""
    return (
        f"MERGE {quote_bq(compaction_ref)} AS t USING (SELECT @table_name AS table_name, "
        "@merged_to AS merged_to, @merged_at AS merged_at, @rows_merged AS rows_merged, "
        "@merge_seconds AS merge_seconds) AS s ON t.table_name = s.table_name "
        "WHEN MATCHED THEN UPDATE SET merged_to = s.merged_to, merged_at = s.merged_at, "
        "rows_merged = s.rows_merged, merge_seconds = s.merge_seconds "
        "WHEN NOT MATCHED THEN INSERT (table_name, merged_to, merged_at, rows_merged, "
        "merge_seconds) VALUES (s.table_name, s.merged_to, s.merged_at, s.rows_merged, "
        "s.merge_seconds)"
    )


def _merged_to(table: str, compaction_ref: str) -> str:
    return (
        f"(SELECT IFNULL(MAX(merged_to), {_EPOCH}) FROM {quote_bq(compaction_ref)} "
        f"WHERE table_name = '{table}')"
    )


def latest_view_sql(
    spec: TableSpec,
    columns: Sequence[str],
    change_ref: str,
    current_ref: str,
    snapshots_ref: str,
    compaction_ref: str,
    horizon_s: int,
) -> str:
    """``<t>_latest``: the newest row per key of ``<t>_current`` plus the change log's tail
    (rows after the merge watermark), deleted keys and keys older than the newest
    completed snapshot left out. Raises a query error when the watermark is older than
    ``horizon_s`` (the tail would miss rows)."""
    cols = ", ".join(quote_bq(c) for c in columns)
    keys = ", ".join(_keys(spec))
    table = spec.bq_table
    behind = (
        f"{_merged_to(table, compaction_ref)} < "
        f"TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {horizon_s} SECOND)"
    )
    guard = (
        f"(SELECT IF({behind}, ERROR('{table}_latest: {table} has not been compacted "
        f"for more than {horizon_s} s (bigquery.compact_horizon); is a worker running? "
        f"ctstream compact --table <source table> catches up'), TRUE))"
    )
    return (
        "SELECT * EXCEPT (_ctstream_rank) FROM ("
        f"SELECT *, ROW_NUMBER() OVER (PARTITION BY {keys} {_RANK}) AS _ctstream_rank "
        f"FROM (SELECT {cols} FROM {quote_bq(current_ref)} UNION ALL "
        f"SELECT {cols} FROM {quote_bq(change_ref)} WHERE bigquery_insert_time > "
        f"TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {horizon_s} SECOND) "
        f"AND bigquery_insert_time > {_merged_to(table, compaction_ref)})) "
        "WHERE _ctstream_rank = 1 AND changetrack_type != 'D' AND changetrack_ver >= "
        f"{_snapshot_version(spec, snapshots_ref)} AND {guard}"
    )


COPY_COLUMN = "_ctstream_merged_to"  # in <t>_daily: the watermark of the copied state
# <t>_at(ts) looks for a daily copy this far before ts (a constant bound: BigQuery prunes
# the other days' partitions).
COPY_LOOKBACK_DAYS = 7


# The id of the row each copy adds, so that a copy of an empty table exists too: a
# delete of a NULL key at version 0, which no query shows (deleted, and older than any
# row of a real key).
COPY_MARKER_ID = "_ctstream_daily_copy"
_MARKER_VALUES = {
    "message_unique_id": f"'{COPY_MARKER_ID}'",
    "table_name": f"'{COPY_MARKER_ID}'",
    "changetrack_type": "'D'",
    "changetrack_ver": "0",
}


def daily_copy_sql(columns: Sequence[str], current_ref: str, daily_ref: str) -> str:
    """Copy ``<t>_current`` into ``<t>_daily`` as the state merged up to ``@merged_to``,
    with the copy's marker row."""
    cols = ", ".join(quote_bq(c) for c in columns)
    marker = ", ".join(_MARKER_VALUES.get(c, "NULL") for c in columns)
    return (
        f"INSERT INTO {quote_bq(daily_ref)} ({cols}, {COPY_COLUMN}) "
        f"SELECT {cols}, @merged_to FROM {quote_bq(current_ref)} "
        f"UNION ALL SELECT {marker}, @merged_to"
    )


def time_travel_from_copies_sql(
    function_ref: str,
    spec: TableSpec,
    columns: Sequence[str],
    change_ref: str,
    daily_ref: str,
    snapshots_ref: str,
    retention_s: int,
) -> str:
    """``<t>_at(ts)`` from the newest daily copy made at or before ``ts`` (within
    ``COPY_LOOKBACK_DAYS``) plus the change rows inserted after that copy's watermark and
    read at or before ``ts``.

    Raises a query error instead of answering when the answer could be wrong: no copy is
    that close before ``ts``, or ``ts`` is after its copy while the change rows after the
    copy may have expired (the copy is within a day of the change log's retention
    ``retention_s``). At a copy's own time (00:00 UTC each day) the copy answers alone."""
    cols = ", ".join(quote_bq(c) for c in columns)
    keys = ", ".join(_keys(spec))
    daily = quote_bq(daily_ref)
    near = (
        f"{COPY_COLUMN} <= ts AND {COPY_COLUMN} > "
        f"TIMESTAMP_SUB(ts, INTERVAL {COPY_LOOKBACK_DAYS * 24} HOUR)"
    )
    copy = f"(SELECT MAX({COPY_COLUMN}) FROM {daily} WHERE {near})"
    expired = f"TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {max(0, retention_s - 86_400)} SECOND)"
    table = spec.bq_table
    guard = (
        f"(SELECT IF({copy} IS NULL, ERROR(CONCAT('{table}_at: no daily copy of {table} "
        f"was made in the {COPY_LOOKBACK_DAYS} days before ', CAST(ts AS STRING), '; the "
        f"change log alone may no longer reach back that far')), IF({copy} < ts AND "
        f"{copy} < {expired}, ERROR(CONCAT('{table}_at: the changes after the daily copy "
        f"of ', CAST({copy} AS STRING), ' may have expired from the change log "
        "(bigquery.change_log_retention); ask for a time a daily copy was made "
        "(00:00 UTC)')), TRUE)))"
    )
    return (
        f"CREATE OR REPLACE TABLE FUNCTION {quote_bq(function_ref)}(ts TIMESTAMP) AS "
        "SELECT * EXCEPT (_ctstream_rank) FROM ("
        f"SELECT *, ROW_NUMBER() OVER (PARTITION BY {keys} {_RANK}) AS _ctstream_rank "
        f"FROM (SELECT {cols} FROM {daily} WHERE {near} AND {COPY_COLUMN} = {copy} "
        f"UNION ALL SELECT {cols} FROM {quote_bq(change_ref)} "
        "WHERE changetrack_start_time <= ts AND bigquery_insert_time > "
        f"TIMESTAMP_SUB(ts, INTERVAL {(COPY_LOOKBACK_DAYS + 1) * 24} HOUR) "
        f"AND bigquery_insert_time > IFNULL({copy}, {_EPOCH}))) "
        "WHERE _ctstream_rank = 1 AND changetrack_type != 'D' AND changetrack_ver >= "
        f"{_snapshot_version(spec, snapshots_ref, 'ts')} AND {guard}"
    )
