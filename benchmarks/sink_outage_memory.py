"""Worker memory during a BigQuery outage under steady source changes.

One ctstream worker runs on the embedded stack with BigQuery behind the integration tests'
fault proxy while a thread changes a SQLite table at ``--rate`` changes/s. After
``--warmup`` s with BigQuery healthy (the baseline), insertAll answers 503 for ``--outage``
s; the worker's RSS (plus any children's) is sampled every second. Then the outage ends,
changes go on for 10 s, and the run waits until BigQuery's latest view equals the source.
Goal: RSS growth during the outage <= 50 MB. Exit 0 when there are no mismatches.

    .venv/bin/python -m benchmarks.sink_outage_memory [--outage 300] [--rate 200]
        [--warmup 60] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sqlite3
import string
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack.demo_check import compare_table
from ctstream.devstack.local_stack import StackInfo, stack_running
from ctstream.devstack.workers import (
    WorkerProcess,
    fetch_worker_status,
    start_worker,
    stop_worker,
    wait_until_polling,
)
from ctstream.settings import load_settings
from ctstream.source.sqlite_tracking import track_database
from tests.integration.fault_proxy import fault_proxy

TABLE = "items"
DDL = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, note TEXT)"
PARTITIONS = 4
GOAL_MB = 50.0
TAIL_S = 10.0  # changes go on this long after the outage
RECOVERY_TIMEOUT_S = 600.0
MB = 1024.0  # VmRSS is in kB


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- memory ------------------------------------------------------------------------------


def _vm_rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> tuple[float, int]:
    """RSS of ``pid`` plus all its descendants in MB, and how many descendants there are."""
    children: dict[int, list[int]] = {}
    for entry in (e for e in Path("/proc").iterdir() if e.name.isdigit()):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    kids, todo = list[int](), [pid]
    while todo:
        found = children.get(todo.pop(), [])
        kids += found
        todo += found
    return (_vm_rss_kb(pid) + sum(_vm_rss_kb(k) for k in kids)) / MB, len(kids)


class Sampler:
    """Samples the worker's RSS every second: (seconds since start, phase, MB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.phase = "start"
        self.samples: list[tuple[float, str, float]] = []
        self.max_children = 0

    def take(self) -> float:
        mb, kids = rss_mb(self.pid)
        self.max_children = max(self.max_children, kids)
        self.samples.append((time.monotonic() - self.t0, self.phase, mb))
        return mb

    async def run(self) -> None:
        while True:
            self.take()
            await asyncio.sleep(1.0)

    def of(self, phase: str) -> list[float]:
        return [mb for _, p, mb in self.samples if p == phase]


# -- source changes ----------------------------------------------------------------------


class Changer(threading.Thread):
    """Steady changes: ~60% inserts, 30% updates, 10% deletes, committed every 100 ms."""

    def __init__(self, db: Path, rate: float, seed: int = 7) -> None:
        super().__init__(name="changer", daemon=True)
        self.db, self.rate = db, rate
        self.rng = random.Random(seed)  # test data
        self.stopping = threading.Event()
        self.done = 0
        self.error: BaseException | None = None

    def _text(self, n: int) -> str:
        return "".join(self.rng.choices(string.ascii_letters + string.digits + " ", k=n))

    def run(self) -> None:
        rng, live, next_id = self.rng, list[int](), 1
        try:
            with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
                t0 = time.monotonic()
                while not self.stopping.is_set():
                    due = int((time.monotonic() - t0) * self.rate) - self.done
                    for _ in range(max(0, due)):
                        roll = rng.random()
                        if not live or roll < 0.6:
                            conn.execute(
                                "INSERT INTO items VALUES (?, ?, ?, ?)",
                                (next_id, f"item {next_id} {self._text(24)}",
                                 round(rng.uniform(1, 500), 2), self._text(150)),
                            )  # fmt: skip
                            live.append(next_id)
                            next_id += 1
                        elif roll < 0.9:
                            conn.execute(
                                "UPDATE items SET name = ?, price = ?, note = ? WHERE id = ?",
                                (f"upd {self._text(28)}", round(rng.uniform(1, 500), 2),
                                 self._text(150), rng.choice(live)),
                            )  # fmt: skip
                        else:
                            i = rng.randrange(len(live))
                            live[i], live[-1] = live[-1], live[i]
                            conn.execute("DELETE FROM items WHERE id = ?", (live.pop(),))
                        self.done += 1
                    conn.commit()
                    self.stopping.wait(0.1)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


# -- pipeline ----------------------------------------------------------------------------


def write_config(workdir: Path, db: Path, kafka: str, bigquery: str) -> Path:
    path = workdir / "ctstream.toml"
    path.write_text(
        f"""[app]
id = "bench-outage"
[source]
dialect = "sqlite"
dsn = "Driver=SQLite3;Database={db};Timeout=30000"
tables = ["{TABLE}"]
poll_interval = "1s"
[kafka]
bootstrap_servers = "{kafka}"
topic_prefix = "bench"
partitions = {PARTITIONS}
[dedup]
window = "10m"
[bigquery]
project = "local"
dataset = "bench"
endpoint = "{bigquery}"
""",
        encoding="utf-8",
    )
    return path


async def hold(seconds: float, worker: WorkerProcess, changer: Changer) -> None:
    """Sleep ``seconds``, failing early when the worker or the change thread died."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if worker.proc.poll() is not None:
            tail = "\n".join(worker.log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"worker exited ({worker.proc.returncode}); log ends:\n{tail}")
        if changer.error is not None:
            raise RuntimeError(f"change thread failed: {changer.error!r}")
        await asyncio.sleep(min(1.0, left))


async def wait_equal(db: Path, writer: BigQueryWriter, timeout: float) -> list[str]:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        try:
            problems = await compare_table(db, writer, TABLE)
        except Exception as exc:  # the view may not exist yet
            problems = [f"query failed: {exc}"]
        if not problems or time.monotonic() > deadline:
            return problems
        await asyncio.sleep(2.0)


async def run(args: argparse.Namespace, stack: StackInfo, workdir: Path) -> dict[str, Any]:
    db = workdir / "source.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(DDL)
        conn.commit()
    track_database(db, [TABLE])
    async with fault_proxy(stack.bigquery_endpoint) as (proxy, endpoint):
        config = write_config(workdir, db, stack.kafka_bootstrap, endpoint)
        bq = load_settings(config).bigquery  # the checks query the emulator directly
        writer = BigQueryWriter(bq.model_copy(update={"endpoint": stack.bigquery_endpoint}))
        worker = start_worker(config, workdir, 0)
        changer = Changer(db, args.rate)
        sampler = Sampler(worker.proc.pid)
        sampling: asyncio.Task[None] | None = None
        try:
            progress(f"worker pid {worker.proc.pid}; waiting until it polls {TABLE}")
            await wait_until_polling([worker], [TABLE], timeout=120)
            changer.start()
            sampler.phase = "warmup"
            warm_start = sampler.take()
            sampling = asyncio.create_task(sampler.run())
            progress(f"warming up {args.warmup:.0f}s at {args.rate:.0f} changes/s")
            await hold(args.warmup, worker, changer)
            sampler.phase = "outage"
            out_start = sampler.take()
            proxy.mode = "503"
            progress(f"BigQuery outage for {args.outage:.0f}s (insertAll → 503)")
            await hold(args.outage, worker, changer)
            out_end = sampler.take()
            proxy.mode = None
            sampler.phase = "recovery"
            outage_over = time.monotonic()
            progress(f"outage over; changing {TAIL_S:.0f}s more, then waiting for BigQuery")
            await hold(TAIL_S, worker, changer)
            changer.stop()
            last_change = time.monotonic()
            problems = await wait_equal(db, writer, RECOVERY_TIMEOUT_S)
            done = time.monotonic()
            end = sampler.take()
            status = await asyncio.to_thread(fetch_worker_status, worker.web_port, 10.0)
        finally:
            if sampling is not None:
                sampling.cancel()
            changer.stop()
            code = stop_worker(worker)
            writer.close()
            progress(f"worker stopped (exit status {code})")
    for line in problems[:10]:
        progress(f"  {line}")
    warmup_growth = sampler.of("warmup")[-1] - warm_start
    outage_max = max([out_start, out_end, *sampler.of("outage")])
    return {
        "rate_per_s": args.rate,
        "rows_changed": changer.done,
        "warmup_s": args.warmup,
        "outage_s": args.outage,
        "partitions": PARTITIONS,
        "rss_warmup_start_mb": round(warm_start, 1),
        "rss_outage_start_mb": round(out_start, 1),
        "rss_outage_max_mb": round(outage_max, 1),
        "rss_outage_end_mb": round(out_end, 1),
        "outage_growth_mb": round(outage_max - out_start, 1),
        "warmup_growth_mb": round(warmup_growth, 1),
        "warmup_growth_mb_per_min": round(warmup_growth / args.warmup * 60, 1),
        "rss_end_mb": round(end, 1),
        "child_processes": sampler.max_children,
        "sink_retries": status["sink"]["retries"],
        "insert_all_refused": proxy.refused,
        "rows_written": status["tables"][TABLE]["rows_written"],
        "recovery_s": round(done - outage_over, 1),
        "catch_up_after_last_change_s": round(done - last_change, 1),
        "mismatches": len(problems),
        "goal_growth_le_mb": GOAL_MB,
        "goal_pass": outage_max - out_start <= GOAL_MB,
        "rss_every_30s_mb": [[round(t), p, round(mb, 1)] for t, p, mb in sampler.samples[::30]],
    }


def report(r: dict[str, Any]) -> str:
    verdict = "PASS" if r["goal_pass"] else "FAIL"
    lines = [
        ("conditions", f"1 worker, {r['partitions']} partitions, poll 1s, dedup 10m, "
                       "default sink settings, outage = insertAll answered 503"),
        ("rate", f"{r['rate_per_s']:g} changes/s (60% insert, 30% update, 10% delete)"),
        ("rows changed", f"{r['rows_changed']}"),
        ("warmup / outage", f"{r['warmup_s']:g} s / {r['outage_s']:g} s"),
        ("RSS at outage start", f"{r['rss_outage_start_mb']} MB"),
        ("max RSS during outage", f"{r['rss_outage_max_mb']} MB"),
        ("growth during outage", f"{r['outage_growth_mb']} MB (goal ≤ {GOAL_MB:g} MB: {verdict})"),
        ("warmup RSS growth", f"{r['warmup_growth_mb']} MB ({r['warmup_growth_mb_per_min']} "
                              f"MB/min; {r['rss_warmup_start_mb']} MB at warmup start)"),
        ("RSS at end", f"{r['rss_end_mb']} MB (child processes: {r['child_processes']})"),
        ("sink retries", f"{r['sink_retries']} (insertAll refused by proxy: "
                         f"{r['insert_all_refused']})"),
        ("rows written", f"{r['rows_written']}"),
        ("recovery", f"{r['recovery_s']} s after the outage ended "
                     f"({r['catch_up_after_last_change_s']} s after the last change)"),
        ("mismatches", f"{r['mismatches']}"),
    ]  # fmt: skip
    return "\n".join(f"{k:<24}{v}" for k, v in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--outage", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--rate", type=float, default=200.0, help="changes/s (default 200)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.warmup <= 0 or args.outage <= 0 or args.rate <= 0:
        parser.error("--warmup, --outage and --rate must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="ctstream-bench-"))
    try:
        progress(f"work dir {workdir}; starting the local broker and BigQuery emulator")
        with stack_running(workdir / "stack") as stack:
            result = asyncio.run(run(args, stack, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result) if args.json else report(result), flush=True)
    return 0 if result["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
