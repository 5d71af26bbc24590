"""Stages alone: poll, dedup and sink each measured on its own, with Faust baselines.

Each stage runs in a worker of its own (``app.roles``) on the embedded stack, one after the
other, so that it has the machine to itself (with the broker and the emulator):

* **poll**: ``--rows`` inserts committed at once; from the first event produced until
  every table's saved version reached the source's version (events in the raw topics).
* **dedup**: the raw topics pre-filled with ``--rows`` events x ``--copies`` (a second
  collector's copies); from the first event seen until all were seen (forwarded/dropped).
* **sink**: the deduped topics pre-filled with ``--rows`` events; from the first row
  written until all were written to BigQuery.
* baselines on the same broker and input as dedup: a pass-through Faust agent (reads
  only) and a plain Faust dedup agent (table write + changelog + produce per event).

Rates exclude start-up (consumer group join, recovery); each is events / (last - first).

    .venv/bin/python -m benchmarks.stages [--rows 200000] [--copies 2] [--only poll,dedup]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    bulk_insert,
    common_args,
    create_source,
    create_topics,
    current_version,
    machine,
    machine_line,
    produce_events,
    progress,
    run_child_process,
    settings_of,
    stack_groups,
    table_names,
    write_config,
)
from ctstream.devstack.local_stack import StackInfo
from ctstream.streams.topics import ensure_topics

# Faust agents without ctstream, on the dedup stage's input (benchmarks/faust_baseline.py).

BASELINES = ("passthrough", "drain", "plain-dedup")
STAGES = ("poll", "dedup", "sink", *BASELINES)


def _cfg(args: argparse.Namespace, tables: list[str], name: str, roles: list[str]) -> Any:
    return PipelineConfig(
        tables=tables,
        partitions=args.partitions,
        poll_interval=args.poll_interval,
        batch_rows=args.batch_rows,
        batch_wait=args.batch_wait,
        roles=roles,
        app_id=f"stage-{name}",
        prefix=f"stage-{'dedup' if name in BASELINES else name}",
        dataset=f"stage_{name.replace('-', '_')}",
    )


async def _worker_stage(
    args: argparse.Namespace,
    workdir: Path,
    stack: StackInfo,
    db: Path,
    name: str,
    events: int,
    counter: str,
    prepare: Any,
) -> dict[str, Any]:
    tables = table_names(args.tables)
    roles = {"poll": ["poll"], "dedup": ["dedup"], "sink": ["sink"]}[name]
    cfg = _cfg(args, tables, name, roles)
    config = write_config(workdir, db, stack, cfg)
    settings = settings_of(config)
    await create_topics(settings)
    if name != "poll":
        t0 = time.monotonic()
        sent = await prepare(settings)
        progress(f"{name}: {sent} events in the input topics ({time.monotonic() - t0:.1f}s)")
    workers = Workers(config, workdir, 1)
    profiler = None
    try:
        await workers.wait_ready(180, need_partitions=name != "poll")
        if name == "poll":
            await workers.wait_polled(tables, current_version(db), 120)
            await asyncio.sleep(1.0)
        meter = CpuMeter(stack_groups(stack, workers))
        meter.start()
        if args.profile:
            profiler = Profiler(workers.pids, workdir, events / 1000 + 60)
        if name == "poll":
            await prepare(settings)
            polled = asyncio.create_task(workers.wait_polled(tables, current_version(db), 900))
        done, first = await workers.wait_sum(counter, events, 900, every=0.05)
        if name == "poll":
            done = await polled
        meter.stop()
        if profiler:
            profiler.stop()
    finally:
        workers.stop()
    first = first or done
    return {
        "stage": name,
        "events": events,
        "seconds": round(done - first, 2),
        "events_per_s": round(events / max(1e-6, done - first)),
        "cpu_s": meter.used,
        "cpu_line": meter.line(),
        "config": cfg.describe(),
        "profile": profiler.summary() if profiler else None,
    }


async def _baseline(
    args: argparse.Namespace, workdir: Path, stack: StackInfo, db: Path, mode: str, events: int
) -> dict[str, Any]:
    """A Faust agent in a child process, reading the dedup stage's (pre-filled) raw topics."""
    tables = table_names(args.tables)
    cfg = _cfg(args, tables, "dedup", ["dedup"])
    config = write_config(workdir, db, stack, cfg)
    settings = settings_of(config)
    out = workdir / f"baseline-{mode}.json"
    await ensure_topics(stack.kafka_bootstrap, [f"{cfg.prefix}.baseline-out"], args.partitions, 1)
    log = workdir / f"baseline-{mode}.log"
    run = await run_child_process(
        ["benchmarks.faust_baseline", "--config", str(config),
         "--mode", mode, "--events", str(events), "--out", str(out),
         "--app-id", f"stage-{mode}"],
        f"{mode} baseline", workdir, out, log, {"broker": [stack.broker_pid]}, events,
        args.profile, 900,
    )  # fmt: skip
    state, meter, profiler = run.state, run.meter, run.profiler
    seconds = state["last"] - state["first"]
    del settings
    return {
        "stage": mode,
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / max(1e-6, seconds)),
        "cpu_s": meter.used,
        "cpu_line": meter.line(),
        "config": f"faust agent, {args.partitions} partitions, same faust settings as ctstream",
        "profile": profiler.summary() if profiler else None,
    }


async def run(args: argparse.Namespace, workdir: Path, stack: StackInfo) -> dict[str, Any]:
    tables = table_names(args.tables)
    db = workdir / "source.db"
    create_source(db, tables)
    maker = RowMaker(args.row_bytes)
    only = args.only.split(",") if args.only else list(STAGES)
    results: dict[str, dict[str, Any]] = {}
    raw_events = args.rows * args.copies

    async def poll_input(settings: Any) -> int:
        _, secs = await asyncio.to_thread(bulk_insert, db, tables, args.rows, maker)
        progress(f"poll: {args.rows} inserts committed in {secs:.1f}s")
        return args.rows

    async def dedup_input(settings: Any) -> int:
        return await produce_events(settings, args.rows, maker, copies=args.copies)

    async def sink_input(settings: Any) -> int:
        return await produce_events(settings, args.rows, maker, topic="deduped")

    if "poll" in only:
        results["poll"] = await _worker_stage(
            args, workdir, stack, db, "poll", args.rows, "events_produced", poll_input
        )
    need_raw = any(s in only for s in ("dedup", *BASELINES))
    if need_raw:
        results["dedup"] = await _worker_stage(
            args, workdir, stack, db, "dedup", raw_events, "dedup_seen", dedup_input
        )
        if "dedup" not in only:
            del results["dedup"]
    if "sink" in only:
        results["sink"] = await _worker_stage(
            args, workdir, stack, db, "sink", args.rows, "rows_written", sink_input
        )
    for mode in BASELINES:
        if mode in only:
            results[mode] = await _baseline(args, workdir, stack, db, mode, raw_events)
    ratios = {}
    if "dedup" in results:
        for base in BASELINES:
            if base in results:
                ratios[f"dedup_vs_{base}"] = round(
                    results["dedup"]["events_per_s"] / results[base]["events_per_s"], 2
                )
    return {
        "benchmark": "stages",
        "rows": args.rows,
        "copies": args.copies,
        "row_bytes": args.row_bytes,
        "tables": len(tables),
        "partitions": args.partitions,
        "workers": 1,
        "machine": machine(),
        "stages": results,
        "ratios": ratios,
    }


def print_report(r: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(r), flush=True)
        return
    lines = [
        ("benchmark", "stages: poll, dedup, sink alone; Faust baselines on the same broker"),
        ("machine", machine_line(r["machine"])),
        ("conditions", f"{r['rows']} rows of ~{r['row_bytes']} B, dedup input x{r['copies']} "
                       f"copies, {r['tables']} tables, {r['partitions']} partitions, 1 worker "
                       "per stage, stages run one after the other"),
    ]  # fmt: skip
    for name, s in r["stages"].items():
        lines.append(
            (
                name,
                f"{s['events_per_s']:>7} events/s  ({s['events']} in {s['seconds']} s; "
                f"{s['cpu_line']})",
            )
        )
    for k, v in r["ratios"].items():
        lines.append((k.replace("_", " "), f"{v}x"))
    width = max(len(k) for k, _ in lines) + 2
    print("\n".join(f"{k:<{width}}{v}" for k, v in lines), flush=True)
    for name, s in r["stages"].items():
        if s.get("profile"):
            print(f"\nprofile of {name}:\n{s['profile']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=200_000, help="rows (default 200000)")
    parser.add_argument("--copies", type=int, default=2, help="copies per event into dedup")
    parser.add_argument("--tables", type=int, default=4, help="source tables (default 4)")
    parser.add_argument("--row-bytes", type=int, default=200, help="row size (default 200)")
    parser.add_argument("--partitions", type=int, default=4, help="default 4")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="s (default 1)")
    parser.add_argument("--batch-rows", type=int, default=5000, help="sink batch (default 5000)")
    parser.add_argument("--batch-wait", type=float, default=0.3, help="s (default 0.3)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {','.join(STAGES)} (default all)"
    )
    common_args(parser)
    args = parser.parse_args(argv)
    with bench_dir(args.keep) as (workdir, stack):
        result = asyncio.run(run(args, workdir, stack))
    print_report(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
