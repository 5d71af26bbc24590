"""``<t>_latest`` query time against history: the same live rows with 1x and Nx their
history in the change log, through the compacted view and the whole-log view.

Two change tables of ``--rows`` keys each are written by SQL inside the emulator (not
through a pipeline: the query is what is measured): one with one version per key, one
with ``--history`` versions per key. Each is compacted as the leader would, then each
view is queried ``--repeat`` times (a ``COUNT(*)`` and a ``SUM`` over a column, so the
whole view is computed): the compacted ``<t>_latest``, and the whole-log view
(``layout.latest_view_sql``, the only view before compaction existed) for comparison.

Seen only locally: the emulator runs the queries in DuckDB on this machine, not in
BigQuery; what carries over is how the time grows with history, not the seconds.

    .venv/bin/python -m benchmarks.latest_view --rows 100000 --history 10
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
from typing import Any

from benchmarks.common import bench_dir, git_commit, machine, machine_line, print_result, progress
from ctstream.bigquery.compaction import compact
from ctstream.bigquery.layout import latest_view_sql, quote_bq
from ctstream.bigquery.schema import SNAPSHOTS_TABLE
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.models import ColumnSpec, TableSpec
from ctstream.settings import BigQuerySettings


def _spec(name: str) -> TableSpec:
    columns = (
        ColumnSpec("id", "INTEGER", False, 1),
        ColumnSpec("name", "TEXT"),
        ColumnSpec("price", "INTEGER"),
    )
    return TableSpec(name, None, name, columns)


async def _fill(w: BigQueryWriter, spec: TableSpec, rows: int, versions: int) -> None:
    """``rows`` keys x ``versions`` versions each, inserted by SQL in the emulator."""
    table = quote_bq(w.ref(spec.bq_table))
    for version in range(1, versions + 1):
        await w.execute(
            f"INSERT INTO {table} (id, name, price, message_unique_id, table_name, "
            "changetrack_interval, changetrack_start_time, changetrack_type, changetrack_ver, "
            "bigquery_insert_time) "
            f"SELECT k, CONCAT('name ', CAST(k AS STRING), ' v{version}'), k * {version}, "
            f"CONCAT('[\"{spec.name}\",[', CAST(k AS STRING), '],{version}]'), "
            f"'{spec.name}', 1.0, CURRENT_TIMESTAMP(), '{'I' if version == 1 else 'U'}', "
            f"k * 1000 + {version}, CURRENT_TIMESTAMP() "
            f"FROM UNNEST(GENERATE_ARRAY(1, {rows})) AS k",
            (),
            f"writing version {version} of {spec.name}",
        )


async def _time(w: BigQueryWriter, view: str, repeat: int) -> tuple[float, int]:
    """Median seconds of the view's aggregate, and its row count."""
    times, count = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = await w.query(f"SELECT COUNT(*) AS n, SUM(price) AS s FROM {quote_bq(view)}")
        times.append(time.perf_counter() - started)
        count = int(rows[0]["n"])
    return statistics.median(times), count


async def measure(stack: Any, rows: int, history: int, repeat: int) -> dict[str, Any]:
    settings = BigQuerySettings(project="local", dataset="bench", endpoint=stack.bigquery_endpoint)
    w = BigQueryWriter(settings)
    result: dict[str, Any] = {}
    try:
        await w.ensure_dataset()
        for label, versions in (("1x", 1), (f"{history}x", history)):
            spec = _spec(f"items_{label}")
            await w.ensure_table(spec)
            progress(f"{spec.name}: writing {rows:,} keys x {versions} versions")
            await _fill(w, spec, rows, versions)
            started = time.perf_counter()
            merged = await compact(w, spec, merged_to=dt.datetime.now(dt.UTC))
            merge_s = time.perf_counter() - started
            whole = f"{spec.bq_table}_whole_log"
            view_sql = latest_view_sql(w.ref(spec.bq_table), spec, w.ref(SNAPSHOTS_TABLE))
            await w.ensure_view(whole, view_sql)
            compacted_s, live = await _time(w, w.ref(f"{spec.bq_table}_latest"), repeat)
            whole_s, live_whole = await _time(w, w.ref(whole), repeat)
            assert live == live_whole == rows, (live, live_whole, rows)
            result[label] = {
                "change_rows": rows * versions,
                "live_rows": live,
                "compacted_view_s": round(compacted_s, 3),
                "whole_log_view_s": round(whole_s, 3),
                "merge_s": round(merge_s, 3),
                "rows_merged": merged.rows_merged,
            }
            progress(f"{spec.name}: {result[label]}")
    finally:
        w.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="live keys per table")
    parser.add_argument("--history", type=int, default=10, help="versions per key, second table")
    parser.add_argument("--repeat", type=int, default=5, help="queries per view (median kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args()
    m = machine()
    with bench_dir(args.keep) as (_, stack):
        figures = asyncio.run(measure(stack, args.rows, args.history, args.repeat))
    one, many = figures["1x"], figures[f"{args.history}x"]
    ratio = many["compacted_view_s"] / one["compacted_view_s"]
    whole_ratio = many["whole_log_view_s"] / one["whole_log_view_s"]
    result = {
        "commit": git_commit(),
        "machine": m,
        "rows": args.rows,
        "history": args.history,
        "figures": figures,
        "compacted_ratio": round(ratio, 2),
        "whole_log_ratio": round(whole_ratio, 2),
        "goal_met": ratio <= 1.5,
    }
    lines = [("machine", machine_line(m)), ("commit", result["commit"])]
    for label, f in figures.items():
        lines.append(
            (
                f"{label} history",
                f"{f['change_rows']:,} change rows, {f['live_rows']:,} live: compacted view "
                f"{f['compacted_view_s']:.3f} s, whole-log view {f['whole_log_view_s']:.3f} s "
                f"(median of {args.repeat}); merge {f['merge_s']:.1f} s",
            )
        )
    lines.append(
        (
            f"{args.history}x / 1x",
            f"compacted view {ratio:.2f}x (goal ≤ 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}), "
            f"whole-log view {whole_ratio:.2f}x",
        )
    )
    print_result(result, lines, args.json)


if __name__ == "__main__":
    main()
