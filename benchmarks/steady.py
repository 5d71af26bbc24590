"""Steady: a fixed change rate for minutes → latency source commit → BigQuery, CPU per 1,000 rows.

A thread changes ``--tables`` SQLite tables at ``--rate`` changes/s (60% inserts, 30%
updates, 10% deletes, committed every 100 ms; every written row carries its commit time in
``committed_at``) for ``--warmup`` + ``--duration`` s while the workers run. Afterwards the
BigQuery change tables are read: for every row committed after the warm-up,

* poll→BigQuery = ``bigquery_insert_time - changetrack_start_time`` (the latency beyond the
  poll interval, as the seed system measured it; goal p99 ≤ 1.5 s at 2,000 rows/s), and
* commit→BigQuery = ``bigquery_insert_time - committed_at`` (includes waiting for the poll).

Deletes carry no ``committed_at`` and are left out of the latency figures. CPU is that of
every process (workers, broker, emulator, this driver) during the measured window.

    .venv/bin/python -m benchmarks.steady [--rate 2000] [--duration 300] [--tables 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import random
import sqlite3
import sys
import threading
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
    create_source,
    current_version,
    fmt_pcts,
    machine,
    machine_line,
    pcts,
    print_result,
    progress,
    rss_mb,
    settings_of,
    stack_groups,
    table_names,
    write_config,
)
from ctstream.devstack.demo_check import kafka_totals
from ctstream.devstack.local_stack import StackInfo

GOAL_P99_S = 1.5


class Changer(threading.Thread):
    """``rate`` changes/s over ``tables``, committed every 100 ms."""

    def __init__(self, db: Path, tables: list[str], rate: float, maker: RowMaker) -> None:
        super().__init__(name="changer", daemon=True)
        self.db, self.tables, self.rate, self.maker = db, tables, rate, maker
        self.rng = random.Random(11)  # test data
        self.stopping = threading.Event()
        self.done = 0
        self.behind_max = 0
        self.error: BaseException | None = None
        self.marks: list[tuple[float, int]] = []  # (time, changes done) at mark()

    def mark(self) -> None:
        self.marks.append((time.time(), self.done))

    def run(self) -> None:
        rng, maker = self.rng, self.maker
        live: dict[str, list[int]] = {t: [] for t in self.tables}
        next_id = 1
        try:
            with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
                t0 = time.monotonic()
                while not self.stopping.is_set():
                    due = int((time.monotonic() - t0) * self.rate) - self.done
                    self.behind_max = max(self.behind_max, due - int(self.rate / 10))
                    now = time.time()
                    for _ in range(max(0, due)):
                        table = self.tables[rng.randrange(len(self.tables))]
                        keys = live[table]
                        roll = rng.random()
                        if not keys or roll < 0.6:
                            conn.execute(
                                f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?)",
                                maker.values(next_id, now),
                            )
                            keys.append(next_id)
                            next_id += 1
                        elif roll < 0.9:
                            key = keys[rng.randrange(len(keys))]
                            conn.execute(
                                f"UPDATE {table} SET price = ?, note = ?, committed_at = ? "
                                "WHERE id = ?",
                                (round(rng.uniform(1, 500), 2), maker.values(key)[3], now, key),
                            )
                        else:
                            i = rng.randrange(len(keys))
                            keys[i], keys[-1] = keys[-1], keys[i]
                            conn.execute(f"DELETE FROM {table} WHERE id = ?", (keys.pop(),))
                        self.done += 1
                    conn.commit()
                    self.stopping.wait(0.1)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


async def hold(seconds: float, workers: Workers, changer: Changer, rss: list[float]) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        workers.check_alive()
        if changer.error is not None:
            raise RuntimeError(f"change thread failed: {changer.error!r}")
        rss.append(sum(rss_mb(p) for p in workers.pids))
        await asyncio.sleep(min(1.0, left))


def _epoch(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value)


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
        app_id="bench-steady",
        write_api=args.write_api,
        bigquery_extra=f'compact_interval = "{args.compact_interval}s"',
    )
    config = write_config(workdir, db, stack, cfg)
    settings = settings_of(config)
    writer = bq_writer(settings)
    workers = Workers(config, workdir, args.workers)
    changer = Changer(db, tables, args.rate, RowMaker(args.row_bytes))
    meter = CpuMeter(stack_groups(stack, workers))
    profiler = None
    rss: list[float] = []
    try:
        await workers.wait_ready(180)
        await workers.wait_polled(tables, current_version(db), 120)
        await asyncio.sleep(2.0)
        changer.start()
        progress(f"{args.rate:g} changes/s; warming up {args.warmup:g}s")
        await hold(args.warmup, workers, changer, [])
        changer.mark()
        meter.start()
        if args.profile:
            profiler = Profiler(workers.pids, workdir, args.duration)
        progress(f"measuring for {args.duration:g}s")
        await hold(args.duration, workers, changer, rss)
        changer.mark()
        meter.stop()
        if profiler:
            profiler.stop()
        changer.stop()
        progress("changes stopped; waiting until the workers wrote everything")
        final = current_version(db)
        await workers.wait_polled(tables, final, 900)
        # Then until the raw and deduped topics are consumed (the backlog may be minutes).
        totals = await kafka_totals(settings, tables, deadline=time.monotonic() + 1800)
        drained_at = time.time()
        # Rows written stops growing once the sink caught up with the last poll.
        last, still = -1, 0
        while still < 6:
            n = await workers.table_sum("rows_written")
            still = still + 1 if n == last else 0
            last = n
            await asyncio.sleep(0.5)
        statuses = await workers.statuses()
    finally:
        changer.stop()
        workers.stop()
    (t_from, done_from), (t_to, done_to) = changer.marks[0], changer.marks[1]
    progress("reading latencies from BigQuery")
    poll_lat: list[float] = []
    commit_lat: list[float] = []
    for t in tables:
        rows = await writer.query(
            "SELECT bigquery_insert_time AS bi, changetrack_start_time AS cs, committed_at "
            f"FROM `{writer.ref(t)}` WHERE committed_at IS NOT NULL "
            f"AND committed_at >= {t_from} AND committed_at < {t_to}"
        )
        for r in rows:
            bi, cs = _epoch(r["bi"]), _epoch(r["cs"])
            poll_lat.append(bi - cs)
            commit_lat.append(bi - float(r["committed_at"]))
    writer.close()
    measured = done_to - done_from
    cpu_total = sum(meter.used.values())
    p_poll, p_commit = pcts(poll_lat), pcts(commit_lat)
    p99 = p_poll["p99"]
    return {
        "benchmark": "steady",
        "rate_per_s": args.rate,
        "achieved_rate_per_s": round(measured / (t_to - t_from), 1),
        "changer_max_behind": changer.behind_max,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "row_bytes": args.row_bytes,
        "tables": len(tables),
        "partitions": args.partitions,
        "workers": args.workers,
        "config": cfg.describe(),
        "machine": machine(),
        "changes_measured": measured,
        "rows_measured_in_bq": len(poll_lat),
        "poll_to_bq_s": p_poll,
        "commit_to_bq_s": p_commit,
        "commit_to_bq_p99_minus_poll_interval_s": (
            None if p_commit["p99"] is None else round(p_commit["p99"] - args.poll_interval, 3)
        ),
        "goal_p99_le_s": GOAL_P99_S,
        "goal_pass": p99 is not None and p99 <= GOAL_P99_S,
        "cpu_s": meter.used,
        "cpu_line": meter.line(),
        "cpu_s_per_1000_rows": round(1000 * cpu_total / max(1, measured), 3),
        "worker_cpu_s_per_1000_rows": round(1000 * meter.used["workers"] / max(1, measured), 3),
        "worker_rss_mb_max": round(max(rss), 1) if rss else None,
        "sink_batches": sum(s["sink"]["batches"] for s in statuses),
        "compaction": _merges(statuses),
        "raw_events": totals["raw"],
        "deduped_events": totals["deduped"],
        "drained_after_stop_s": round(drained_at - t_to, 1),
        "profile": profiler.summary() if profiler else None,
    }


def _merges(statuses: list[dict[str, Any]]) -> str:
    """The leader's merges into <t>_current during the run, from the workers' status."""
    merged = [
        t["compaction"]
        for s in statuses
        for t in s["tables"].values()
        if t.get("compaction") and t["compaction"].get("merges")
    ]
    if not merged:
        return "no merge during the run"
    merges = sum(m["merges"] for m in merged)
    rows = sum(m["rows_merged"] for m in merged)
    seconds = sum(m["merge_seconds"] for m in merged)
    return (
        f"{merges} merges of {len(merged)} tables, {rows:,} rows merged, "
        f"{seconds / merges:.2f} s and {rows / merges:,.0f} rows per merge on average"
    )


def report(r: dict[str, Any]) -> list[tuple[str, str]]:
    verdict = "PASS" if r["goal_pass"] else "FAIL"
    return [
        ("benchmark", "steady: fixed change rate → latency source → BigQuery, CPU/1,000 rows"),
        ("machine", machine_line(r["machine"])),
        ("conditions", f"{r['rate_per_s']:g} changes/s (achieved {r['achieved_rate_per_s']}; "
                       f"60% ins, 30% upd, 10% del) for {r['duration_s']:g} s after "
                       f"{r['warmup_s']:g} s warm-up; rows ~{r['row_bytes']} B, {r['tables']} "
                       f"tables, {r['partitions']} partitions, {r['workers']} worker(s)"),
        ("pipeline", r["config"]),
        ("measured", f"{r['changes_measured']} changes; {r['rows_measured_in_bq']} rows in "
                     "BigQuery with a commit time in the window (net changes, no deletes)"),
        ("poll start → BigQuery", f"{fmt_pcts(r['poll_to_bq_s'])}  "
                                  f"(goal p99 ≤ {r['goal_p99_le_s']} s: {verdict})"),
        ("commit → BigQuery", f"{fmt_pcts(r['commit_to_bq_s'])}  (p99 - poll interval = "
                              f"{r['commit_to_bq_p99_minus_poll_interval_s']} s)"),
        ("CPU", r["cpu_line"]),
        ("CPU per 1,000 rows", f"{r['cpu_s_per_1000_rows']} CPU-s all processes, "
                               f"{r['worker_cpu_s_per_1000_rows']} in the worker(s)"),
        ("worker RSS max", f"{r['worker_rss_mb_max']} MB"),
        ("sink batches", str(r["sink_batches"])),
        ("compaction", r["compaction"]),
        ("backlog", f"all events consumed {r['drained_after_stop_s']} s after the changes "
                    f"stopped ({r['raw_events']} raw, {r['deduped_events']} deduped events)"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=2000.0, help="changes/s (default 2000)")
    parser.add_argument("--duration", type=float, default=300.0, help="measured s (default 300)")
    parser.add_argument("--warmup", type=float, default=15.0, help="s (default 15)")
    parser.add_argument("--tables", type=int, default=4, help="source tables (default 4)")
    parser.add_argument("--row-bytes", type=int, default=200, help="row size (default 200)")
    parser.add_argument("--partitions", type=int, default=4, help="default 4")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="s (default 1)")
    parser.add_argument("--batch-rows", type=int, default=2000, help="sink batch (default 2000)")
    parser.add_argument("--batch-wait", type=float, default=0.2, help="s (default 0.2)")
    parser.add_argument(
        "--compact-interval",
        type=float,
        default=30.0,
        help="s between the leader's merges into <t>_current (default 30; each merges up "
        "to bigquery.compact_settle, 150 s, ago)",
    )
    parser.add_argument(
        "--write-api",
        choices=["insert_all", "storage_write", "storage_write_committed"],
        default="insert_all",
    )
    common_args(parser)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    with bench_dir(args.keep) as (workdir, stack):
        result = asyncio.run(run(args, workdir, stack))
    print_result(result, report(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
