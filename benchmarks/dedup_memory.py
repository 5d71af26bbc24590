"""Dedup memory: worker RSS holding the dedup state (``seen-ids`` window) for N unique ids.

A worker with only the dedup role reads raw topics pre-filled with ``--ids`` unique change
events (all within one dedup window, so every id stays in the state). Its RSS is sampled
every second: at start (ready, nothing consumed), the maximum, and at the end once every
event was seen; the growth is the state's cost (plus buffers). Goal: 1,000,000 ids within
300 MB RSS (the worker's whole RSS).

    .venv/bin/python -m benchmarks.dedup_memory [--ids 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PipelineConfig,
    RowMaker,
    Workers,
    bench_dir,
    common_args,
    create_source,
    create_topics,
    machine,
    machine_line,
    print_result,
    produce_events,
    progress,
    rss_mb,
    settings_of,
    table_names,
    write_config,
)
from ctstream.devstack.local_stack import StackInfo

GOAL_MB = 300.0


async def run(args: argparse.Namespace, workdir: Path, stack: StackInfo) -> dict[str, Any]:
    tables = table_names(args.tables)
    db = workdir / "source.db"
    create_source(db, tables)
    cfg = PipelineConfig(
        tables=tables, partitions=args.partitions, roles=["dedup"], app_id="bench-dedup-mem"
    )
    config = write_config(workdir, db, stack, cfg)
    settings = settings_of(config)
    await create_topics(settings)
    t0 = time.monotonic()
    sent = await produce_events(settings, args.ids, RowMaker(args.row_bytes))
    progress(f"{sent} unique events in the raw topics ({time.monotonic() - t0:.1f}s)")
    workers = Workers(config, workdir, 1)
    pid = workers.pids[0]
    samples: list[float] = []
    try:
        await workers.wait_ready(180)
        start = rss_mb(pid)
        t_start = time.monotonic()
        last_report = t_start
        while True:
            samples.append(rss_mb(pid))
            seen = await workers.table_sum("dedup_seen")
            if seen >= args.ids:
                break
            if time.monotonic() - last_report > 30:
                progress(f"{seen} ids seen, RSS {samples[-1]:.0f} MB")
                last_report = time.monotonic()
            if time.monotonic() - t_start > args.timeout:
                raise RuntimeError(f"only {seen} of {args.ids} ids seen in {args.timeout:.0f}s")
            await asyncio.sleep(1.0)
        seconds = time.monotonic() - t_start
        await asyncio.sleep(3.0)  # let the last changelog writes and commits settle
        end = rss_mb(pid)
        samples.append(end)
        dropped = await workers.table_sum("duplicates_dropped")
    finally:
        workers.stop()
    peak = max(samples)
    return {
        "benchmark": "dedup_memory",
        "ids": args.ids,
        "row_bytes": args.row_bytes,
        "tables": len(tables),
        "partitions": args.partitions,
        "workers": 1,
        "machine": machine(),
        "rss_start_mb": round(start, 1),
        "rss_end_mb": round(end, 1),
        "rss_max_mb": round(peak, 1),
        "growth_mb": round(end - start, 1),
        "bytes_per_id": round((end - start) * 1024 * 1024 / args.ids),
        "duplicates_dropped": dropped,
        "seconds": round(seconds, 1),
        "ids_per_s": round(args.ids / seconds),
        "goal_mb": GOAL_MB,
        "goal_pass": peak <= GOAL_MB,
    }


def report(r: dict[str, Any]) -> list[tuple[str, str]]:
    verdict = "PASS" if r["goal_pass"] else "FAIL"
    return [
        ("benchmark", "dedup_memory: worker RSS with N unique ids in the dedup window"),
        ("machine", machine_line(r["machine"])),
        ("conditions", f"{r['ids']} unique ids (events of ~{r['row_bytes']} B), {r['tables']} "
                       f"tables, {r['partitions']} partitions, 1 dedup-only worker, window 10m, "
                       "memory store"),
        ("RSS at start", f"{r['rss_start_mb']} MB (ready, nothing consumed)"),
        ("RSS at end", f"{r['rss_end_mb']} MB; max {r['rss_max_mb']} MB "
                       f"(goal ≤ {r['goal_mb']:g} MB: {verdict})"),
        ("growth", f"{r['growth_mb']} MB = {r['bytes_per_id']} bytes per id"),
        ("duplicates dropped", f"{r['duplicates_dropped']} (expected 0)"),
        ("time", f"{r['seconds']} s ({r['ids_per_s']} ids/s)"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ids", type=int, default=1_000_000, help="unique ids (default 1M)")
    parser.add_argument("--tables", type=int, default=4, help="default 4")
    parser.add_argument("--row-bytes", type=int, default=120, help="event row size (default 120)")
    parser.add_argument("--partitions", type=int, default=4, help="default 4")
    parser.add_argument("--timeout", type=float, default=1800.0, help="s (default 1800)")
    common_args(parser)
    args = parser.parse_args(argv)
    with bench_dir(args.keep) as (workdir, stack):
        result = asyncio.run(run(args, workdir, stack))
    print_result(result, report(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
