"""How the demo (and the integration tests) check BigQuery against the source."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import decimal
import math
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from ctstream.bigquery.writer import BigQueryWriter
from ctstream.models import TableSpec
from ctstream.settings import Settings
from ctstream.source.dialects import quote_sqlite
from ctstream.streams.offsets import group_lag
from ctstream.streams.security import client_options
from ctstream.streams.topics import TopicNames

SourceRows = dict[tuple[Any, ...], dict[str, Any]]


def _source_rows(db: Path, table: str) -> tuple[list[str], list[str], SourceRows]:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        info = conn.execute("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", (table,))
        cols = info.fetchall()
        names = [c[0] for c in cols]
        keys = [c[0] for c in sorted((c for c in cols if c[1]), key=lambda c: c[1])]
        sql = f"SELECT {', '.join(quote_sqlite(n) for n in names)} FROM {quote_sqlite(table)}"
        rows = {}
        for r in conn.execute(sql):
            row = dict(zip(names, r, strict=True))
            rows[tuple(row[k] for k in keys)] = row
    return names, keys, rows


def _same(a: Any, b: Any) -> bool:
    """Source value (sqlite3) vs BigQuery value (client), after the pipeline's mapping."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bytes):
        return a == (b if isinstance(b, bytes) else base64.b64decode(b))
    if isinstance(a, float) or isinstance(b, float | decimal.Decimal):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    if isinstance(b, dt.datetime) and isinstance(a, str):
        return dt.datetime.fromisoformat(a) == b.replace(tzinfo=None)
    if isinstance(b, dt.date | dt.time) and isinstance(a, str):
        return a == b.isoformat()
    return bool(a == b)


async def compare_table(
    db: Path, writer: BigQueryWriter, table: str, bq_table: str | None = None
) -> list[str]:
    """Differences between a source table and its latest-state view (empty: equal)."""
    names, keys, source = await asyncio.to_thread(_source_rows, db, table)
    spec_name = bq_table or TableSpec(table, None, table, ()).bq_table
    rows = await writer.query(f"SELECT * FROM `{writer.ref(spec_name + '_latest')}`")
    problems: list[str] = []
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        key = tuple(row[k] for k in keys)
        if key in seen:
            problems.append(f"{table}: key {key!r} appears twice in the latest view")
        seen.add(key)
        expected = source.get(key)
        if expected is None:
            problems.append(f"{table}: key {key!r} is in BigQuery but not in the source")
            continue
        for name in names:
            if not _same(expected[name], row.get(name)):
                problems.append(
                    f"{table}: key {key!r} column {name}: source {expected[name]!r}, "
                    f"BigQuery {row.get(name)!r}"
                )
                break
    for key in source.keys() - seen:
        problems.append(f"{table}: key {key!r} is missing from BigQuery")
    return problems


async def compare_tables(
    db: Path, writer: BigQueryWriter, tables: Sequence[str]
) -> tuple[int, list[str]]:
    problems: list[str] = []
    for table in tables:
        problems += await compare_table(db, writer, table)
    return len(problems), problems


async def latency_percentiles(
    writer: BigQueryWriter, tables: Sequence[str]
) -> tuple[float | None, float | None, int]:
    """p50 and p99 of bigquery_insert_time - changetrack_start_time, and rows written."""
    values: list[int] = []
    for table in tables:
        ref = writer.ref(TableSpec(table, None, table, ()).bq_table)
        rows = await writer.query(
            "SELECT TIMESTAMP_DIFF(bigquery_insert_time, changetrack_start_time, MICROSECOND) "
            f"AS us FROM `{ref}`"
        )
        values += [int(r["us"]) for r in rows if r["us"] is not None]
    if not values:
        return None, None, 0
    values.sort()

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))] / 1e6, 3)

    return pct(0.50), pct(0.99), len(values)


async def kafka_totals(
    settings: Settings, tables: Sequence[str], deadline: float
) -> dict[str, int]:
    """Messages in the raw and deduped topics, once the dedup stage has caught up."""
    names = TopicNames(settings.kafka.topic_prefix)
    specs = [TableSpec(t, None, t, ()) for t in tables]
    raw_topics = [names.raw(s) for s in specs]
    deduped_topics = [names.deduped(s) for s in specs]
    parts = [
        TopicPartition(t, p)
        for t in raw_topics + deduped_topics
        for p in range(settings.kafka.partitions)
    ]
    while True:
        lag, ends = await group_lag(
            settings.kafka.bootstrap_servers,
            settings.app.id,
            parts,
            client_options=client_options(settings.kafka),
        )
        if lag <= 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    raw = sum(v for tp, v in ends.items() if tp.topic in raw_topics)
    deduped = sum(v for tp, v in ends.items() if tp.topic in deduped_topics)
    return {"raw": raw, "deduped": deduped, "lag": max(lag, 0)}
