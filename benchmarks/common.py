"""Shared pieces of the speed benchmarks: stack, source, config, workers, meters, checks.

Everything runs on the embedded local stack (Tansu broker + bqemulator) started in a
temporary directory, with the SQLite stand-in for SQL Server Change Tracking as source.
Workers are ``ctstream worker`` child processes (``ctstream.devstack.workers.start_worker``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from ctstream.bigquery.writer import BigQueryWriter
from ctstream.commands.snapshot import request_snapshots
from ctstream.devstack.local_stack import StackInfo, stack_running
from ctstream.devstack.workers import WorkerProcess, start_worker, stop_worker, worker_status
from ctstream.models import ChangeEvent, TableSpec, encode_key, unique_id
from ctstream.models.values import iso_utc
from ctstream.settings import Settings, TopicRetention, load_settings
from ctstream.source.sqlite_tracking import track_database
from ctstream.streams.topics import TopicNames, ensure_topics

COLUMNS = ("id", "name", "price", "note", "committed_at")
DDL = (
    "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, note TEXT, "
    "committed_at REAL)"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
_WORKER_INDEX = itertools.count()


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- conditions --------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and load: the conditions every benchmark prints."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu_model": model or platform.processor(),
        "mem_gb": round(mem_gb, 1),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to the measured worker(s) and print the top of the profile",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, config)")


def print_result(result: dict[str, Any], lines: Sequence[tuple[str, str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
        return
    width = max(len(k) for k, _ in lines) + 2
    print("\n".join(f"{k:<{width}}{v}" for k, v in lines), flush=True)
    for section in ("profile",):
        if result.get(section):
            print(f"\n{section}:\n{result[section]}", flush=True)


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['cores']} cores ({m['cpu_model']}), {m['mem_gb']} GB, load {m['load_avg_1m_at_start']}"
        " at start; broker, emulator, workers and this driver share the cores"
    )


@contextlib.contextmanager
def bench_dir(keep: bool) -> Iterator[tuple[Path, StackInfo]]:
    """A temporary work dir with the local stack running in it."""
    workdir = Path(tempfile.mkdtemp(prefix="ctstream-bench-"))
    try:
        progress(f"work dir {workdir}; starting the local broker and BigQuery emulator")
        with stack_running(workdir / "stack") as stack:
            yield workdir, stack
    finally:
        if keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# -- source ------------------------------------------------------------------------------


def table_names(count: int) -> list[str]:
    return ["items"] if count == 1 else [f"items_{i}" for i in range(count)]


def create_source(db: Path, tables: Sequence[str]) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for t in tables:
            conn.execute(DDL.format(t=t))
        conn.commit()
    track_database(db, list(tables))


class RowMaker:
    """Rows of about ``row_bytes`` bytes (as JSON in the change event's ``row``)."""

    def __init__(self, row_bytes: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)  # test data
        # id, name, price, committed_at and the JSON punctuation take ~90 bytes.
        self.note_len = max(0, row_bytes - 90)
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
        self.pool = "".join(self.rng.choices(alphabet, k=self.note_len + 4096))

    def values(self, i: int, committed_at: float | None = None) -> tuple[Any, ...]:
        off = (i * 7919) % 4096
        return (
            i,
            f"item {i}",
            round(1 + (i % 50_000) / 100, 2),
            self.pool[off : off + self.note_len],
            committed_at,
        )


def bulk_insert(db: Path, tables: Sequence[str], rows: int, maker: RowMaker) -> tuple[float, float]:
    """``rows`` inserts spread over ``tables``, committed in one transaction.

    Returns (commit time as epoch seconds, seconds the transaction took)."""
    t0 = time.monotonic()
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn:
        per = {t: 0 for t in tables}
        for i in range(rows):
            per[tables[i % len(tables)]] += 1
        base = 1
        now = time.time()
        for t in tables:
            conn.executemany(
                f"INSERT INTO {t} VALUES (?, ?, ?, ?, ?)",
                (maker.values(i, now) for i in range(base, base + per[t])),
            )
        conn.commit()
        committed = time.time()
    return committed, time.monotonic() - t0


def current_version(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return int(conn.execute("SELECT current_version FROM _ctstream_version").fetchone()[0])


# -- config and workers --------------------------------------------------------------------


@dataclass
class PipelineConfig:
    tables: list[str]
    partitions: int = 4
    poll_interval: float = 1.0
    batch_rows: int = 5000
    batch_wait: float = 0.3
    max_in_flight: int = 2
    fetch_size: int = 5000
    roles: list[str] = field(default_factory=lambda: ["poll", "dedup", "sink"])
    app_id: str = "bench"
    prefix: str = "bench"
    dataset: str = "bench"
    write_api: str = "insert_all"
    bigquery_extra: str = ""  # more [bigquery] lines

    def describe(self) -> str:
        return (
            f"{len(self.tables)} table(s), {self.partitions} partitions, poll "
            f"{self.poll_interval:g}s, sink batch {self.batch_rows} rows/{self.batch_wait:g}s, "
            f"{self.max_in_flight} in flight, {self.write_api}, roles {'+'.join(self.roles)}"
        )


def write_config(workdir: Path, db: Path, stack: StackInfo, cfg: PipelineConfig) -> Path:
    path = workdir / f"{cfg.app_id}.toml"
    tables = ", ".join(f'"{t}"' for t in cfg.tables)
    roles = ", ".join(f'"{r}"' for r in cfg.roles)
    storage = (
        f'storage_endpoint = "{stack.bigquery_grpc}"\n' if cfg.write_api != "insert_all" else ""
    )
    path.write_text(
        f"""[app]
id = "{cfg.app_id}"
roles = [{roles}]
data_dir = "{workdir / "data"}"
log_level = "warning"
[source]
dialect = "sqlite"
dsn = "Driver=SQLite3;Database={db};Timeout=30000"
tables = [{tables}]
poll_interval = "{cfg.poll_interval}s"
fetch_size = {cfg.fetch_size}
[kafka]
bootstrap_servers = "{stack.kafka_bootstrap}"
topic_prefix = "{cfg.prefix}"
partitions = {cfg.partitions}
[dedup]
window = "10m"
[sink]
batch_rows = {cfg.batch_rows}
batch_wait = "{cfg.batch_wait}s"
max_in_flight = {cfg.max_in_flight}
[bigquery]
project = "local"
dataset = "{cfg.dataset}"
endpoint = "{stack.bigquery_endpoint}"
write_api = "{cfg.write_api}"
{storage}{cfg.bigquery_extra}
""",
        encoding="utf-8",
    )
    return path


def settings_of(config: Path) -> Settings:
    return load_settings(config)


class Workers:
    """``count`` ctstream worker processes of one config."""

    def __init__(self, config: Path, workdir: Path, count: int) -> None:
        self.list: list[WorkerProcess] = [
            start_worker(config, workdir, next(_WORKER_INDEX)) for _ in range(count)
        ]
        progress(f"started {count} worker(s) of {config.name}: pids {self.pids}")

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.list]

    def check_alive(self) -> None:
        for w in self.list:
            if w.proc.poll() is not None:
                tail = "\n".join(w.log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"worker exited ({w.proc.returncode}); log ends:\n{tail}")

    async def statuses(self) -> list[dict[str, Any]]:
        self.check_alive()
        found = await asyncio.gather(
            *(asyncio.to_thread(worker_status, w.web_port, 5.0) for w in self.list)
        )
        return [s for s in found if s]

    async def table_sum(self, field_name: str) -> int:
        return sum(
            int(t.get(field_name) or 0) for s in await self.statuses() for t in s["tables"].values()
        )

    async def wait_ready(self, timeout: float, need_partitions: bool = True) -> None:  # noqa: ASYNC109
        """Every worker answers its status page and (optionally) owns partitions."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await self.statuses()
            if len(found) == len(self.list) and (
                not need_partitions or all(s.get("partitions") for s in found)
            ):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"workers not ready within {timeout:.0f}s; see {self.list[0].log}")

    async def wait_polled(self, tables: Sequence[str], version: int, timeout: float) -> float:  # noqa: ASYNC109
        """Until every table's saved version reached ``version``; returns the time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            saved: dict[str, int] = {}
            for s in await self.statuses():
                for name, t in s["tables"].items():
                    v = t.get("saved_version")
                    saved[name] = max(saved.get(name, -1), -1 if v is None else int(v))
            if all(saved.get(t, -1) >= version for t in tables):
                return time.time()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"tables not polled up to version {version} within {timeout:.0f}s")

    async def wait_sum(
        self,
        field_name: str,
        expected: int,
        timeout: float,  # noqa: ASYNC109
        every: float = 0.1,
    ) -> tuple[float, float | None]:
        """Until the tables' ``field_name`` counters sum to ``expected``.

        Returns (time reached, time the counter first moved) as epoch seconds."""
        deadline = time.monotonic() + timeout
        first: float | None = None
        last = 0
        while time.monotonic() < deadline:
            n = await self.table_sum(field_name)
            if n and first is None:
                first = time.time()
            if n >= expected:
                return time.time(), first
            if n != last:
                last = n
            await asyncio.sleep(every)
        raise RuntimeError(f"{field_name} reached {last} of {expected} within {timeout:.0f}s")

    async def wait_rows_written(
        self,
        expected: int,
        timeout: float,  # noqa: ASYNC109
        every: float = 0.05,
        then_every: float = 0.5,
    ) -> tuple[float, float | None]:
        """``wait_sum("rows_written", …)`` with less load on the workers.

        Each status request costs the worker CPU (measured: about 2% of it at 20 requests
        a second), so once rows flow the pages are read every ``then_every`` s, and the
        time reached is the workers' own time of their last sink batch, not the poll's.
        """
        deadline = time.monotonic() + timeout
        first: float | None = None
        n = 0
        while time.monotonic() < deadline:
            statuses = await self.statuses()
            n = sum(int(t.get("rows_written") or 0) for s in statuses for t in s["tables"].values())
            if n and first is None:
                first = time.time()
            if n >= expected:
                polled = time.time()
                batches = [s["sink"].get("last_batch_at") for s in statuses]
                return min(polled, max((b for b in batches if b), default=polled)), first
            await asyncio.sleep(every if first is None else then_every)
        raise RuntimeError(f"rows_written reached {n} of {expected} within {timeout:.0f}s")

    def stop(self) -> None:
        for w in self.list:
            code = stop_worker(w)
            if code not in (0, -15):
                progress(f"worker {w.proc.pid} exited with status {code}; log {w.log}")


# -- CPU and memory --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (its threads included)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    return 0.0


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class CpuMeter:
    """CPU seconds used by named groups of processes between ``start()`` and ``stop()``."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.t0: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0
        self._w0 = 0.0

    def _now(self) -> dict[str, float]:
        return {g: sum(cpu_seconds(p) for p in pids) for g, pids in self.groups.items()}

    def start(self) -> None:
        self.t0 = self._now()
        self._w0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        now = self._now()
        self.wall = time.monotonic() - self._w0
        self.used = {g: round(now[g] - self.t0[g], 2) for g in self.groups}
        return self.used

    def line(self) -> str:
        total = sum(self.used.values())
        parts = ", ".join(f"{g} {s:.1f}" for g, s in self.used.items())
        return f"{total:.1f} CPU-s in {self.wall:.1f} s wall ({parts})"


def stack_groups(stack: StackInfo, workers: Workers | None = None) -> dict[str, list[int]]:
    groups = {"broker": [stack.broker_pid], "emulator": [stack.emulator_pid]}
    if workers is not None:
        groups = {"workers": workers.pids, **groups}
    groups["driver"] = [os.getpid()]
    return groups


# -- Kafka input for the stage benchmarks ----------------------------------------------------


def spec_of(table: str) -> TableSpec:
    return TableSpec(table, None, table, ())


async def create_topics(settings: Settings) -> None:
    names = TopicNames(settings.kafka.topic_prefix)
    specs = [spec_of(t) for t in settings.source.tables]
    await ensure_topics(
        settings.kafka.bootstrap_servers,
        names.all_for(specs),
        settings.kafka.partitions,
        1,
        retention=names.retention_of(specs, TopicRetention()),
    )


async def produce_events(
    settings: Settings,
    rows: int,
    maker: RowMaker,
    *,
    copies: int = 1,
    topic: str = "raw",
) -> int:
    """``rows`` insert events spread over the tables, each sent ``copies`` times (as a
    redundant collector would) to the tables' raw (or deduped) topics; keyed and
    partitioned as the pollers do. Returns the number of messages sent."""
    names = TopicNames(settings.kafka.topic_prefix)
    tables = settings.source.tables
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    sent = 0
    try:
        start = time.time()
        start_iso = iso_utc(start)
        pending: list[Any] = []
        for i in range(1, rows + 1):
            table = tables[i % len(tables)]
            spec = spec_of(table)
            dest = names.raw(spec) if topic == "raw" else names.deduped(spec)
            values = dict(zip(COLUMNS, maker.values(i, start), strict=True))
            event = ChangeEvent(
                message_unique_id=unique_id(table, [i], i),
                table_name=table,
                changetrack_interval=1.0,
                changetrack_start_time=start_iso,
                changetrack_type="I",
                changetrack_ver=i,
                key=[i],
                row=values,
            )
            key, value = encode_key([i]), event.to_bytes()
            for _ in range(copies):
                pending.append(await producer.send(dest, value=value, key=key))
                sent += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


# -- BigQuery --------------------------------------------------------------------------------


def bq_writer(settings: Settings) -> BigQueryWriter:
    return BigQueryWriter(settings.bigquery)


async def count_latest(writer: BigQueryWriter, tables: Sequence[str]) -> int:
    total = 0
    for t in tables:
        rows = await writer.query(f"SELECT COUNT(*) AS n FROM `{writer.ref(t + '_latest')}`")
        total += int(rows[0]["n"])
    return total


async def wait_latest(
    writer: BigQueryWriter,
    tables: Sequence[str],
    expected: int,
    timeout: float,  # noqa: ASYNC109
    every: float = 1.0,
) -> tuple[float, int]:
    """Until the latest views hold ``expected`` rows; returns (time seen, rows)."""
    deadline = time.monotonic() + timeout
    n = -1
    while True:
        with contextlib.suppress(Exception):  # a view may not exist yet
            n = await count_latest(writer, tables)
        if n >= expected or time.monotonic() > deadline:
            return time.time(), n
        await asyncio.sleep(every)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def pcts(values: Sequence[float]) -> dict[str, float | None]:
    return {
        f"p{int(q * 100)}": (None if (v := percentile(values, q)) is None else round(v, 3))
        for q in (0.5, 0.95, 0.99)
    } | {"max": round(max(values), 3) if values else None}


def fmt_pcts(p: dict[str, float | None]) -> str:
    return " / ".join(f"{p[k]}" for k in ("p50", "p95", "p99", "max")) + " s (p50/p95/p99/max)"


# -- profiling -------------------------------------------------------------------------------


class Profiler:
    """py-spy attached to processes; ``summary()`` prints where the samples went."""

    def __init__(self, pids: Sequence[int], workdir: Path, seconds: float, rate: int = 50) -> None:
        self.outputs: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        for pid in pids:
            out = workdir / f"profile-{pid}.txt"
            self.outputs.append(out)
            self.procs.append(
                subprocess.Popen(
                    [
                        exe,
                        "record",
                        "-p",
                        str(pid),
                        "-d",
                        str(int(seconds)),
                        "-r",
                        str(rate),
                        "-f",
                        "raw",
                        "-o",
                        str(out),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        progress(f"py-spy attached to {list(pids)} for {seconds:.0f}s")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(2)  # SIGINT: py-spy writes what it has
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()

    def summary(self, top: int = 12) -> str:
        own: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        parts: collections.Counter[str] = collections.Counter()
        total = 0
        for out in self.outputs:
            with contextlib.suppress(OSError):
                for line in out.read_text().splitlines():
                    stack, _, count = line.rpartition(" ")
                    if not count.isdigit():
                        continue
                    n = int(count)
                    total += n
                    frames = [_short(f) for f in stack.split(";")]
                    own[frames[-1]] += n
                    parts[_component(frames)] += n
                    for f in set(frames):
                        if "ctstream/" in f and not f.startswith(_ENTRY):
                            incl[f] += n
        if not total:
            return "(no samples)"
        lines = [f"{total} samples (all threads; idle time not sampled). By component:"]
        lines += [
            f"  {100 * n / total:5.1f}%  {f}" for f, n in parts.most_common() if n >= total / 200
        ]
        lines.append("top functions by own time:")
        lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
        lines.append("ctstream functions by inclusive time:")
        lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
        return "\n".join(lines)


_ENTRY = (
    "<module>",
    "main (",
    "handle (ctstream/cli.py",
    "run (ctstream/commands/worker.py",
    "run_worker",
)
# A sample goes to the component of its leaf-most frame that matches a specific marker;
# only samples with none (pure event-loop work) fall to the generic markers at the end.
_COMPONENTS = (
    ("ctstream/web/", "web status pages"),
    ("aiohttp/", "web status pages"),
    ("faust/tables", "faust tables + changelog"),
    ("faust/stores", "faust tables + changelog"),
    ("faust/topics", "faust topic send (changelog + produce)"),
    ("faust/channels", "faust topic send (changelog + produce)"),
    ("google/", "BigQuery client (google-cloud-bigquery, in threads)"),
    ("requests/", "BigQuery client (google-cloud-bigquery, in threads)"),
    ("urllib3/", "BigQuery client (google-cloud-bigquery, in threads)"),
    ("http/client", "BigQuery client (google-cloud-bigquery, in threads)"),
    ("json/", "BigQuery client (google-cloud-bigquery, in threads)"),
    ("ctstream/bigquery/", "ctstream BigQuery writer/validator"),
    ("aiokafka/producer", "aiokafka producer"),
    ("Producer.send (faust/transport/drivers/aiokafka", "aiokafka producer"),
    ("aiokafka/consumer", "aiokafka consumer/fetcher"),
    ("faust/transport/", "faust consumer (fetch, dispatch, acks, commit)"),
    ("aiokafka/", "aiokafka other (conn, client)"),
    ("aioodbc", "source (ODBC)"),
    ("ctstream/source/reader", "source reader"),
    ("ctstream/source/change_capture", "poll: building/sending change events"),
    ("ctstream/models", "ctstream models (events, json)"),
    ("ctstream/agents/poll", "poll agent"),
    ("ctstream/agents/dedup", "dedup agent"),
    ("ctstream/agents/sink", "sink agent"),
    ("ctstream/agents/batches", "batch bookkeeping"),
    ("ctstream/streams/faust_compat/", "faust patches (commit ceilings)"),
    ("faust/streams", "faust stream iteration"),
    ("faust/agents", "faust agent machinery"),
    ("quixstreams/", "quixstreams"),
    ("confluent_kafka/", "confluent-kafka"),
    ("rocksdict", "rocksdb state"),
    ("benchmarks/", "benchmark job code"),
)
_GENERIC = (
    ("faust/", "faust other"),
    ("mode/", "event loop (mode services)"),
    ("asyncio/", "event loop (asyncio)"),
    ("concurrent/", "thread pool"),
    ("threading", "thread pool"),
)


def _component(frames: Sequence[str]) -> str:
    for table in (_COMPONENTS, _GENERIC):
        for frame in reversed(frames):
            for marker, name in table:
                if marker in frame:
                    return name
    return "other: " + (frames[-1] if frames else "?")


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (module path without site-packages)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


@dataclass
class ChildRun:
    """What ``run_child`` measured: the child's result file, its CPU and its profile."""

    state: dict[str, Any]
    meter: CpuMeter
    profiler: Profiler | None


async def run_child_process(
    argv: Sequence[str],
    label: str,
    workdir: Path,
    out: Path,
    log: Path,
    meter_groups: dict[str, list[int]],
    events: int,
    profile: bool,
    timeout: float,  # noqa: ASYNC109 - the child's whole run, checked while polling
) -> ChildRun:
    """Run ``python -m argv…`` until it writes ``out`` (JSON), metering its CPU (under
    ``label``, with ``meter_groups``) and profiling it when asked; stop it after."""
    with log.open("ab") as fh:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            [sys.executable, "-m", *argv], stdout=fh, stderr=subprocess.STDOUT
        )
    progress(f"{label}: pid {proc.pid}")
    meter = CpuMeter({label: [proc.pid], **meter_groups})
    meter.start()
    profiler = Profiler([proc.pid], workdir, events / 1000 + 60) if profile else None
    try:
        deadline = time.monotonic() + timeout
        # Local files polled between sleeps: quick, and the benchmark has nothing else to do.
        while not out.exists():  # noqa: ASYNC240
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]  # noqa: ASYNC240
                raise RuntimeError(f"{label} failed or timed out; its log ends:\n{tail}")
            await asyncio.sleep(0.2)
        meter.stop()
        if profiler:
            profiler.stop()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return ChildRun(json.loads(out.read_text()), meter, profiler)  # noqa: ASYNC240


# -- helpers of benchmarks/snapshot.py (added; nothing above depends on them) -----------------


def git_commit() -> str:
    """``git rev-parse --short HEAD`` of the checkout, or "unknown"."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    return "unknown"


def create_seeded_source(
    db: Path, tables: Sequence[str], seeded: dict[str, int], maker: RowMaker
) -> None:
    """As :func:`create_source`, but ``seeded[t]`` rows (ids 1…n) are written into ``t``
    before change tracking is on: they are in no change table, only a snapshot reads them."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for t in tables:
            conn.execute(DDL.format(t=t))
        now = time.time()
        for t, rows in seeded.items():
            conn.executemany(
                f"INSERT INTO {t} VALUES (?, ?, ?, ?, ?)",
                (maker.values(i, now) for i in range(1, rows + 1)),
            )
        conn.commit()
    track_database(db, list(tables))


def write_config_extra(
    workdir: Path,
    db: Path,
    stack: StackInfo,
    cfg: PipelineConfig,
    *,
    source_extra: str = "",
    extra: str = "",
    log_level: str | None = None,
) -> Path:
    """:func:`write_config` plus lines in ``[source]`` (``source_extra``), sections at the
    end (``extra``) and another ``app.log_level``."""
    path = write_config(workdir, db, stack, cfg)
    text = path.read_text(encoding="utf-8")
    if source_extra:
        text = text.replace("[source]\n", f"[source]\n{source_extra.rstrip()}\n", 1)
    if log_level:
        text = text.replace('log_level = "warning"', f'log_level = "{log_level}"', 1)
    if extra:
        text = text.rstrip("\n") + "\n" + extra.rstrip() + "\n"
    path.write_text(text, encoding="utf-8")
    return path


class RssSampler:
    """The summed RSS of ``pids`` every ``every`` s in a background task: (time, MB)."""

    def __init__(self, pids: Sequence[int], every: float = 0.2) -> None:
        self.pids = list(pids)
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            mb = sum(rss_mb(p) for p in self.pids)
            if mb:
                self.samples.append((time.time(), mb))
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def peak(self, t_from: float = 0.0, t_to: float = float("inf")) -> float | None:
        found = [mb for t, mb in self.samples if t_from <= t <= t_to]
        return round(max(found), 1) if found else None

    def at(self, t: float) -> float | None:
        """The last sample at or before ``t``."""
        found = [mb for s, mb in self.samples if s <= t]
        return round(found[-1], 1) if found else None


def epoch_of(value: Any) -> float:
    """A BigQuery TIMESTAMP (datetime) or a number as epoch seconds."""
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


async def poll_latencies(
    writer: BigQueryWriter, tables: Sequence[str], t_from: float, t_to: float, per_query: int = 50
) -> list[float]:
    """``bigquery_insert_time - changetrack_start_time`` of the inserts and updates whose
    ``committed_at`` is in [t_from, t_to), over ``tables`` (``per_query`` per UNION ALL)."""
    out: list[float] = []
    for i in range(0, len(tables), per_query):
        sql = " UNION ALL ".join(
            "SELECT bigquery_insert_time AS bi, changetrack_start_time AS cs "
            f"FROM `{writer.ref(t)}` WHERE changetrack_type IN ('I', 'U') "
            f"AND committed_at >= {t_from} AND committed_at < {t_to}"
            for t in tables[i : i + per_query]
        )
        out += [epoch_of(r["bi"]) - epoch_of(r["cs"]) for r in await writer.query(sql)]
    return out


class RateChanger(threading.Thread):
    """``rate`` changes/s (70 % inserts, 30 % updates, no deletes) over ``tables`` in turn
    (so each table gets ``rate / len(tables)`` changes/s), committed every 100 ms; every
    written row carries its commit time in ``committed_at``."""

    def __init__(self, db: Path, tables: Sequence[str], rate: float, maker: RowMaker) -> None:
        super().__init__(name="changer", daemon=True)
        self.db, self.tables, self.rate, self.maker = db, list(tables), rate, maker
        self.rng = random.Random(13)  # test data
        self.stopping = threading.Event()
        self.done = 0
        self.behind_max = 0  # changes due but not yet made, beyond one 100 ms batch
        self.error: BaseException | None = None

    def run(self) -> None:
        live: dict[str, list[int]] = {t: [] for t in self.tables}
        next_id, turn, n = 1, 0, len(self.tables)
        try:
            with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
                t0 = time.monotonic()
                while not self.stopping.is_set():
                    due = int((time.monotonic() - t0) * self.rate) - self.done
                    self.behind_max = max(self.behind_max, due - int(self.rate / 10) - 1)
                    now = time.time()
                    for _ in range(max(0, due)):
                        table = self.tables[turn % n]
                        turn += 1
                        keys = live[table]
                        if not keys or self.rng.random() < 0.7:
                            conn.execute(
                                f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?)",
                                self.maker.values(next_id, now),
                            )
                            keys.append(next_id)
                            next_id += 1
                        else:
                            conn.execute(
                                f"UPDATE {table} SET price = ?, committed_at = ? WHERE id = ?",
                                (round(self.rng.uniform(1, 500), 2), now, self.rng.choice(keys)),
                            )
                        self.done += 1
                    conn.commit()
                    self.stopping.wait(0.1)
        except BaseException as exc:  # reported by hold_running()
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=30)


async def hold_running(
    seconds: float, workers: Workers, changer: RateChanger | None = None
) -> None:
    """Wait ``seconds``, failing as soon as a worker exits or the change thread fails."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        workers.check_alive()
        if changer is not None and changer.error is not None:
            raise RuntimeError(f"change thread failed: {changer.error!r}")
        await asyncio.sleep(min(0.5, left))


async def settle(workers: Workers, tables: Sequence[str], db: Path, timeout: float) -> None:  # noqa: ASYNC109
    """Until the tables are polled up to the source's version and rows_written stood still
    for 3 s (the sink caught up with the last poll)."""
    await workers.wait_polled(tables, current_version(db), timeout)
    last, still = -1, 0
    while still < 6:
        n = await workers.table_sum("rows_written")
        still, last = (still + 1 if n == last else 0), n
        await asyncio.sleep(0.5)


# Snapshots requested as `ctstream snapshot` requests them, followed in /api/status/.

SNAPSHOT_REASON = "benchmarks.snapshot"


async def table_views(workers: Workers, table: str) -> list[dict[str, Any] | None]:
    """``table``'s entry in each worker's ``/api/status/`` (None: no answer), in order."""
    found = await asyncio.gather(
        *(asyncio.to_thread(worker_status, w.web_port, 5.0) for w in workers.list)
    )
    return [None if s is None else s["tables"].get(table) for s in found]


async def wait_snapshot(
    workers: Workers,
    table: str,
    after: float,
    timeout: float,  # noqa: ASYNC109
) -> tuple[dict[str, Any], list[tuple[float, int, dict[str, Any]]]]:
    """Until a worker shows a ``last_snapshot`` of ``table`` completed after ``after``.

    Returns it and the progress seen on the way: (time, worker index, ``snapshot``)."""
    deadline = time.monotonic() + timeout
    seen: list[tuple[float, int, dict[str, Any]]] = []
    told = time.monotonic()
    while time.monotonic() < deadline:
        workers.check_alive()
        for i, t in enumerate(await table_views(workers, table)):
            done = (t or {}).get("last_snapshot")
            if done and float(done.get("completed_at") or 0) > after:
                return done, seen
            if t and t.get("snapshot"):
                seen.append((time.time(), i, t["snapshot"]))
        if seen and time.monotonic() - told > 10:
            told = time.monotonic()
            s = seen[-1][2]
            progress(f"snapshot of {table}: {s['phase']}, {s['rows']} rows, {s['chunks']} "
                     f"chunks, {s['rows_per_s']} rows/s")  # fmt: skip
        await asyncio.sleep(0.25)
    raise RuntimeError(f"the snapshot of {table} did not complete within {timeout:.0f}s")


async def recorded(writer: BigQueryWriter, table: str, version: int) -> bool:
    """Whether ``_ctstream_snapshots`` holds the snapshot of ``table`` from ``version``."""
    rows = await writer.query(
        f"SELECT COUNT(*) AS n FROM `{writer.ref('_ctstream_snapshots')}` "
        f"WHERE source_table = '{table}' AND snapshot_version = {int(version)}"
    )
    return bool(rows and int(rows[0]["n"]))


async def timed_snapshot(
    settings: Settings,
    writer: BigQueryWriter,
    workers: Workers,
    table: str,
    timeout: float,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Request a snapshot of ``table``; wait until it is recorded. Seconds from the request
    to the worker's record in ``_ctstream_snapshots`` (its ``completed_at`` in status)."""
    t_req = time.time()
    await request_snapshots(settings, [table], SNAPSHOT_REASON)
    progress(f"snapshot of {table} requested")
    done, seen = await wait_snapshot(workers, table, t_req, timeout)
    seconds = float(done["completed_at"]) - t_req
    return {
        "requested_at": t_req,
        "completed_at": float(done["completed_at"]),
        "rows": int(done["rows"]),
        "chunks": int(done["chunks"]),
        "version": int(done["version"]),
        "seconds": round(seconds, 2),
        "worker_seconds": done.get("seconds"),
        "rows_per_s": round(int(done["rows"]) / seconds),
        "recorded_in_bigquery": await recorded(writer, table, int(done["version"])),
        "progress_seen": seen,
    }
