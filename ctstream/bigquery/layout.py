"""The layout of ctstream's BigQuery tables: partitioning, clustering, views' SQL.

Every name in the SQL is quoted (``quote_bq``); the views read the change table and the
snapshots table, so the latest state and the state at a time are queries, not copies.
"""

from __future__ import annotations

from google.cloud import bigquery

from ctstream.errors import ConfigError
from ctstream.models import TableSpec
from ctstream.settings import BigQueryTableOptions


def quote_bq(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


_CLUSTERABLE = {"STRING", "INT64", "DATE", "DATETIME", "TIMESTAMP", "BOOL", "NUMERIC"}
_PARTITIONABLE = {"DATE", "DATETIME", "TIMESTAMP"}


def apply_layout(
    table: bigquery.Table,
    spec: TableSpec,
    fields: list[bigquery.SchemaField],
    options: BigQueryTableOptions,
    retention: float | None = None,
) -> None:
    """Partitioning and clustering from the options; refuse columns that cannot serve.

    ``retention`` (``bigquery.change_log_retention``, seconds): without a partition column
    of its own, the table is partitioned by day of ``bigquery_insert_time`` and its
    partitions expire after that long (compaction has merged them long before).
    """
    types = {f.name: f.field_type for f in fields}
    by_source = {c.name: c.bq_name for c in spec.columns}
    where = f"bigquery.tables.{spec.name!r}"

    def column(name: str, key: str, allowed: set[str]) -> str:
        bq = by_source.get(name, name)
        if bq not in types:
            raise ConfigError(f"{where}.{key}: {spec.name!r} has no column {name!r}")
        if types[bq] not in allowed:
            raise ConfigError(
                f"{where}.{key}: column {name!r} is {types[bq]}; expected one of "
                f"{', '.join(sorted(allowed))}"
            )
        return bq

    if options.partition_column is not None:
        table.time_partitioning = bigquery.TimePartitioning(
            type_=options.partition_granularity,
            field=column(options.partition_column, "partition_column", _PARTITIONABLE),
            expiration_ms=(
                None
                if options.partition_expiration is None
                else int(options.partition_expiration * 1000)
            ),
        )
    elif retention is not None:
        table.time_partitioning = bigquery.TimePartitioning(
            type_="DAY", field="bigquery_insert_time", expiration_ms=int(retention * 1000)
        )
    if options.cluster_by is not None:
        table.clustering_fields = [
            column(name, "cluster_by", _CLUSTERABLE) for name in options.cluster_by
        ]
    else:
        keys = [c.bq_name for c in spec.key_columns if types[c.bq_name] in _CLUSTERABLE]
        if keys:
            table.clustering_fields = keys[:4]


def time_travel_function_sql(
    function_ref: str, table_ref: str, spec: TableSpec, snapshots_ref: str
) -> str:
    """``<table>_at(ts)``: the table as ctstream had seen it at ``ts``.

    The latest row per key among changes read at or before ``ts`` (by the poll's start
    time), deleted keys left out, and keys older than the newest snapshot completed by
    ``ts`` left out, as in the latest-state view.
    """
    keys = ", ".join(quote_bq(c.bq_name) for c in spec.key_columns)
    return (
        f"CREATE OR REPLACE TABLE FUNCTION {quote_bq(function_ref)}(ts TIMESTAMP) AS "
        "SELECT * EXCEPT (_ctstream_rank) FROM ("
        f"SELECT *, ROW_NUMBER() OVER (PARTITION BY {keys} "
        "ORDER BY changetrack_ver DESC, bigquery_insert_time DESC) AS _ctstream_rank "
        f"FROM {quote_bq(table_ref)} WHERE changetrack_start_time <= ts) "
        "WHERE _ctstream_rank = 1 AND changetrack_type != 'D' AND changetrack_ver >= ("
        f"SELECT IFNULL(MAX(snapshot_version), 0) FROM {quote_bq(snapshots_ref)} "
        f"WHERE table_name = '{spec.base_bq_table}' AND completed_at <= ts)"
    )


def latest_view_sql(table_ref: str, spec: TableSpec, snapshots_ref: str) -> str:
    """Latest row per key by change version over the whole change table (for tables no
    worker compacts, e.g. a replay's ``--to-table``); deleted keys left out.

    Keys whose newest row is older than the table's newest completed snapshot are left out
    too: the snapshot read every row that existed, so such a key was deleted while its
    changes were lost (retention overrun, TRUNCATE).
    """
    keys = ", ".join(quote_bq(c.bq_name) for c in spec.key_columns)
    return (
        "SELECT * EXCEPT (_ctstream_rank) FROM ("
        f"SELECT *, ROW_NUMBER() OVER (PARTITION BY {keys} "
        "ORDER BY changetrack_ver DESC, bigquery_insert_time DESC) AS _ctstream_rank "
        f"FROM {quote_bq(table_ref)}) "
        "WHERE _ctstream_rank = 1 AND changetrack_type != 'D' AND changetrack_ver >= ("
        f"SELECT IFNULL(MAX(snapshot_version), 0) FROM {quote_bq(snapshots_ref)} "
        f"WHERE table_name = '{spec.base_bq_table}')"  # bq_table is [A-Za-z0-9_] only
    )
