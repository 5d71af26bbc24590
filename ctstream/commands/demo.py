"""``ctstream demo``: the whole pipeline on the embedded stack, checked end to end.

Starts the local broker and BigQuery emulator, makes a change-tracked SQLite source with
three tables (one with a composite integer key, one with a composite text key whose
values would collide under naive concatenation), starts worker processes, drives
inserts, updates, deletes and re-inserts — plus, by default, a second redundant collector
as the seed system ran, so every change reaches Kafka twice — waits for BigQuery to catch
up and compares each source table with its latest-state view.

Progress goes to stderr; the summary to stdout (one JSON object with ``--json``). Exit
status 0 only when ``mismatches`` is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack.collector import run_collector
from ctstream.devstack.demo_check import compare_tables, kafka_totals, latency_percentiles
from ctstream.devstack.demo_source import SCHEMA, ChangeDriver, create_source, current_version
from ctstream.devstack.local_stack import StackInfo, stack_running
from ctstream.devstack.workers import (
    WorkerProcess,
    wait_until_polled,
    wait_until_polling,
    workers_running,
)
from ctstream.settings import Settings, load_settings


def run(args: argparse.Namespace) -> int:
    """``ctstream demo``: run it and print the summary; 0 when nothing differs, else 1."""
    options = DemoOptions(
        rows=args.rows,
        workers=args.workers,
        collectors=args.collectors,
        timeout=args.timeout,
        workdir=Path(args.workdir) if args.workdir else None,
        keep=args.keep,
    )
    summary = run_demo(options)
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0 if summary["mismatches"] == 0 else 1


@dataclass(frozen=True)
class DemoOptions:
    """What to run: changes to make, worker processes, collectors (1 or 2), how long to
    wait for BigQuery (s), where to keep files."""

    rows: int = 20_000
    workers: int = 1
    collectors: int = 2
    timeout: float = 300.0
    workdir: Path | None = None
    keep: bool = False
    poll_interval: str = "500ms"


def progress(message: str) -> None:
    """A progress line on stderr: ``[demo HH:MM:SS] message``."""
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run the demo; returns its summary (the keys :func:`run` prints). The work dir is
    deleted afterwards unless it was given or ``options.keep`` is set."""
    started = time.monotonic()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="ctstream-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        progress(f"work dir {workdir}; starting the local broker and BigQuery emulator")
        with stack_running(workdir / "stack") as info:
            progress(f"kafka {info.kafka_bootstrap}, bigquery {info.bigquery_endpoint}")
            db = workdir / "demo.db"
            create_source(db)
            config = write_config(workdir, info, db, options.poll_interval)
            settings = load_settings(config)
            with workers_running(config, options.workers, workdir) as workers:
                progress(
                    f"started {options.workers} worker process(es); logs in {workdir}/worker-*.log"
                )
                summary = asyncio.run(_drive(settings, db, options, workers))
    finally:
        if not options.keep and options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    return summary


def write_config(workdir: Path, stack: StackInfo, db: Path, poll: str) -> Path:
    """The demo's config file, ``<workdir>/ctstream.toml``, for the :data:`SCHEMA` tables."""
    kafka, bigquery = stack.kafka_bootstrap, stack.bigquery_endpoint
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
storage_endpoint = "{stack.bigquery_grpc}"
""",
        encoding="utf-8",
    )
    return path


async def _drive(
    settings: Settings, db: Path, options: DemoOptions, workers: list[WorkerProcess]
) -> dict[str, Any]:
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
    final_version = await asyncio.to_thread(current_version, db)
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
