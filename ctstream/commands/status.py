"""``ctstream status``: the pipeline's state per table, from its config alone.

What no single worker knows is read where it lives: saved versions from the ``ct-versions``
changelog, the source's current version from the source, consumer lag from Kafka, error
rows and snapshots from BigQuery. With ``--worker URL`` the live counters of running
workers (their ``/api/status/``) are added up too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from aiokafka import TopicPartition

from ctstream.bigquery.layout import quote_bq
from ctstream.bigquery.schema import COMPACTION_TABLE, ERROR_RECORDS_TABLE, SNAPSHOTS_TABLE
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.commands.bigquery_tables import existing_table
from ctstream.commands.saved_state import saved_states
from ctstream.errors import CtstreamError, TableMissing
from ctstream.models import TableSpec
from ctstream.models.source_state import SnapshotProgress
from ctstream.settings import Settings, load_settings
from ctstream.source.reader import SourceReader, selected_tables
from ctstream.streams.offsets import group_lag
from ctstream.streams.security import client_options
from ctstream.streams.topics import TopicNames

LIVE_COUNTERS = ("polls", "events_produced", "duplicates_dropped", "rows_written", "error_rows")


def run(args: argparse.Namespace) -> int:
    """``ctstream status --config FILE [--worker URL]… [--json]``: print the status; 0."""
    settings = load_settings(args.config)
    status = asyncio.run(collect_status(settings, args.worker))
    print(json.dumps(status, default=str) if args.json else render(status))
    return 0


def _status_at(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.rstrip("/") + "/api/status/", timeout=5) as response:  # noqa: S310
        data: dict[str, Any] = orjson.loads(response.read())
        return data


async def collect_status(settings: Settings, workers: Sequence[str] = ()) -> dict[str, Any]:
    names = TopicNames(settings.kafka.topic_prefix)
    problems: list[str] = []
    reader = SourceReader(settings.source)
    try:
        selected = await selected_tables(settings.source, reader)
    except CtstreamError as exc:
        selected = list(settings.source.selection.names)
        problems.append(f"source.tables: {exc}")
    tables: dict[str, dict[str, Any]] = {name: {} for name in selected}
    try:
        states = await saved_states(settings)
    except Exception as exc:
        states = {}
        problems.append(f"saved versions: {type(exc).__name__}: {exc}")
    try:
        for name, row in tables.items():
            state = states.get(name)
            row["saved_version"] = state.version if state else None
            row["snapshot_requested"] = state.snapshot_requested if state else None
            progress = state.snapshot if state else None
            row["snapshot"] = None if progress is None else snapshot_summary(progress)
            try:
                spec = await reader.describe(name)
                health = await reader.table_health(spec, row["saved_version"])
            except CtstreamError as exc:
                problems.append(f"{name}: {exc}")
                continue
            row["current_version"] = health.current_version
            row["min_valid_version"] = health.min_valid_version
            saved = row["saved_version"]
            row["version_lag"] = None if saved is None else health.current_version - saved
            row["oldest_unpolled_change_age_s"] = health.oldest_unpolled_change_age_s
    finally:
        await reader.close()
    for name, row in tables.items():
        spec = TableSpec(name, None, name, ())
        parts = [
            TopicPartition(topic, p)
            for topic in (names.raw(spec), names.deduped(spec))
            for p in range(settings.kafka.partitions)
        ]
        try:
            row["consumer_lag"], _ = await group_lag(
                settings.kafka.bootstrap_servers,
                settings.app.id,
                parts,
                client_options=client_options(settings.kafka),
            )
        except Exception as exc:
            problems.append(f"{name}: consumer lag: {type(exc).__name__}")
    await _from_bigquery(settings, tables, problems)
    live = [await asyncio.to_thread(_safe_worker_status, url, problems) for url in workers]
    merge_live_counters(tables, filter(None, live))
    return {"app": settings.app.id, "tables": tables, "workers": len(live), "problems": problems}


def merge_live_counters(
    tables: dict[str, dict[str, Any]], statuses: Iterable[dict[str, Any]]
) -> None:
    """Add the workers' own counters (``/api/status/``) into ``tables``: each counts
    what it did, so the pipeline's figure is their sum (failed polls too, by reason);
    a snapshot under way is shown as the worker running it reports it."""
    for status in statuses:
        for name, counters in status.get("tables", {}).items():
            if name not in tables:
                continue
            row = tables[name]
            for key in LIVE_COUNTERS:
                row[key] = row.get(key, 0) + counters.get(key, 0)
            failures = row.setdefault("poll_failures", {})
            for reason, count in (counters.get("poll_failures") or {}).items():
                failures[reason] = failures.get(reason, 0) + count
            if counters.get("snapshot"):
                row["snapshot"] = counters["snapshot"]


def _safe_worker_status(url: str, problems: list[str]) -> dict[str, Any] | None:
    try:
        return _status_at(url)
    except (OSError, ValueError) as exc:
        problems.append(f"worker {url}: {type(exc).__name__}: {exc}")
        return None


async def _from_bigquery(
    settings: Settings, tables: dict[str, dict[str, Any]], problems: list[str]
) -> None:
    writer = BigQueryWriter(settings.bigquery, timeout=30)
    try:
        try:
            await existing_table(writer, ERROR_RECORDS_TABLE)
        except TableMissing as exc:
            problems.append(f"BigQuery: {exc}")
            return
        errors = await writer.query(
            "SELECT source_table, COUNT(*) AS n FROM "
            f"{quote_bq(writer.ref(ERROR_RECORDS_TABLE))} GROUP BY source_table"
        )
        snapshots = await writer.query(
            "SELECT source_table, snapshot_version, row_count, completed_at FROM "
            f"{quote_bq(writer.ref(SNAPSHOTS_TABLE))} ORDER BY completed_at"
        )
        merges = await writer.query(
            "SELECT table_name, merged_to, merged_at, rows_merged, merge_seconds FROM "
            f"{quote_bq(writer.ref(COMPACTION_TABLE))}"
        )
    except CtstreamError as exc:
        problems.append(f"BigQuery: {exc}")
        return
    finally:
        writer.close()
    for row in errors:
        if row["source_table"] in tables:
            tables[row["source_table"]]["error_records"] = row["n"]
    _note_merges(tables, merges)
    for row in snapshots:
        if row["source_table"] in tables:
            tables[row["source_table"]]["last_snapshot"] = {
                "version": row["snapshot_version"],
                "rows": row["row_count"],
                "completed_at": str(row["completed_at"]),
            }


def _note_merges(tables: dict[str, dict[str, Any]], merges: list[dict[str, Any]]) -> None:
    by_bq_table = {TableSpec(name, None, name, ()).bq_table: name for name in tables}
    now = time.time()
    for row in merges:
        name = by_bq_table.get(row["table_name"])
        if name is None or row.get("merged_to") is None:
            continue
        tables[name]["compaction"] = {
            "merged_to": str(row["merged_to"]),
            "lag_s": round(now - row["merged_to"].timestamp(), 1),
            "merged_at": str(row["merged_at"]),
            "last_rows_merged": row["rows_merged"],
            "last_seconds": row["merge_seconds"],
        }


def snapshot_summary(progress: SnapshotProgress) -> dict[str, Any]:
    """The saved progress of a snapshot under way, as status shows it."""
    return {
        "id": progress.id,
        "phase": progress.phase,
        "chunks": progress.chunks,
        "rows": progress.rows,
        "rows_per_s": round(progress.rows_per_second(time.time()), 1),
        "reason": progress.reason,
    }


def render(status: dict[str, Any]) -> str:
    columns: list[tuple[str, str]] = [
        ("saved", "saved_version"),
        ("current", "current_version"),
        ("version lag", "version_lag"),
        ("consumer lag", "consumer_lag"),
        ("error rows", "error_records"),
    ]
    if status["workers"]:
        columns += [(key.replace("_", " "), key) for key in LIVE_COUNTERS]
    head = ["table", *(header for header, _ in columns), "last snapshot", "snapshot now"]
    rows = [[*head, "merged"]]
    for name, row in status["tables"].items():
        values = [row.get(key) for _, key in columns]
        snapshot = (row.get("last_snapshot") or {}).get("version")
        now = row.get("snapshot")
        under_way = None if now is None else f"{now['phase']} {now['rows']} rows"
        merged = row.get("compaction")
        cells = [*values, snapshot, under_way, merged and f"{merged['lag_s']:.0f} s ago"]
        rows.append([name, *("-" if v is None else str(v) for v in cells)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines += [f"problem: {p}" for p in status["problems"]]
    return "\n".join(lines)
