"""Burst: N changes committed at the source at once → all queryable in BigQuery's latest views.

Workers (poll + dedup + sink) run on the embedded stack and have polled the (empty)
tables once; then ``--rows`` inserts spread over ``--tables`` tables are committed in one
SQLite transaction. The clock starts at the commit and stops when the ``<table>_latest``
views hold every row (checked with COUNT(*) once the workers' counters say all rows were
written). Seed system: ~400,000 rows within 5 minutes (~1,300 rows/s). Goal ≥ 10,000 rows/s.

    .venv/bin/python -m benchmarks.burst [--rows 400000] [--tables 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CpuMeter,
    PipelineConfig,
    Profiler,
    RowMaker,
    Workers,
    bench_dir,
    bq_writer,
    bulk_insert,
    common_args,
    create_source,
    current_version,
    machine,
    machine_line,
    print_result,
    progress,
    settings_of,
    stack_groups,
    table_names,
    wait_latest,
    write_config,
)
from ctstream.devstack.local_stack import StackInfo

SEED_ROWS_PER_S = 400_000 / 300
GOAL_ROWS_PER_S = 10_000


async def run(args: argparse.Namespace, workdir: Path, stack: StackInfo) -> dict[str, Any]:
    tables = table_names(args.tables)
    db = workdir / "source.db"
    create_source(db, tables)
    cfg = PipelineConfig(
        tables=tables,
        partitions=args.partitions,
        poll_interval=args.poll_interval,
        batch_rows=args.batch_rows,
        batch_wait=args.batch_wait,
        max_in_flight=args.max_in_flight,
        write_api=args.write_api,
        app_id="bench-burst",
    )
    config = write_config(workdir, db, stack, cfg)
    settings = settings_of(config)
    writer = bq_writer(settings)
    workers = Workers(config, workdir, args.workers)
    profiler = None
    try:
        await workers.wait_ready(180)
        start_version = current_version(db)
        await workers.wait_polled(tables, start_version, 120)  # the initial (empty) snapshot
        await asyncio.sleep(2.0)  # let start-up work (rebalances, recoveries) settle
        progress(f"committing {args.rows} inserts over {len(tables)} table(s) in one transaction")
        maker = RowMaker(args.row_bytes)
        meter = CpuMeter(stack_groups(stack, workers))
        per_worker = CpuMeter({str(pid): [pid] for pid in workers.pids})
        committed, insert_s = await asyncio.to_thread(bulk_insert, db, tables, args.rows, maker)
        meter.start()
        per_worker.start()
        t_commit = time.monotonic()
        if args.profile:
            profiler = Profiler(workers.pids, workdir, args.rows / 2000 + 60)
        progress(f"committed in {insert_s:.1f}s; waiting for BigQuery")
        final_version = current_version(db)
        polled_at, (written_at, first_write) = await asyncio.gather(
            workers.wait_polled(tables, final_version, args.timeout),
            workers.wait_rows_written(args.rows, args.timeout),
        )
        seen_at, in_bq = await wait_latest(writer, tables, args.rows, args.timeout, every=0.5)
        elapsed = time.monotonic() - t_commit
        meter.stop()
        per_worker.stop()
        if profiler:
            profiler.stop()
        statuses = await workers.statuses()
    finally:
        workers.stop()
        writer.close()
    rows_per_s = args.rows / elapsed
    cpu_total = sum(meter.used.values())
    return {
        "benchmark": "burst",
        "rows": args.rows,
        "row_bytes": args.row_bytes,
        "tables": len(tables),
        "partitions": args.partitions,
        "workers": args.workers,
        "config": cfg.describe(),
        "machine": machine(),
        "source_commit_s": round(insert_s, 2),
        "polled_s": round(polled_at - committed, 2),
        "first_row_written_s": round((first_write or written_at) - committed, 2),
        "all_written_s": round(written_at - committed, 2),
        "all_in_latest_views_s": round(seen_at - committed, 2),
        "elapsed_s": round(elapsed, 2),
        "rows_in_latest_views": in_bq,
        "rows_per_s": round(rows_per_s),
        "vs_seed": round(rows_per_s / SEED_ROWS_PER_S, 2),
        "goal_rows_per_s": GOAL_ROWS_PER_S,
        "goal_pass": rows_per_s >= GOAL_ROWS_PER_S and in_bq == args.rows,
        "cpu_s": meter.used,
        "cpu_s_per_1000_rows": round(1000 * cpu_total / args.rows, 3),
        "cpu_line": meter.line(),
        "sink_batches": sum(s["sink"]["batches"] for s in statuses),
        # statuses() leaves out a worker that did not answer: then no per-worker lines.
        "per_worker": [
            _worker_share(s, per_worker.used.get(str(pid), 0.0))
            for pid, s in zip(workers.pids, statuses, strict=True)
        ]
        if len(statuses) == len(workers.pids)
        else [],
        "profile": profiler.summary() if profiler else None,
    }


def _worker_share(status: dict[str, Any], cpu_s: float) -> dict[str, Any]:
    """What one worker did: its CPU, the rows it polled, deduplicated and wrote."""
    tables = status["tables"].values()
    return {
        "cpu_s": cpu_s,
        "polled": sum(int(t["events_produced"] or 0) for t in tables),
        "deduped": sum(int(t["dedup_seen"] or 0) for t in tables),
        "written": sum(int(t["rows_written"] or 0) for t in tables),
        "sink_batches": status["sink"]["batches"],
        "partitions": len(status["partitions"]),
    }


def report(r: dict[str, Any]) -> list[tuple[str, str]]:
    verdict = "PASS" if r["goal_pass"] else "FAIL"
    return [
        ("benchmark", "burst: N changes committed at once → all in BigQuery latest views"),
        ("machine", machine_line(r["machine"])),
        ("conditions", f"{r['rows']} rows of ~{r['row_bytes']} B, {r['tables']} tables, "
                       f"{r['partitions']} partitions, {r['workers']} worker(s)"),
        ("pipeline", r["config"]),
        ("source commit", f"{r['source_commit_s']} s (the one transaction; not counted)"),
        ("polled into Kafka", f"{r['polled_s']} s after the commit"),
        ("first row written", f"{r['first_row_written_s']} s after the commit"),
        ("all rows written", f"{r['all_written_s']} s after the commit"),
        ("all in latest views", f"{r['all_in_latest_views_s']} s after the commit "
                                f"({r['rows_in_latest_views']} rows)"),
        ("throughput", f"{r['rows_per_s']} rows/s = {r['vs_seed']}x the seed's ~1,333 rows/s "
                       f"(goal ≥ {r['goal_rows_per_s']}: {verdict})"),
        ("CPU", r["cpu_line"]),
        ("CPU per 1,000 rows", f"{r['cpu_s_per_1000_rows']} CPU-s (all processes)"),
        # The emulator is one Python process: the run cannot be shorter than its CPU time.
        ("emulator", f"{r['cpu_s']['emulator']:.1f} CPU-s, one process (one core at most): "
                     f"busy {100 * r['cpu_s']['emulator'] / r['elapsed_s']:.0f} % of the "
                     f"{r['elapsed_s']} s; no run is shorter than its CPU time"),
        ("sink batches", str(r["sink_batches"])),
        *(
            (f"worker {i}", f"{w['cpu_s']:.1f} CPU-s; polled {w['polled']}, deduplicated "
                            f"{w['deduped']}, wrote {w['written']} in {w['sink_batches']} "
                            f"batches; {w['partitions']} partitions")
            for i, w in enumerate(r["per_worker"], 1)
        ),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=400_000, help="changes (default 400000)")
    parser.add_argument("--tables", type=int, default=4, help="source tables (default 4)")
    parser.add_argument("--row-bytes", type=int, default=200, help="row size (default 200)")
    parser.add_argument("--partitions", type=int, default=4, help="default 4")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="s (default 1)")
    parser.add_argument("--batch-rows", type=int, default=5000, help="sink batch (default 5000)")
    parser.add_argument("--batch-wait", type=float, default=0.3, help="s (default 0.3)")
    parser.add_argument("--max-in-flight", type=int, default=2, help="default 2")
    parser.add_argument(
        "--write-api",
        choices=["insert_all", "storage_write", "storage_write_committed"],
        default="insert_all",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="s (default 900)")
    common_args(parser)
    args = parser.parse_args(argv)
    with bench_dir(args.keep) as (workdir, stack):
        result = asyncio.run(run(args, workdir, stack))
    print_result(result, report(result), args.json)
    return 0 if result["rows_in_latest_views"] == args.rows else 1


if __name__ == "__main__":
    sys.exit(main())
