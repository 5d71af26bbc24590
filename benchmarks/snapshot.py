"""Snapshots: a big table read in chunks while other tables stream; memory; a kill; many tables.

Scenarios (``--scenario``, default all; each on a stack of its own, the table ``big``
filled *before* change tracking is on, so only a snapshot reads its rows; workers run with
``source.snapshot_mode = "never"`` and snapshots are requested as ``ctstream snapshot``
does, through ``ctstream.commands.snapshot.request_snapshots``):

* ``concurrent``: one worker snapshots ``--rows`` rows while ``--other-tables`` tables take
  ``--rate`` changes/s. Snapshot rows/s (request → the worker recorded it in
  ``_ctstream_snapshots``) beside a ``burst`` of ``--baseline-rows`` on a fresh stack; the
  other tables' poll start → BigQuery p50/p99 during the snapshot (goal p99 ≤ 1.5 s); the
  worker's RSS peak. Then a second snapshot, with ``COUNT(*)`` of ``big_latest`` sampled
  every 0.1 s (goal: never below its count before).
* ``memory``: the RSS peak of the worker reading snapshots of ``--rows-small`` and
  ``--rows`` rows, each on a fresh stack (goal: within 50 MB of each other). It polls
  only; a second worker dedups and sinks, its RSS reported beside (the dedup window holds
  every row's id, so it grows with the rows whatever the snapshot does).
* ``kill``: two workers; the one running the snapshot gets SIGKILL once its status shows
  half the rows; the other resumes. Rows read twice (raw topic events - rows), rows lost
  (source keys not in ``big_latest``: goal 0), keys repeated in the view (goal 0).
* ``tables``: ``--tables`` tables, one change per table per second, one worker: poll start
  → BigQuery p99 (goal ≤ 1.5 s) and the worker's CPU share (CPU-s ÷ wall s).

    .venv/bin/python -m benchmarks.snapshot [--scenario concurrent,memory,kill,tables]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import burst
from benchmarks.common import (
    SNAPSHOT_REASON,
    CpuMeter,
    PipelineConfig,
    Profiler,
    RateChanger,
    RowMaker,
    RssSampler,
    Workers,
    bench_dir,
    bq_writer,
    common_args,
    count_latest,
    create_seeded_source,
    current_version,
    fmt_pcts,
    git_commit,
    hold_running,
    machine,
    machine_line,
    pcts,
    poll_latencies,
    progress,
    recorded,
    settings_of,
    settle,
    stack_groups,
    table_names,
    table_views,
    timed_snapshot,
    wait_snapshot,
    write_config_extra,
)
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.commands.snapshot import request_snapshots
from ctstream.devstack.demo_check import kafka_totals
from ctstream.devstack.local_stack import StackInfo
from ctstream.settings import Settings

BIG = "big"
SCENARIOS = ("concurrent", "memory", "kill", "tables")
GOAL_P99_S = 1.5
GOAL_RSS_SPREAD_MB = 50.0
# Options besides --scenario and common_args: flag, type, default, help.
OPTIONS: tuple[tuple[str, type, Any, str], ...] = (
    ("--rows", int, 2_000_000, "rows of the snapshotted table"),
    ("--rows-small", int, 500_000, "memory: rows of the smaller snapshot"),
    ("--baseline-rows", int, 200_000, "concurrent: rows of the burst baseline, 0: none"),
    ("--rate", float, 1000.0, "concurrent: changes/s over the other tables"),
    ("--other-tables", int, 4, "concurrent: tables changed during the snapshot"),
    ("--sample-every", float, 0.1, "concurrent: s between COUNT(*) samples of the view"),
    ("--tables", int, 500, "tables: tracked tables"),
    ("--per-table-rate", float, 1.0, "tables: changes/s per table"),
    ("--seconds", float, 120.0, "tables: measured s"),
    ("--warmup", float, 10.0, "concurrent, tables: s of changes before measuring"),
    ("--chunk-rows", int, 10_000, "source.snapshot_chunk_rows"),
    ("--row-bytes", int, 200, "row size"),
    ("--partitions", int, 4, "partitions per topic"),
    ("--poll-interval", float, 1.0, "s"),
    ("--batch-rows", int, 5000, "sink batch rows"),
    ("--batch-wait", float, 0.3, "s"),
    ("--log-level", str, "warning", "the workers' log level"),
    ("--timeout", float, 1800.0, "s per snapshot or wait"),
)


# -- config, status, snapshots -----------------------------------------------------------------


def make_config(
    args: argparse.Namespace, workdir: Path, db: Path, stack: StackInfo, tables: list[str],
    app: str, roles: tuple[str, ...] = ("poll", "dedup", "sink"),
) -> tuple[Path, PipelineConfig]:  # fmt: skip
    """The benchmark's config, with ``snapshot_mode = "never"`` and ``--chunk-rows``."""
    cfg = PipelineConfig(
        tables=tables, partitions=args.partitions, poll_interval=args.poll_interval,
        batch_rows=args.batch_rows, batch_wait=args.batch_wait, app_id=app, prefix=app,
        dataset=app.replace("-", "_"), roles=list(roles),
    )  # fmt: skip
    source = f'snapshot_mode = "never"\nsnapshot_chunk_rows = {args.chunk_rows}'
    path = workdir / f"{app}-{'-'.join(roles)}.toml"
    written = write_config_extra(
        workdir, db, stack, cfg, source_extra=source, log_level=args.log_level
    )
    return written.replace(path), cfg


@dataclass
class Setup:
    """A seeded source, its config and running workers that polled every table once."""

    db: Path
    maker: RowMaker
    cfg: PipelineConfig
    settings: Settings
    writer: BigQueryWriter
    workers: Workers


async def start(
    args: argparse.Namespace, workdir: Path, stack: StackInfo, tables: list[str], app: str,
    big_rows: int = 0, workers: int = 1, wait: float = 180.0, split_roles: bool = False,
) -> Setup:  # fmt: skip
    """``tables`` (``big_rows`` rows in ``big``, written before tracking is on), a config
    and ``workers`` workers, ready and past their first poll of every table. With
    ``split_roles``, each of them polls only, and one more worker dedups and sinks (it is
    last in ``workers.list``)."""
    db, maker = workdir / "source.db", RowMaker(args.row_bytes)
    progress(f"{app}: {len(tables)} table(s), {big_rows} rows in {BIG} before tracking is on")
    seeded = {BIG: big_rows} if big_rows else {}
    await asyncio.to_thread(create_seeded_source, db, tables, seeded, maker)
    roles = ("poll",) if split_roles else ("poll", "dedup", "sink")
    config, cfg = make_config(args, workdir, db, stack, tables, app, roles)
    settings = settings_of(config)
    group = Workers(config, workdir, workers)
    if split_roles:
        rest, _ = make_config(args, workdir, db, stack, tables, app, ("dedup", "sink"))
        group.list += Workers(rest, workdir, 1).list
    run = Setup(db, maker, cfg, settings, bq_writer(settings), group)
    try:
        await run.workers.wait_ready(wait)
        await run.workers.wait_polled(tables, current_version(db), wait)
    except BaseException:
        run.workers.stop()
        run.writer.close()
        raise
    return run


async def sample_view(
    writer: BigQueryWriter, table: str, stop: asyncio.Event, every: float
) -> list[tuple[float, int]]:
    """``COUNT(*)`` of ``<table>_latest`` at most every ``every`` s until ``stop``."""
    samples: list[tuple[float, int]] = []
    while not stop.is_set():
        t0 = time.monotonic()
        samples.append((time.time(), await count_latest(writer, [table])))
        await asyncio.sleep(max(0.0, every - (time.monotonic() - t0)))
    return samples


def cut(s: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s.items() if k != "progress_seen"}


# -- scenarios ---------------------------------------------------------------------------------


async def concurrent(args: argparse.Namespace, workdir: Path, stack: StackInfo) -> dict[str, Any]:
    others = [f"items_{i}" for i in range(args.other_tables)]
    tables = [BIG, *others]
    run = await start(args, workdir, stack, tables, "snap-concurrent", big_rows=args.rows)
    db, settings, writer, workers = run.db, run.settings, run.writer, run.workers
    changer = RateChanger(db, others, args.rate, run.maker)
    rss = RssSampler(workers.pids)
    meter = CpuMeter(stack_groups(stack, workers))
    profiler = None
    try:
        rss.start()
        changer.start()
        progress(f"{args.rate:g} changes/s over {len(others)} tables; warming up {args.warmup:g}s")
        await hold_running(args.warmup, workers, changer)
        done0 = changer.done
        meter.start()
        if args.profile:
            profiler = Profiler(workers.pids, workdir, args.timeout)
        first = await timed_snapshot(settings, writer, workers, BIG, args.timeout)
        meter.stop()
        if profiler:
            profiler.stop()
        changes_during = changer.done - done0
        before = await count_latest(writer, [BIG])
        progress(f"{BIG}_latest holds {before}; second snapshot, the view sampled")
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_view(writer, BIG, stop, args.sample_every))
        try:
            second = await timed_snapshot(settings, writer, workers, BIG, args.timeout)
        finally:
            stop.set()
            samples = await sampler
        changer.stop()
        if changer.error is not None:
            raise RuntimeError(f"change thread failed: {changer.error!r}")
        await settle(workers, tables, db, min(600, args.timeout))
    finally:
        changer.stop()
        await rss.stop()
        workers.stop()
    lat1 = await poll_latencies(writer, others, first["requested_at"], first["completed_at"])
    lat2 = await poll_latencies(writer, others, second["requested_at"], second["completed_at"])
    writer.close()
    p1, p2 = pcts(lat1), pcts(lat2)
    counts = [n for _, n in samples]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(samples)]
    peak = rss.peak(first["requested_at"], first["completed_at"])
    return {
        "scenario": "concurrent",
        "machine": machine(),
        "rows": args.rows,
        "row_bytes": args.row_bytes,
        "chunk_rows": args.chunk_rows,
        "other_tables": len(others),
        "rate_per_s": args.rate,
        "achieved_rate_per_s": round(changes_during / max(first["seconds"], 1e-9), 1),
        "changer_max_behind": changer.behind_max,
        "config": run.cfg.describe(),
        "first": cut(first),
        "second": cut(second),
        "rows_per_s": first["rows_per_s"],
        "other_tables_poll_to_bq_s": p1,
        "other_tables_rows_measured": len(lat1),
        "goal_p99_le_s": GOAL_P99_S,
        "latency_pass": p1["p99"] is not None and p1["p99"] <= GOAL_P99_S,
        "second_other_tables_poll_to_bq_s": p2,
        "worker_rss_mb_at_request": rss.at(first["requested_at"]),
        "worker_rss_mb_peak_snapshot": peak,
        "worker_rss_mb_peak_run": rss.peak(),
        "cpu_s": meter.used,
        "cpu_line": meter.line(),
        "view_count_before": before,
        "view_samples": len(counts),
        "view_sample_gap_s_mean": round(sum(gaps) / len(gaps), 3) if gaps else None,
        "view_count_min": min(counts) if counts else None,
        "view_count_max": max(counts) if counts else None,
        "view_pass": bool(counts) and min(counts) >= before,
        "profile": profiler.summary() if profiler else None,
    }


def baseline(args: argparse.Namespace) -> dict[str, Any]:
    """``burst`` of ``--baseline-rows`` into one table with one worker, on a fresh stack."""
    ns = argparse.Namespace(
        rows=args.baseline_rows, tables=1, row_bytes=args.row_bytes, partitions=args.partitions,
        workers=1, poll_interval=args.poll_interval, batch_rows=args.batch_rows,
        batch_wait=args.batch_wait, max_in_flight=2, write_api="insert_all",
        timeout=args.timeout, profile=False,
    )  # fmt: skip
    progress(f"baseline: burst of {args.baseline_rows} rows, 1 table, 1 worker")
    with bench_dir(args.keep) as (workdir, stack):
        r = asyncio.run(burst.run(ns, workdir, stack))
    return {k: r[k] for k in ("rows", "rows_per_s", "elapsed_s", "rows_in_latest_views", "config")}


async def memory_one(
    args: argparse.Namespace, rows: int, workdir: Path, stack: StackInfo
) -> dict[str, Any]:
    run = await start(args, workdir, stack, [BIG], "snap-memory", big_rows=rows, split_roles=True)
    writer, workers = run.writer, run.workers
    # The snapshot is read by the poll worker; the dedup worker's memory follows the ids
    # in its window (every row's), which is the dedup window's cost, not the snapshot's.
    rss, rest = RssSampler(workers.pids[:1]), RssSampler(workers.pids[1:])
    try:
        rss.start()
        rest.start()
        await hold_running(3.0, workers)
        snap = await timed_snapshot(run.settings, writer, workers, BIG, args.timeout)
        await hold_running(1.0, workers)
    finally:
        await rss.stop()
        await rest.stop()
        workers.stop()
        writer.close()
    return {
        "rows": rows,
        "config": run.cfg.describe(),
        "snapshot": cut(snap),
        "rss_mb_at_request": rss.at(snap["requested_at"]),
        "rss_mb_peak": rss.peak(snap["requested_at"], snap["completed_at"] + 1),
        "dedup_sink_rss_mb_at_request": rest.at(snap["requested_at"]),
        "dedup_sink_rss_mb_peak": rest.peak(snap["requested_at"], snap["completed_at"] + 1),
    }


def memory(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for rows in (args.rows_small, args.rows):
        with bench_dir(args.keep) as (workdir, stack):
            runs.append(asyncio.run(memory_one(args, rows, workdir, stack)))
    small, big = runs
    spread = None
    if small["rss_mb_peak"] is not None and big["rss_mb_peak"] is not None:
        spread = round(big["rss_mb_peak"] - small["rss_mb_peak"], 1)
    return {
        "scenario": "memory",
        "machine": machine(),
        "chunk_rows": args.chunk_rows,
        "row_bytes": args.row_bytes,
        "runs": runs,
        "rss_spread_mb": spread,
        "goal_spread_le_mb": GOAL_RSS_SPREAD_MB,
        "goal_pass": spread is not None and abs(spread) <= GOAL_RSS_SPREAD_MB,
    }


async def kill(args: argparse.Namespace, workdir: Path, stack: StackInfo) -> dict[str, Any]:
    n = args.rows
    run = await start(args, workdir, stack, [BIG], "snap-kill", big_rows=n, workers=2)
    settings, writer, workers = run.settings, run.writer, run.workers
    try:
        await hold_running(3.0, workers)
        t_req = time.time()
        await request_snapshots(settings, [BIG], SNAPSHOT_REASON)
        progress(f"snapshot of {BIG} requested; SIGKILL to its worker at {n // 2} rows")
        deadline = time.monotonic() + args.timeout
        victim, at_kill = -1, {}
        while victim < 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the snapshot did not reach half its rows in time")
            for i, t in enumerate(await table_views(workers, BIG)):
                done = (t or {}).get("last_snapshot")
                if done and float(done.get("completed_at") or 0) > t_req:
                    raise RuntimeError("the snapshot completed before the kill; use more --rows")
                s = (t or {}).get("snapshot")
                if s and int(s["rows"]) * 2 >= n:
                    victim, at_kill = i, s
            await asyncio.sleep(0.05)
        dead = workers.list.pop(victim)
        os.kill(dead.proc.pid, signal.SIGKILL)
        dead.proc.wait(timeout=30)
        t_kill = time.time()
        progress(f"killed worker pid {dead.proc.pid} at {at_kill['rows']} rows, "
                 f"{at_kill['chunks']} chunks; waiting for the other one to resume")  # fmt: skip
        done, seen = await wait_snapshot(workers, BIG, t_req, args.timeout)
        totals = await kafka_totals(settings, [BIG], deadline=time.monotonic() + 600)
        statuses = await workers.statuses()
    finally:
        workers.stop()
    after = [(t, s) for t, _, s in seen if t > t_kill]
    change = await writer.query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT message_unique_id) AS d "
        f"FROM `{writer.ref(BIG)}` WHERE changetrack_type = 'S'"
    )
    view = await writer.query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d, "
        f"COUNT(DISTINCT CASE WHEN id BETWEEN 1 AND {n} THEN id END) AS found "
        f"FROM `{writer.ref(BIG + '_latest')}`"
    )
    is_recorded = await recorded(writer, BIG, int(done["version"]))
    writer.close()
    re_sent = totals["raw"] - n
    lost = n - int(view[0]["found"])
    repeated = int(view[0]["n"]) - int(view[0]["d"])
    return {
        "scenario": "kill",
        "machine": machine(),
        "rows": n,
        "chunk_rows": args.chunk_rows,
        "row_bytes": args.row_bytes,
        "workers": 2,
        "config": run.cfg.describe(),
        "killed_at_rows": int(at_kill["rows"]),
        "killed_at_chunks": int(at_kill["chunks"]),
        "killed_after_s": round(t_kill - t_req, 2),
        "resumed_after_kill_s": round(after[0][0] - t_kill, 2) if after else None,
        "first_progress_after_kill": (
            {k: after[0][1][k] for k in ("rows", "chunks")} if after else None
        ),
        "completed_after_kill_s": round(float(done["completed_at"]) - t_kill, 2),
        "survivor_snapshot_s": done.get("seconds"),  # from its (re)start of the snapshot
        "total_s": round(float(done["completed_at"]) - t_req, 2),
        "final_chunks": int(done["chunks"]),
        "final_rows": int(done["rows"]),
        "chunks_expected": math.ceil(n / args.chunk_rows),
        "recorded_in_bigquery": is_recorded,
        "raw_events": totals["raw"],
        "deduped_events": totals["deduped"],
        "rows_read_twice": re_sent,
        # More rows read again than were read before the kill: started over from chunk 1.
        "restarted_from_first_chunk": re_sent >= int(at_kill["rows"]),
        "chunks_read_twice": round(re_sent / args.chunk_rows, 2),
        "duplicates_dropped_by_survivor": sum(
            int(s["tables"][BIG]["duplicates_dropped"] or 0) for s in statuses
        ),
        "change_table_s_rows": int(change[0]["n"]),
        "change_table_s_duplicates": int(change[0]["n"]) - int(change[0]["d"]),
        "view_rows": int(view[0]["n"]),
        "rows_lost": lost,
        "keys_repeated": repeated,
        "goal_pass": lost == 0 and repeated == 0 and is_recorded,
    }


async def tables(args: argparse.Namespace, workdir: Path, stack: StackInfo) -> dict[str, Any]:
    names = table_names(args.tables)
    run = await start(args, workdir, stack, names, "snap-tables", wait=600.0)
    db, writer, workers = run.db, run.writer, run.workers
    rate = len(names) * args.per_table_rate
    changer = RateChanger(db, names, rate, run.maker)
    meter = CpuMeter(stack_groups(stack, workers))
    rss = RssSampler(workers.pids, every=1.0)
    profiler = None
    try:
        rss.start()
        changer.start()
        progress(f"{rate:g} changes/s; warming up {args.warmup:g}s")
        await hold_running(args.warmup, workers, changer)
        t_from, done0 = time.time(), changer.done
        meter.start()
        if args.profile:
            profiler = Profiler(workers.pids, workdir, args.seconds)
        progress(f"measuring for {args.seconds:g}s")
        await hold_running(args.seconds, workers, changer)
        t_to, done1 = time.time(), changer.done
        meter.stop()
        if profiler:
            profiler.stop()
        changer.stop()
        await settle(workers, names, db, min(600, args.timeout))
    finally:
        changer.stop()
        await rss.stop()
        workers.stop()
    progress("reading latencies from BigQuery")
    lat = await poll_latencies(writer, names, t_from, t_to)
    writer.close()
    p = pcts(lat)
    wall = max(meter.wall, 1e-9)
    return {
        "scenario": "tables",
        "machine": machine(),
        "tables": len(names),
        "rate_per_s": rate,
        "achieved_rate_per_s": round((done1 - done0) / (t_to - t_from), 1),
        "changer_max_behind": changer.behind_max,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "config": run.cfg.describe(),
        "rows_measured": len(lat),
        "poll_to_bq_s": p,
        "goal_p99_le_s": GOAL_P99_S,
        "goal_pass": p["p99"] is not None and p["p99"] <= GOAL_P99_S,
        "cpu_s": meter.used,
        "cpu_line": meter.line(),
        "worker_cpu_share": round(meter.used["workers"] / wall, 3),
        "worker_rss_mb_peak": rss.peak(),
        "profile": profiler.summary() if profiler else None,
    }


# -- report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(r: dict[str, Any], commit: str) -> list[tuple[str, str]]:
    head = [("scenario", r["scenario"]), ("machine", machine_line(r["machine"])),
            ("commit", commit)]  # fmt: skip
    if "error" in r:
        return [*head, ("error", r["error"])]
    return head + {"concurrent": _concurrent_lines, "memory": _memory_lines,
                   "kill": _kill_lines, "tables": _tables_lines}[r["scenario"]](r)  # fmt: skip


def _concurrent_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    f, s, b = r["first"], r["second"], r.get("baseline")
    base = "not run (--baseline-rows 0)"
    if b:
        base = (f"burst of {b['rows']} rows (1 table, 1 worker, a fresh stack): "
                f"{b['rows_per_s']} rows/s; snapshot / burst = "
                f"{r['rows_per_s'] / max(b['rows_per_s'], 1):.2f}")  # fmt: skip
    return [
        ("conditions", f"{r['rows']} rows of ~{r['row_bytes']} B in {BIG}, chunks of "
                       f"{r['chunk_rows']}; {r['other_tables']} other tables at "
                       f"{r['rate_per_s']:g} changes/s (achieved {r['achieved_rate_per_s']}; "
                       "70% ins / 30% upd); 1 worker"),
        ("pipeline", r["config"]),
        ("snapshot", f"{f['rows']} rows, {f['chunks']} chunks, {f['seconds']} s from the request "
                     f"to the record (worker's own {f['worker_seconds']} s); in "
                     f"_ctstream_snapshots: {f['recorded_in_bigquery']}"),
        ("snapshot rows/s", str(r["rows_per_s"])),
        ("baseline", base),
        ("other tables", f"poll start → BigQuery {fmt_pcts(r['other_tables_poll_to_bq_s'])} of "
                         f"{r['other_tables_rows_measured']} rows committed during the snapshot "
                         f"(goal p99 ≤ {r['goal_p99_le_s']} s: {verdict(r['latency_pass'])})"),
        ("worker RSS", f"{r['worker_rss_mb_at_request']} MB at the request, peak "
                       f"{r['worker_rss_mb_peak_snapshot']} MB during the snapshot "
                       f"({r['worker_rss_mb_peak_run']} MB over the run)"),
        ("CPU (snapshot)", r["cpu_line"]),
        ("second snapshot", f"{s['rows']} rows in {s['seconds']} s ({s['rows_per_s']} rows/s, "
                            "the view sampled meanwhile); other tables' p99 "
                            f"{r['second_other_tables_poll_to_bq_s']['p99']} s"),
        ("latest view", f"COUNT(*) {r['view_count_before']} before; during the second: min "
                        f"{r['view_count_min']}, max {r['view_count_max']} in "
                        f"{r['view_samples']} samples, one per {r['view_sample_gap_s_mean']} s "
                        f"(goal min ≥ before: {verdict(r['view_pass'])})"),
    ]  # fmt: skip


def _memory_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("conditions", f"1 table, rows of ~{r['row_bytes']} B, chunks of {r['chunk_rows']}; a "
                       "poll worker and a dedup+sink worker; each size on a fresh stack"),
        *((f"{m['rows']} rows", f"poll worker RSS {m['rss_mb_at_request']} MB at the request, "
                                f"peak {m['rss_mb_peak']} MB (dedup+sink worker "
                                f"{m['dedup_sink_rss_mb_at_request']} → "
                                f"{m['dedup_sink_rss_mb_peak']} MB); {m['snapshot']['seconds']} s, "
                                f"{m['snapshot']['rows_per_s']} rows/s") for m in r["runs"]),
        ("peak spread", f"{r['rss_spread_mb']} MB (goal ≤ {r['goal_spread_le_mb']:g} MB: "
                        f"{verdict(r['goal_pass'])})"),
    ]  # fmt: skip


def _kill_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("conditions", f"{r['rows']} rows of ~{r['row_bytes']} B, chunks of {r['chunk_rows']}, "
                       "2 workers; SIGKILL to the one snapshotting at ≥ half the rows"),
        ("pipeline", r["config"]),
        ("kill", f"{r['killed_after_s']} s after the request; its status: "
                 f"{r['killed_at_rows']} rows, {r['killed_at_chunks']} chunks"),
        ("resume", f"progress on the other worker {r['resumed_after_kill_s']} s after the kill "
                   f"(first seen: {r['first_progress_after_kill']}); recorded "
                   f"{r['completed_after_kill_s']} s after the kill, {r['total_s']} s in all; "
                   f"the survivor's own snapshot time {r['survivor_snapshot_s']} s"),
        ("chunks", f"{r['final_chunks']} chunks, {r['final_rows']} rows in the final status "
                   f"(⌈rows / chunk⌉ = {r['chunks_expected']})"),
        ("read twice", f"{r['rows_read_twice']} rows = {r['chunks_read_twice']} chunks (raw "
                       f"events {r['raw_events']} - rows; deduped {r['deduped_events']}; "
                       f"dropped by the survivor's dedup {r['duplicates_dropped_by_survivor']}); "
                       f"started over from the first chunk: {r['restarted_from_first_chunk']}"),
        ("change table", f"{r['change_table_s_rows']} S rows, "
                         f"{r['change_table_s_duplicates']} repeated unique ids"),
        ("rows lost", f"{r['rows_lost']} (goal 0)"),
        ("keys repeated", f"{r['keys_repeated']} in {BIG}_latest (goal 0)"),
        ("verdict", f"{verdict(r['goal_pass'])} (recorded: {r['recorded_in_bigquery']})"),
    ]  # fmt: skip


def _tables_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("conditions", f"{r['tables']} tables, {r['rate_per_s']:g} changes/s (one per table "
                       f"per second; achieved {r['achieved_rate_per_s']}), {r['seconds']:g} s "
                       f"after {r['warmup_s']:g} s warm-up, 1 worker"),
        ("pipeline", r["config"]),
        ("poll start → BigQuery", f"{fmt_pcts(r['poll_to_bq_s'])} of {r['rows_measured']} rows "
                                  f"(goal p99 ≤ {r['goal_p99_le_s']} s: "
                                  f"{verdict(r['goal_pass'])})"),
        ("worker CPU share", f"{r['worker_cpu_share']:.3f} = {r['cpu_s']['workers']:.1f} "
                             f"CPU-s / {r['seconds']:g} s wall"),
        ("CPU", r["cpu_line"]),
        ("worker RSS peak", f"{r['worker_rss_mb_peak']} MB"),
    ]  # fmt: skip


def run_scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    try:
        if name == "memory":
            return memory(args)
        fn = {"concurrent": concurrent, "kill": kill, "tables": tables}[name]
        with bench_dir(args.keep) as (workdir, stack):
            result = asyncio.run(fn(args, workdir, stack))
        if name == "concurrent" and args.baseline_rows > 0:
            result["baseline"] = baseline(args)
        return result
    except Exception as exc:  # the other scenarios still run
        progress(f"scenario {name} failed: {exc!r}")
        return {"scenario": name, "machine": machine(), "error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--scenario",
        default=",".join(SCENARIOS),
        help=f"comma-separated, of {', '.join(SCENARIOS)} (default: all)",
    )
    for flag, kind, default, what in OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=f"{what} (default {default})")
    common_args(parser)
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenario.split(",") if s.strip()]
    if not chosen or set(chosen) - set(SCENARIOS):
        parser.error(f"--scenario: choose from {', '.join(SCENARIOS)}")
    if args.rows_small >= args.rows and "memory" in chosen:
        parser.error("--rows-small must be below --rows")
    commit = git_commit()
    results = {name: run_scenario(name, args) for name in chosen}
    if args.json:
        print(json.dumps({"benchmark": "snapshot", "commit": commit, "scenarios": results}))
    else:
        for i, r in enumerate(results.values()):
            lines = report(r, commit)
            width = max(len(k) for k, _ in lines) + 2
            print(("\n" if i else "") + "\n".join(f"{k:<{width}}{v}" for k, v in lines))
            if r.get("profile"):
                print(f"\nprofile:\n{r['profile']}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
