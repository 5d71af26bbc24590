"""Peer: ctstream's dedup + sink against the same job in Quix Streams, same broker and emulator.

Both read the same pre-filled raw topics (``--rows`` insert events x ``--copies``, as two
redundant collectors send them), drop duplicates by ``message_unique_id`` within a 10-minute
window and write the unique rows to BigQuery in batches (``insertId`` = the unique id),
each into a dataset of its own, one after the other so that each has the machine to
itself. Each is timed from its first event processed until all ``--rows`` unique rows were
written (start-up — group join, recovery — excluded, and reported separately), and the
BigQuery latest views are counted afterwards. Prints both rates and ctstream/Quix (goal
≥ 1.5x).

    .venv/bin/python -m benchmarks.peer [--rows 200000] [--copies 2]
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
    common_args,
    count_latest,
    create_source,
    create_topics,
    machine,
    machine_line,
    print_result,
    produce_events,
    progress,
    run_child_process,
    settings_of,
    stack_groups,
    table_names,
    write_config,
)
from ctstream.devstack.local_stack import StackInfo
from ctstream.settings import Settings
from ctstream.source.reader import SourceReader
from ctstream.streams.topics import TopicNames

GOAL_RATIO = 1.5


async def run_ctstream(
    args: argparse.Namespace, workdir: Path, stack: StackInfo, config: Path, events: int
) -> dict[str, Any]:
    t_start = time.time()
    workers = Workers(config, workdir, 1)
    profiler = None
    try:
        await workers.wait_ready(180)
        meter = CpuMeter(stack_groups(stack, workers))
        meter.start()
        if args.profile:
            profiler = Profiler(workers.pids, workdir, events / 1000 + 60)
        done, first = await workers.wait_rows_written(args.rows, 1800)
        seen_first = first
        meter.stop()
        if profiler:
            profiler.stop()
        dropped = await workers.table_sum("duplicates_dropped")
    finally:
        workers.stop()
    # The first row written comes after the first batch was deduplicated; the dedup counter
    # moved earlier, but sampling it too would cost the worker CPU: a batch (≤ 0.3 s) apart.
    first = seen_first or done
    return {
        "seconds": round(done - first, 2),
        "rows_per_s": round(args.rows / max(1e-6, done - first)),
        "events_per_s": round(events / max(1e-6, done - first)),
        "startup_s": round(first - t_start, 2),
        "duplicates_dropped": dropped,
        "cpu_s": meter.used,
        "cpu_line": meter.line(),
        "profile": profiler.summary() if profiler else None,
    }


async def run_child(
    args: argparse.Namespace,
    workdir: Path,
    stack: StackInfo,
    settings: Settings,
    events: int,
    kind: str,
) -> dict[str, Any]:
    """The Quix job (``kind`` "quix") or the bare aiokafka loop ("floor") as a child."""
    names = TopicNames(settings.kafka.topic_prefix)
    reader = SourceReader(settings.source)
    try:
        specs = await reader.describe_all(settings.source.tables)
    finally:
        await reader.close()
    dataset = f"peer_{kind}"
    quix_bq = settings.bigquery.model_copy(update={"dataset": dataset})
    writer = bq_writer(settings.model_copy(update={"bigquery": quix_bq}))
    await writer.ensure_dataset()
    for spec in specs.values():
        await writer.ensure_table(spec, quix_bq.options_for(spec.name))
    out = workdir / f"{kind}.json"
    log = workdir / f"{kind}.log"
    topics = ",".join(names.raw(s) for s in specs.values())
    module = {"quix": "benchmarks.quix_peer", "floor": "benchmarks.aiokafka_floor"}[kind]
    extra = ["--state-dir", str(workdir / "quix-state")] if kind == "quix" else []
    run = await run_child_process(
        [module, "--bootstrap", stack.kafka_bootstrap,
         "--topics", topics, "--endpoint", stack.bigquery_endpoint, "--dataset", dataset,
         "--rows", str(args.rows), "--out", str(out), "--batch-rows", str(args.batch_rows),
         "--batch-wait", str(args.batch_wait), *extra],
        f"{kind} peer", workdir, out, log, stack_groups(stack), events, args.profile, 1800,
    )  # fmt: skip
    state, meter, profiler = run.state, run.meter, run.profiler
    seconds = state["last"] - state["first"]
    in_views = await count_latest(writer, list(specs))
    writer.close()
    return {
        "seconds": round(seconds, 2),
        "rows_per_s": round(args.rows / max(1e-6, seconds)),
        "events_per_s": round(events / max(1e-6, seconds)),
        "startup_s": round(state["first"] - state["started"], 2),
        "duplicates_dropped": state["dropped"],
        "rows_in_latest_views": in_views,
        "cpu_s": meter.used,
        "cpu_line": meter.line(),
        "profile": profiler.summary() if profiler else None,
    }


async def run(args: argparse.Namespace, workdir: Path, stack: StackInfo) -> dict[str, Any]:
    tables = table_names(args.tables)
    db = workdir / "source.db"
    create_source(db, tables)
    cfg = PipelineConfig(
        tables=tables,
        partitions=args.partitions,
        batch_rows=args.batch_rows,
        batch_wait=args.batch_wait,
        roles=["dedup", "sink"],
        app_id="peer-ctstream",
        prefix="peer",
        dataset="peer_ctstream",
    )
    config = write_config(workdir, db, stack, cfg)
    settings = settings_of(config)
    await create_topics(settings)
    events = await produce_events(settings, args.rows, RowMaker(args.row_bytes), copies=args.copies)
    progress(f"{events} events in the raw topics")
    order = ["quix", "ctstream"] if args.quix_first else ["ctstream", "quix"]
    if not args.no_floor:
        order.append("floor")
    results: dict[str, dict[str, Any]] = {}
    for who in order:
        progress(f"running {who}")
        if who == "ctstream":
            results[who] = await run_ctstream(args, workdir, stack, config, events)
            writer = bq_writer(settings)
            results[who]["rows_in_latest_views"] = await count_latest(writer, tables)
            writer.close()
        else:
            results[who] = await run_child(args, workdir, stack, settings, events, who)
    ratio = results["ctstream"]["rows_per_s"] / max(1, results["quix"]["rows_per_s"])
    return {
        "benchmark": "peer",
        "rows": args.rows,
        "copies": args.copies,
        "events": events,
        "row_bytes": args.row_bytes,
        "tables": len(tables),
        "partitions": args.partitions,
        "workers": 1,
        "batch": f"{args.batch_rows} rows / {args.batch_wait:g} s",
        "machine": machine(),
        "ctstream": results["ctstream"],
        "quix": results["quix"],
        "floor": results.get("floor"),
        "ratio_ctstream_vs_quix": round(ratio, 2),
        "ratio_ctstream_vs_floor": (
            round(results["ctstream"]["rows_per_s"] / max(1, results["floor"]["rows_per_s"]), 2)
            if "floor" in results
            else None
        ),
        "goal_ratio": GOAL_RATIO,
        "goal_pass": ratio >= GOAL_RATIO,
        "profile": "\n\n".join(
            f"{who}:\n{results[who]['profile']}" for who in order if results[who].get("profile")
        ),
    }


def report(r: dict[str, Any]) -> list[tuple[str, str]]:
    verdict = "PASS" if r["goal_pass"] else "FAIL"

    def line(x: dict[str, Any]) -> str:
        return (
            f"{x['rows_per_s']:>6} rows/s ({x['events_per_s']} events/s; {x['seconds']} s; "
            f"start-up {x['startup_s']} s; dropped {x['duplicates_dropped']}; "
            f"{x['rows_in_latest_views']} rows in latest views)"
        )

    return [
        ("benchmark", "peer: dedup by id in a window + batched BigQuery writes"),
        ("machine", machine_line(r["machine"])),
        ("conditions", f"{r['rows']} unique rows of ~{r['row_bytes']} B x {r['copies']} copies "
                       f"= {r['events']} events, {r['tables']} tables, {r['partitions']} "
                       f"partitions, 1 process each, batches of {r['batch']}"),
        ("ctstream", line(r["ctstream"])),
        ("  CPU", r["ctstream"]["cpu_line"]),
        ("Quix Streams", line(r["quix"])),
        ("  CPU", r["quix"]["cpu_line"]),
        ("ctstream / Quix", f"{r['ratio_ctstream_vs_quix']}x (goal ≥ {r['goal_ratio']}: "
                            f"{verdict})"),
    ] + ([
        ("aiokafka loop", line(r["floor"])),
        ("  CPU", r["floor"]["cpu_line"]),
        ("ctstream / loop", f"{r['ratio_ctstream_vs_floor']}x (reference: no state "
                            "durability, a bare getmany → dict → insert loop)"),
    ] if r.get("floor") else [])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=200_000, help="unique rows (default 200000)")
    parser.add_argument("--copies", type=int, default=2, help="copies of each event (default 2)")
    parser.add_argument("--tables", type=int, default=4, help="default 4")
    parser.add_argument("--row-bytes", type=int, default=200, help="row size (default 200)")
    parser.add_argument("--partitions", type=int, default=4, help="default 4")
    parser.add_argument("--batch-rows", type=int, default=5000, help="batch (default 5000)")
    parser.add_argument("--batch-wait", type=float, default=0.3, help="s (default 0.3)")
    parser.add_argument("--quix-first", action="store_true", help="run the Quix job first")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the bare aiokafka loop (reference)"
    )
    common_args(parser)
    args = parser.parse_args(argv)
    with bench_dir(args.keep) as (workdir, stack):
        result = asyncio.run(run(args, workdir, stack))
    print_result(result, report(result), args.json)
    ok = all(
        result[w]["rows_in_latest_views"] == args.rows
        for w in ("ctstream", "quix", "floor")
        if result.get(w)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
