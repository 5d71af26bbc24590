"""The change log's merged rows expire: after the fault run, every table is merged up to
its newest row (as the leader would, a settle time later) and the merged change rows are
deleted, as partition expiration would delete them (the emulator does not expire
partitions); the latest views must still equal the source."""

from __future__ import annotations

import datetime as dt

from google.cloud import bigquery

from ctstream.bigquery.compaction import compact
from ctstream.source.reader import SourceReader
from tests.integration.harness import Harness


async def repeated_ids(h: Harness) -> int:
    """Change rows whose ``message_unique_id`` an earlier row of their table has: the
    change log is at-least-once (the views show each key once)."""
    repeated = 0
    for name in h.tables:
        rows = await h.writer.query(
            "SELECT COUNT(*) - COUNT(DISTINCT message_unique_id) AS n "
            f"FROM `{h.writer.ref(h.spec(name).bq_table)}`"
        )
        repeated += int(rows[0]["n"])
    return repeated


async def repeated_samples(h: Harness, per_table: int = 3) -> list[str]:
    """For a post-mortem: a few repeated ids per table, with when and how each copy came."""
    lines: list[str] = []
    for name in h.tables:
        table = h.writer.ref(h.spec(name).bq_table)
        rows = await h.writer.query(
            "SELECT message_unique_id, bigquery_insert_time, changetrack_start_time, "
            f"changetrack_ver, changetrack_type FROM `{table}` WHERE message_unique_id IN ("
            f"SELECT message_unique_id FROM `{table}` GROUP BY message_unique_id "
            f"HAVING COUNT(*) > 1 ORDER BY message_unique_id LIMIT {per_table}) "
            "ORDER BY message_unique_id, bigquery_insert_time"
        )
        lines += [
            f"{name}: {r['message_unique_id']} inserted {r['bigquery_insert_time']} "
            f"polled {r['changetrack_start_time']} ver {r['changetrack_ver']} "
            f"{r['changetrack_type']}"
            for r in rows
        ]
    return lines


async def compact_and_expire(h: Harness) -> int:
    """Merge each table (and restricted copy) up to its newest row, then delete every
    change row the merge covered; the rows deleted."""
    reader = SourceReader(h.settings.source)
    deleted = 0
    try:
        for name in h.tables:
            spec = await reader.describe(name)
            for each in [spec, spec.restricted_copy()] if spec.restricted else [spec]:
                table = h.writer.ref(each.bq_table)
                rows = await h.writer.query(f"SELECT MAX(bigquery_insert_time) AS t FROM `{table}`")
                newest = rows[0]["t"] if rows else None
                if not isinstance(newest, dt.datetime):
                    continue
                await compact(h.writer, each, merged_to=newest)
                deleted += await h.writer.execute(
                    f"DELETE FROM `{table}` WHERE bigquery_insert_time <= @t",
                    [bigquery.ScalarQueryParameter("t", "TIMESTAMP", newest)],
                    f"expiring the merged rows of {each.bq_table}",
                )
    finally:
        await reader.close()
    return deleted
