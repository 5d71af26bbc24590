"""``ctstream demo``: the whole pipeline on the embedded stack, checked end to end.

Starts the local broker and BigQuery emulator, makes a change-tracked SQLite source with
three tables (one with a composite integer key, one with a composite text key whose
values would collide under naive concatenation), starts worker processes, drives
inserts, updates, deletes and re-inserts — plus, by default, a second redundant collector
as the seed system ran, so every change reaches Kafka twice — waits for BigQuery to catch
up and compares each source table with its latest-state view.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack import local_stack
from ctstream.devstack.demo_check import compare_tables, kafka_totals, latency_percentiles
from ctstream.errors import CtstreamError
from ctstream.settings import Settings, load_settings
from ctstream.source.sqlite_tracking import track_database

SCHEMA = {
    "items": (
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, "
        "qty INTEGER, updated_at DATETIME)"
    ),
    "order_lines": (
        "CREATE TABLE order_lines (order_id INTEGER NOT NULL, line_no INTEGER NOT NULL, "
        "sku TEXT, amount REAL, note TEXT, PRIMARY KEY (order_id, line_no))"
    ),
    "kv": (
        "CREATE TABLE kv (ns TEXT NOT NULL, k TEXT NOT NULL, v TEXT, blob BLOB, "
        "PRIMARY KEY (ns, k)) WITHOUT ROWID"
    ),
}


@dataclass(frozen=True)
class DemoOptions:
    rows: int = 20_000
    workers: int = 1
    collectors: int = 2
    timeout: float = 300.0
    workdir: Path | None = None
    keep: bool = False
    poll_interval: str = "500ms"


def progress(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_demo(options: DemoOptions) -> dict[str, Any]:
    started = time.monotonic()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="ctstream-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        progress(f"work dir {workdir}; starting the local broker and BigQuery emulator")
        with local_stack.stack_running(workdir / "stack") as info:
            progress(f"kafka {info.kafka_bootstrap}, bigquery {info.bigquery_endpoint}")
            db = workdir / "demo.db"
            create_source(db)
            config = write_config(
                workdir, info.kafka_bootstrap, info.bigquery_endpoint, db, options.poll_interval
            )
            settings = load_settings(config)
            with workers_running(config, options.workers, workdir) as workers:
                summary = asyncio.run(_drive(settings, db, options, workers))
    finally:
        if not options.keep and options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    return summary


def create_source(db: Path) -> None:
    if db.exists():
        db.unlink()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for ddl in SCHEMA.values():
            conn.execute(ddl)
        conn.commit()
    track_database(db, list(SCHEMA))


def write_config(workdir: Path, kafka: str, bigquery: str, db: Path, poll: str) -> Path:
    path = workdir / "ctstream.toml"
    tables = ", ".join(f'"{t}"' for t in SCHEMA)
    path.write_text(
        f"""# written by `ctstream demo`
[app]
id = "ctstream-demo"
data_dir = "{workdir / "data"}"

[source]
dialect = "sqlite"
dsn = "Driver=SQLite3;Database={db};Timeout=30000"
tables = [{tables}]
poll_interval = "{poll}"

[kafka]
bootstrap_servers = "{kafka}"
topic_prefix = "demo"
partitions = 4

[dedup]
window = "10m"

[sink]
batch_rows = 2000
batch_wait = "300ms"

[bigquery]
project = "local"
dataset = "cdc"
endpoint = "{bigquery}"
""",
        encoding="utf-8",
    )
    return path


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    web_port: int
    log: Path


def start_worker(config: Path, workdir: Path, index: int) -> WorkerProcess:
    """``ctstream worker`` as a child process with its own web port and data dir."""
    env = dict(os.environ)
    port = local_stack.free_port()
    env["CTSTREAM_WEB__PORT"] = str(port)
    env["CTSTREAM_APP__DATA_DIR"] = str(workdir / f"data-{index}")
    log_path = workdir / f"worker-{index}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "ctstream", "worker", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return WorkerProcess(proc, port, log_path)


def stop_worker(worker: WorkerProcess, sig: signal.Signals = signal.SIGTERM) -> int:
    """Stop a worker (SIGTERM: clean; SIGKILL: a crash); returns its exit status."""
    if worker.proc.poll() is None:
        worker.proc.send_signal(sig)
    try:
        return worker.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        return worker.proc.wait(timeout=10)


@contextlib.contextmanager
def workers_running(config: Path, count: int, workdir: Path) -> Iterator[list[WorkerProcess]]:
    procs: list[WorkerProcess] = []
    try:
        for i in range(count):
            procs.append(start_worker(config, workdir, i))
        progress(f"started {count} worker process(es); logs in {workdir}/worker-*.log")
        yield procs
    finally:
        for worker in procs:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in procs:
            stop_worker(worker)


class ChangeDriver:
    """Makes ``total`` row changes: inserts, updates (some keys very often), deletes and
    re-inserts of deleted keys. Deterministic for a seed."""

    def __init__(self, db: Path, total: int, seed: int = 7) -> None:
        self.db = db
        self.total = total
        self.done = 0
        self.rng = random.Random(seed)  # noqa: S311 - test data
        self.live: dict[str, list[tuple[Any, ...]]] = {t: [] for t in SCHEMA}
        self.live_set: dict[str, set[tuple[Any, ...]]] = {t: set() for t in SCHEMA}
        self.deleted: dict[str, list[tuple[Any, ...]]] = {t: [] for t in SCHEMA}
        self.next_id = {"items": 1, "order_lines": 1, "kv": 1}

    def _new_key(self, table: str) -> tuple[Any, ...]:
        n = self.next_id[table]
        self.next_id[table] += 1
        if table == "items":
            return (n,)
        if table == "order_lines":
            return (n // 5 + 1, n % 5 + 1)
        # Keys like ('1', '23') and ('12', '3') collide if joined without a separator;
        # separators and quotes inside values must not confuse the unique id either.
        tricky = ["", "|", ",", '"', "\\", ":", "ü"][n % 7]
        return (f"{n // 10}{tricky}", f"{n % 10}{tricky}{n}")

    def _values(self, table: str, key: tuple[Any, ...]) -> tuple[Any, ...]:
        r = self.rng
        if table == "items":
            ts = f"2026-11-{r.randint(1, 28):02d} {r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00"
            return (
                *key,
                f"item {key[0]} v{r.randint(0, 999)}",
                round(r.uniform(1, 500), 2),
                r.randint(0, 100),
                ts,
            )
        if table == "order_lines":
            return (
                *key,
                f"SKU-{r.randint(1, 9999)}",
                round(r.uniform(1, 900), 2),
                r.choice([None, "gift", "express", "ünïcödé;'\""]),
            )
        return (*key, r.choice(["a", "b|c", 'quote"d', None]), r.randbytes(r.randint(0, 24)))

    def _sql(self, table: str) -> tuple[str, str, str]:
        cols = {
            "items": ["id", "name", "price", "qty", "updated_at"],
            "order_lines": ["order_id", "line_no", "sku", "amount", "note"],
            "kv": ["ns", "k", "v", "blob"],
        }[table]
        nkey = {"items": 1, "order_lines": 2, "kv": 2}[table]
        keys, others = cols[:nkey], cols[nkey:]
        where = " AND ".join(f"{k} = ?" for k in keys)
        insert = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        update = f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in others)} WHERE {where}"
        delete = f"DELETE FROM {table} WHERE {where}"
        return insert, update, delete

    def step(self, conn: sqlite3.Connection, count: int) -> None:
        r = self.rng
        for _ in range(count):
            table = r.choices(list(SCHEMA), weights=[45, 40, 15])[0]
            insert, update, delete = self._sql(table)
            live = self.live[table]
            roll = r.random()
            if len(live) < 50 or roll < 0.40:
                key = self._new_key(table)
                conn.execute(insert, self._values(table, key))
                self._add(table, key)
            elif roll < 0.78:
                # A fifth of updates hit the first 20 keys: those change many times.
                key = live[r.randrange(min(20, len(live)))] if r.random() < 0.2 else r.choice(live)
                values = self._values(table, key)[len(key) :]
                conn.execute(update, (*values, *key))
            elif roll < 0.92 or not self.deleted[table]:
                key = live.pop(r.randrange(len(live)))
                self.live_set[table].discard(key)
                conn.execute(delete, key)
                self.deleted[table].append(key)
            else:
                key = self.deleted[table].pop(r.randrange(len(self.deleted[table])))
                conn.execute(insert, self._values(table, key))
                self._add(table, key)
            self.done += 1

    def _add(self, table: str, key: tuple[Any, ...]) -> None:
        self.live[table].append(key)
        self.live_set[table].add(key)

    def run(self, chunk: int = 400) -> None:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            while self.done < self.total:
                self.step(conn, min(chunk, self.total - self.done))
                conn.commit()
                time.sleep(0.01)  # let pollers interleave with the writer, as in production


async def wait_until_polling(
    workers: list[WorkerProcess],
    tables: list[str],
    timeout: float,  # noqa: ASYNC109
) -> None:
    """Until every table has been polled once by some worker; fail fast if one died."""
    deadline = time.monotonic() + timeout
    while True:
        polled: set[str] = set()
        for worker in workers:
            if worker.proc.poll() is not None:
                tail = worker.log.read_text(errors="replace").splitlines()[-15:]
                raise CtstreamError(
                    f"worker exited with status {worker.proc.returncode}; its log ends:\n"
                    + "\n".join(tail)
                )
            status = await asyncio.to_thread(_worker_status, worker.web_port)
            for name, table in (status or {}).get("tables", {}).items():
                if table.get("polls"):
                    polled.add(name)
        if polled >= set(tables):
            return
        if time.monotonic() > deadline:
            raise CtstreamError(
                f"workers did not start polling within {timeout:.0f}s "
                f"(polled so far: {sorted(polled)}); see {workers[0].log}"
            )
        await asyncio.sleep(0.5)


async def wait_until_polled(
    workers: list[WorkerProcess], tables: list[str], version: int, deadline: float
) -> None:
    """Until the workers' pollers have read every table up to ``version``."""
    while time.monotonic() < deadline:
        saved: dict[str, int] = {}
        for worker in workers:
            status = await asyncio.to_thread(_worker_status, worker.web_port)
            for name, table in (status or {}).get("tables", {}).items():
                saved[name] = max(saved.get(name, -1), table.get("saved_version") or -1)
        if all(saved.get(t, -1) >= version for t in tables):
            return
        await asyncio.sleep(0.25)


def _current_version(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return int(conn.execute("SELECT current_version FROM _ctstream_version").fetchone()[0])


def _worker_status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status/", timeout=2) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (OSError, ValueError):
        return None


async def _drive(
    settings: Settings, db: Path, options: DemoOptions, workers: list[WorkerProcess]
) -> dict[str, Any]:
    from ctstream.devstack.collector import run_collector

    progress("waiting for the workers to join and start polling")
    await wait_until_polling(workers, list(SCHEMA), timeout=120)
    writer = BigQueryWriter(settings.bigquery)
    stop_collector = asyncio.Event()
    collector = None
    if options.collectors == 2:
        collector = asyncio.create_task(run_collector(settings, stop_collector))
        progress("second (redundant) collector running: every change will be sent twice")
    driver = ChangeDriver(db, options.rows)
    progress(f"driving {options.rows} changes into {db.name}")
    t0 = time.monotonic()
    await asyncio.to_thread(driver.run)
    drive_seconds = time.monotonic() - t0
    progress(
        f"{driver.done} changes committed in {drive_seconds:.1f}s; waiting for BigQuery to catch up"
    )
    stop_collector.set()  # it polls once more, then stops
    if collector is not None:
        await collector
    deadline = time.monotonic() + options.timeout
    # Cheap checks first, so the comparison does not compete with the pipeline for CPU:
    # every table polled up to the final version, then every topic consumed.
    final_version = await asyncio.to_thread(_current_version, db)
    await wait_until_polled(workers, list(SCHEMA), final_version, deadline)
    totals = await kafka_totals(settings, list(SCHEMA), deadline=deadline)
    mismatches = -1
    detail: list[str] = []
    while True:
        mismatches, detail = await compare_tables(db, writer, list(SCHEMA))
        if mismatches == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    catch_up = time.monotonic() - t0 - drive_seconds
    progress(
        f"latest views {'match' if mismatches == 0 else 'DIFFER from'} the source "
        f"{catch_up:.1f}s after the last change was committed"
    )
    for line in detail[:10]:
        progress(f"  {line}")
    p50, p99, rows_in_bq = await latency_percentiles(writer, list(SCHEMA))
    writer.close()
    return {
        "rows_changed": driver.done,
        "events_produced": totals["raw"],
        "duplicates_dropped": totals["raw"] - totals["deduped"],
        "rows_in_bigquery": rows_in_bq,
        "mismatches": mismatches,
        "p50_latency_s": p50,
        "p99_latency_s": p99,
        "drive_s": round(drive_seconds, 2),
        "catch_up_s": round(catch_up, 2),
        "workers": options.workers,
        "collectors": options.collectors,
    }
