"""A pipeline on the real local stack for one test: SQLite source, config, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack.demo_check import compare_table
from ctstream.devstack.local_stack import StackInfo
from ctstream.devstack.workers import (
    WorkerProcess,
    fetch_worker_status,
    start_worker,
    stop_worker,
    wait_until_polling,
)
from ctstream.errors import SinkError
from ctstream.models import TableSpec
from ctstream.settings import Settings, load_settings
from ctstream.source.sqlite_tracking import track_database
from ctstream.streams.offsets import group_lag, true_end_offsets
from ctstream.streams.topics import TopicNames

_counter = itertools.count(1)

# Every harness DSN carries this password; it must never show up in logs or pages.
SECRET = "s3cr3t-Pa55word"


class Harness:
    def __init__(
        self,
        stack: StackInfo,
        workdir: Path,
        tables: dict[str, str],
        window: str = "10m",
        partitions: int = 2,
        poll_interval: str = "300ms",
        bigquery_endpoint: str | None = None,
        snapshot_mode: str = "initial",
        sink_extra: str = "",
        write_api: str = "insert_all",
        seed: Sequence[tuple[str, Sequence[Sequence[Any]]]] = (),
        selection: Sequence[str] | None = None,
        source_extra: str = "",
        bigquery_extra: str = "",
        storage_endpoint: str | None = None,
    ) -> None:
        """``tables``: name → DDL, all created and tracked. ``selection``: the config's
        source.tables when not those names (patterns); ``self.tables`` then lists what
        the test expects carried, and is the test's to keep up to date."""
        n = next(_counter)
        self.name = f"t{n}_{int(time.time() * 1000) % 10**8}"
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = workdir / "source.db"
        self.tables = list(tables)
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            for ddl in tables.values():
                conn.execute(ddl)
            for sql, rows in seed:  # rows that exist before change tracking is on
                conn.executemany(sql, rows)
            conn.commit()
        track_database(self.db, self.tables)
        names = ", ".join(f'"{t}"' for t in (selection or tables))
        self.config = workdir / "ctstream.toml"
        self._template = f"""
[app]
id = "{{app_id}}"
log_level = "info"
# A consumer group stuck in its joins is otherwise silent (aiokafka logs SyncGroup at debug).
log_levels = {{ "aiokafka.consumer.group_coordinator" = "debug" }}
roles = {{roles}}
[source]
dialect = "sqlite"
dsn = "Driver=SQLite3;Database={self.db};Timeout=30000;PWD={SECRET}"
tables = [{names}]
poll_interval = "{poll_interval}"
snapshot_mode = "{snapshot_mode}"
{source_extra}
[kafka]
bootstrap_servers = "{stack.kafka_bootstrap}"
topic_prefix = "{self.name}"
partitions = {partitions}
[dedup]
window = "{window}"
[sink]
batch_rows = 500
batch_wait = "200ms"
{sink_extra}
[bigquery]
project = "local"
dataset = "ds_{self.name}"
endpoint = "{bigquery_endpoint or stack.bigquery_endpoint}"
write_api = "{write_api}"
storage_endpoint = "{storage_endpoint or stack.bigquery_grpc}"
{bigquery_extra}
"""
        self.write_config(self.config, f"app-{self.name}", ["poll", "dedup", "sink"])
        self.settings: Settings = load_settings(self.config)
        self.writer = BigQueryWriter(self.settings.bigquery)
        self.workers: list[WorkerProcess] = []
        self._index = itertools.count()

    def write_config(self, path: Path, app_id: str, roles: Sequence[str]) -> Path:
        """A config of this pipeline for an app with its own id and roles."""
        text = self._template.replace("{app_id}", app_id)
        path.write_text(text.replace("{roles}", orjson.dumps(list(roles)).decode()), "utf-8")
        return path

    # -- workers -------------------------------------------------------------------------

    async def start_worker(self, wait: bool = True, config: Path | None = None) -> WorkerProcess:
        worker = start_worker(config or self.config, self.workdir, next(self._index))
        self.workers.append(worker)
        if wait:
            await wait_until_polling([worker], self.tables, timeout=120)
        return worker

    def stop_worker(self, worker: WorkerProcess, sig: signal.Signals = signal.SIGTERM) -> int:
        code = stop_worker(worker, sig)
        self.workers.remove(worker)
        return code

    def close(self) -> None:
        for worker in list(self.workers):
            self.stop_worker(worker)
        self.writer.close()

    def full_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("worker-*.log"))
        )

    def status(self, worker: WorkerProcess) -> dict[str, Any]:
        return fetch_worker_status(worker.web_port, timeout=5)

    async def wait_all_own_partitions(
        self,
        workers: Sequence[WorkerProcess],
        timeout: float = 90,
    ) -> None:
        """Until every one of ``workers`` answers its status page and owns partitions."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                owned = [len(self.status(w)["partitions"]) for w in workers]
            except OSError:
                owned = [0]
            if all(owned):
                return
            assert time.monotonic() < deadline, owned
            await asyncio.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(self.workdir.glob("worker-*.log"))
        )

    # -- source --------------------------------------------------------------------------

    def execute(self, sql: str, rows: Sequence[Sequence[Any]] = ((),)) -> None:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            conn.executemany(sql, rows)
            conn.commit()

    # -- checks --------------------------------------------------------------------------

    def spec(self, table: str) -> TableSpec:
        return TableSpec(table, None, table, ())

    async def differences(self, table: str) -> list[str]:
        try:
            return await compare_table(self.db, self.writer, table)
        except SinkError as exc:
            if "Not found" not in str(exc):
                raise
            # A table found while running: its view is created by a worker's discovery.
            return [f"{table}: no latest view yet ({exc})"]

    async def wait_equal(self, timeout: float = 120) -> None:
        """Until every table's latest view equals the source (or fail with the diff)."""
        deadline = time.monotonic() + timeout
        problems: list[str] = []
        while time.monotonic() < deadline:
            problems = []
            for table in self.tables:
                problems += await self.differences(table)
            if not problems:
                return
            await asyncio.sleep(0.5)
        await self.dump_topics()
        raise AssertionError(
            f"latest views differ after {timeout}s: {problems[:10]}\n"
            f"(topics dumped to {self.workdir}/dump-*.jsonl)\n"
            f"--- state ---\n{await self.post_mortem()}\n--- logs ---\n{self.logs()}"
        )

    async def post_mortem(self) -> str:
        """Committed offset against the end of every raw and deduped partition, and each
        running worker's sink figures: whether what is missing is stuck in Kafka (not
        committed) or was committed without reaching BigQuery."""
        names = TopicNames(self.settings.kafka.topic_prefix)
        lines: list[str] = []
        try:
            for table in self.tables:
                for topic in (names.raw(self.spec(table)), names.deduped(self.spec(table))):
                    for partition in range(self.settings.kafka.partitions):
                        tp = TopicPartition(topic, partition)
                        lag, ends = await group_lag(
                            self.settings.kafka.bootstrap_servers, self.settings.app.id, [tp]
                        )
                        lines.append(f"{topic}/{partition}: end {ends[tp]}, not committed {lag}")
        except Exception as exc:  # a post-mortem must not hide the failure it explains
            lines.append(f"offsets unavailable: {exc!r}")
        for worker in self.workers:
            try:
                sink = self.status(worker).get("sink", {})
                lines.append(f"{worker.log.name} (pid {worker.proc.pid}) sink: {sink}")
            except Exception as exc:
                lines.append(f"{worker.log.name}: no status ({exc!r})")
        return "\n".join(lines)

    async def dump_topics(self) -> None:
        """Every message of the raw and deduped topics, for post-mortems of a failure."""
        names = TopicNames(self.settings.kafka.topic_prefix)
        bootstrap = self.settings.kafka.bootstrap_servers
        for table in self.tables:
            for kind, topic in (
                ("raw", names.raw(self.spec(table))),
                ("deduped", names.deduped(self.spec(table))),
            ):
                parts = [TopicPartition(topic, p) for p in range(self.settings.kafka.partitions)]
                ends = await true_end_offsets(bootstrap, parts)
                consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
                await consumer.start()
                lines = []
                try:
                    consumer.assign(parts)
                    await consumer.seek_to_beginning(*parts)
                    remaining = sum(ends.values())
                    while remaining > 0:
                        batch = await consumer.getmany(timeout_ms=1000)
                        if not batch:
                            break
                        for tp, records in batch.items():
                            for r in records:
                                remaining -= 1
                                lines.append(
                                    orjson.dumps(
                                        {
                                            "p": tp.partition,
                                            "o": r.offset,
                                            "ts": r.timestamp,
                                            "k": (r.key or b"").decode(errors="replace"),
                                            "v": (r.value or b"").decode(errors="replace"),
                                        }
                                    )
                                )
                finally:
                    await consumer.stop()
                (self.workdir / f"dump-{table}-{kind}.jsonl").write_bytes(b"\n".join(lines))

    async def query(self, sql: str) -> list[dict[str, Any]]:
        return await self.writer.query(sql.replace("{ds}", f"local.ds_{self.name}"))

    async def produce_raw(
        self,
        table: str,
        items: Sequence[tuple[bytes | None, bytes | None, float]],
        topic: str | None = None,
    ) -> None:
        """Produce (key, value, timestamp_s) messages straight to a table's raw topic (or
        to ``topic``)."""
        topic = topic or TopicNames(self.settings.kafka.topic_prefix).raw(self.spec(table))
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka.bootstrap_servers, acks="all"
        )
        await producer.start()
        try:
            for key, value, ts in items:
                await producer.send_and_wait(
                    topic, value=value, key=key, timestamp_ms=int(ts * 1000)
                )
        finally:
            await producer.stop()

    async def lag(self, topics: Sequence[str] | None = None) -> int:
        """Messages the app's group has not committed, in ``topics`` (default: raw and
        deduped topics of every table)."""
        if topics is None:
            names = TopicNames(self.settings.kafka.topic_prefix)
            topics = [names.raw(self.spec(t)) for t in self.tables]
            topics += [names.deduped(self.spec(t)) for t in self.tables]
        parts = [
            TopicPartition(t, p) for t in topics for p in range(self.settings.kafka.partitions)
        ]
        lag, _ = await group_lag(self.settings.kafka.bootstrap_servers, self.settings.app.id, parts)
        return lag

    async def wait_caught_up(self, timeout: float = 60) -> None:
        """Until the app's group has committed everything in the raw and deduped topics."""
        deadline = time.monotonic() + timeout
        while (lag := await self.lag()) > 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"consumer lag still {lag} after {timeout}s")
            await asyncio.sleep(0.3)
