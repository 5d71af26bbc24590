"""A fault run: a realistic workload through several worker processes while faults land.

Faults: SIGKILL of random workers (pollers included) and at the crash points that matter
for at-least-once delivery (``faults.crash_points``: after Kafka's ack before the version
save, after BigQuery's accept before the offset commit, ...); a worker joining and leaving
while the dedup window is full; BigQuery refusing every insert for a while, then storms of
mixed errors; poison messages on every topic the pipeline reads; the source's change
retention overrun, with the latest views sampled while its snapshots run (view_sampler.py).
Then the invariants (see README.md) are checked and a summary printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ctstream.devstack.local_stack import StackInfo
from ctstream.devstack.workers import (
    WorkerProcess,
    start_worker,
    wait_until_polling,
    worker_status,
)
from ctstream.models import TableSpec
from ctstream.source.sqlite_tracking import cleanup_database
from ctstream.streams.commit_holes import REREAD_NOTICE
from ctstream.streams.topics import TopicNames
from tests.faults.expiry import compact_and_expire, repeated_ids, repeated_samples
from tests.faults.invariants import (
    dedup_effect,
    poison_not_reported,
    read_all,
    unique_ids,
    versions_going_backwards,
)
from tests.faults.poison import Poison, inject
from tests.faults.view_sampler import SamplerResult, ViewSampler, sampler_line
from tests.faults.workload import TABLES, Workload, create_bookkeeping
from tests.integration.fault_proxy import FaultProxy, fault_proxy
from tests.integration.grpc_fault_proxy import GrpcFaultProxy
from tests.integration.harness import Harness

READY = "Recovery]: Worker ready"  # faust's line once a worker's tables are recovered


@dataclass(frozen=True)
class FaultPlan:
    """How much of each fault one run injects. The defaults are the bounded CI form."""

    seconds: float = 120.0  # the workload runs this long, faults land within it
    rate: float = 150.0  # source row changes per second
    workers: int = 2
    kills: int = 4  # SIGKILLs of a random worker at a random moment (+1 per crash point)
    # Each round arms every point once, on one worker, which then dies there.
    crash_points: Sequence[str] = ("poll.acked", "dedup.forwarded", "sink.written")
    crash_rounds: int = 1
    rebalances: int = 1  # a worker joins, stays a while, leaves
    outage: float = 40.0  # seconds BigQuery refuses every insert (half 503, half resets)
    storm: float = 15.0  # seconds of rapidly changing BigQuery errors and slowness
    poison_rounds: int = 1
    overruns: int = 1  # the source's cleanup drops changes not yet polled
    seed_rows: int = 300  # rows per table before tracking starts (the first snapshot)
    settle: float = 300.0  # how long the pipeline may take to catch up afterwards
    seed: int = 1
    # The sink's write path: with a Storage Write one, a gRPC proxy in front of the
    # emulator fails its calls as the HTTP proxy fails insertAll, and loses answers.
    write_api: str = "insert_all"


@dataclass
class Summary:
    kills: Counter[str] = field(default_factory=Counter)
    poller_kills: int = 0
    crash_points_missed: Counter[str] = field(default_factory=Counter)
    rebalances: int = 0
    outage_seconds: float = 0.0
    storms: int = 0
    refused_requests: int = 0
    lost_answers: int = 0  # Storage Write appends that landed and whose answer was lost
    poison: int = 0
    overruns: int = 0
    changes: Counter[str] = field(default_factory=Counter)
    raw_events: int = 0
    raw_copies: int = 0  # events in the raw log whose unique id came before (re-reads)
    deduped_copies: int = 0  # copies forwarded by dedup (the latest views drop them)
    duplicates_dropped: int = 0
    rows_lost: int = 0
    # Partitions read again by streams/commit_holes.py: a message fetched, never processed.
    holes_reread: int = 0
    # The latest views sampled while the overruns' snapshots ran (view_sampler.py): the
    # samples taken while each table's snapshot was under way, and the keys of the view
    # before the snapshot that a sample lacked although the source held them (must be 0).
    view_samples: dict[str, int] = field(default_factory=dict)
    view_sampling: str = ""  # rounds, period, query time
    view_keys_lost: int = 0
    # lacked, but deleted and inserted again at the source meanwhile (lag, not loss)
    view_keys_excused: int = 0
    # Change rows deleted after merging every table at the end (expiry.py).
    merged_rows_expired: int = 0
    # Change rows repeating an earlier row's unique id, before that (at-least-once).
    change_log_repeats: int = 0
    elapsed: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        kills = ", ".join(f"{k} {n}" for k, n in sorted(self.kills.items()))
        missed = sum(self.crash_points_missed.values())
        return (
            f"faults: {sum(self.kills.values())} SIGKILLs ({kills}; {self.poller_kills} of "
            f"a polling worker; crash points armed but not reached: {missed}), "
            f"{self.rebalances} join/leave rebalances, BigQuery down {self.outage_seconds:.0f}s "
            f"+ {self.storms} error storms ({self.refused_requests} requests refused, "
            f"{self.lost_answers} answers lost after the rows landed), "
            f"{self.poison} poison messages, {self.overruns} tables past retention | "
            f"changes {sum(self.changes.values())} "
            f"({', '.join(f'{k} {n}' for k, n in sorted(self.changes.items()))}), "
            f"raw events {self.raw_events} ({self.raw_copies} copies), duplicates dropped "
            f"{self.duplicates_dropped} ({self.deduped_copies} passed, kept out of the views), "
            f"rows lost {self.rows_lost}, commit holes read again {self.holes_reread} | "
            f"latest views sampled during snapshots: "
            f"{', '.join(f'{k} {n}' for k, n in sorted(self.view_samples.items())) or 'none'}"
            f" ({self.view_sampling}), keys lost {self.view_keys_lost} "
            f"({self.view_keys_excused} excused: re-inserted, not yet in BigQuery), "
            f"change rows repeating an id {self.change_log_repeats}, "
            f"merged change rows expired {self.merged_rows_expired} | "
            f"{self.elapsed:.0f}s | "
            + ("OK" if not self.problems else f"{len(self.problems)} PROBLEMS")
        )


@dataclass
class _Slot:
    index: int
    worker: WorkerProcess | None = None
    busy: bool = False  # a fault is being applied to it: the watchdog keeps off
    log_offset: int = 0  # where its log stood at its last start

    def log_since_start(self) -> str:
        assert self.worker is not None
        with self.worker.log.open("rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")


class FaultRun:
    def __init__(
        self,
        h: Harness,
        proxy: FaultProxy,
        plan: FaultPlan,
        say: Callable[[str], None],
        grpc: GrpcFaultProxy | None = None,
    ) -> None:
        self.h, self.proxy, self.plan, self.say = h, proxy, plan, say
        self.grpc = grpc  # in front of the Storage Write API, on its write paths
        self.rng = random.Random(plan.seed)
        self.summary = Summary()
        self.slots = [_Slot(i) for i in range(plan.workers)]
        self.joiner = _Slot(plan.workers)
        self.poison: list[Poison] = []
        self.workload = Workload(h.db, plan.rate, plan.seed)
        self.started = time.monotonic()
        self.done = asyncio.Event()
        self.samplers: list[asyncio.Task[SamplerResult]] = []
        self.sampling_over = asyncio.Event()  # the views are sampled until this is set

    # -- workers ------------------------------------------------------------------------

    def _config(self, armed: str | None) -> Path:
        if armed is None:
            return self.h.config
        path = self.h.workdir / f"armed-{armed}.toml"
        self.h.write_config(path, self.h.settings.app.id, ["poll", "dedup", "sink"])
        with path.open("a", encoding="utf-8") as f:
            f.write(f'\n[faults]\ncrash_points = {{ "{armed}" = 1.0 }}\n')
        return path

    def _start(self, slot: _Slot, armed: str | None = None) -> None:
        log = self.h.workdir / f"worker-{slot.index}.log"
        slot.log_offset = log.stat().st_size if log.exists() else 0
        slot.worker = start_worker(self._config(armed), self.h.workdir, slot.index)
        self.h.workers.append(slot.worker)

    async def _kill(self, slot: _Slot) -> None:
        assert slot.worker is not None
        status = await asyncio.to_thread(worker_status, slot.worker.web_port) or {}
        if any(t.get("polls") for t in status.get("tables", {}).values()):
            self.summary.poller_kills += 1
        self.h.stop_worker(slot.worker, signal.SIGKILL)
        slot.worker = None

    def _crashed_at(self, slot: _Slot, point: str) -> bool:
        return f"crash point {point}:" in slot.log_since_start()

    async def _wait_exit(self, worker: WorkerProcess, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while worker.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        return worker.proc.poll()

    async def _wait_exit_once_ready(
        self, slot: _Slot, ready_timeout: float, timeout: float
    ) -> int | None:
        """Wait for the worker to exit, up to ``timeout`` seconds from when it was ready
        (or from ``ready_timeout``): a loaded machine's slow start is not a missed point."""
        worker = slot.worker
        assert worker is not None
        deadline = time.monotonic() + ready_timeout
        while worker.proc.poll() is None and time.monotonic() < deadline:
            if READY in slot.log_since_start():
                break
            await asyncio.sleep(0.25)
        return await self._wait_exit(worker, timeout)

    async def _wait_answering(self, worker: WorkerProcess, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and worker.proc.poll() is None:
            if await asyncio.to_thread(worker_status, worker.web_port) is not None:
                return
            await asyncio.sleep(0.5)

    async def watchdog(self) -> None:
        """A worker that exits without being killed is a failure; it is restarted."""
        while not self.done.is_set():
            for slot in self.slots:
                w = slot.worker
                if slot.busy or w is None or w.proc.poll() is None:
                    continue
                tail = "\n".join(w.log.read_text(errors="replace").splitlines()[-20:])
                self.summary.problems.append(
                    f"worker {slot.index} exited by itself (status {w.proc.returncode}):\n{tail}"
                )
                self.h.workers.remove(w)
                self._start(slot)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.done.wait(), 1.0)

    async def _at(self, fraction: float) -> None:
        """Sleep until ``fraction`` of the run has passed."""
        delay = self.started + fraction * self.plan.seconds - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _all_ready(self, timeout: float) -> None:
        """Until every worker has recovered from its last start (faust's "Worker ready")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.worker is not None and READY in s.log_since_start() for s in self.slots):
                return
            await asyncio.sleep(0.5)
        self.say(f"workers not all ready after {timeout:.0f}s; going on")

    async def process_faults(self) -> None:
        """Random SIGKILLs and crash points, one at a time, each once the workers recovered
        from the one before: kept in rebalances, the pipeline would meet the other faults
        idle."""
        points = [p for _ in range(self.plan.crash_rounds) for p in self.plan.crash_points]
        actions: list[str | None] = [None] * self.plan.kills + points
        self.rng.shuffle(actions)
        for i, point in enumerate(actions):
            await self._at((i + self.rng.uniform(0.2, 0.8)) / len(actions) * 0.95)
            slot = self.rng.choice(self.slots)
            for _ in range(3):  # a missed crash point is tried again on the other worker
                await self._all_ready(timeout=90)
                slot.busy = True
                try:
                    await self._kill(slot)  # a kill at a random moment; the restart may be armed
                    self.summary.kills["random"] += 1
                    self._start(slot, armed=point)
                    if point is None or await self._crash_at(slot, point):
                        break
                finally:
                    slot.busy = False
                slot = self.slots[(self.slots.index(slot) + 1) % len(self.slots)]

    async def _crash_at(self, slot: _Slot, point: str) -> bool:
        """Wait for an armed worker to kill itself at ``point``; restart it unarmed.
        False when it did not reach the point (e.g. it owned no partition of that kind)."""
        assert slot.worker is not None
        code = await self._wait_exit_once_ready(slot, ready_timeout=180, timeout=60)
        reached = code == -signal.SIGKILL and self._crashed_at(slot, point)
        if reached:
            self.summary.kills[point] += 1
            if point == "poll.acked":
                self.summary.poller_kills += 1
            self.h.workers.remove(slot.worker)
        else:
            self.summary.crash_points_missed[point] += 1
            if code is None:
                await self._kill(slot)
                self.summary.kills["random"] += 1
            else:
                self.h.workers.remove(slot.worker)
                self.summary.problems.append(f"a worker armed at {point} exited with {code}")
        self.say(f"crash point {point}: {'reached' if reached else 'missed'}")
        self._start(slot)
        return reached

    async def rebalances(self) -> None:
        for i in range(self.plan.rebalances):
            await self._at((i + 0.3) / self.plan.rebalances * 0.9)
            self._start(self.joiner)
            assert self.joiner.worker is not None
            await self._wait_answering(self.joiner.worker, timeout=30)
            await asyncio.sleep(min(20.0, self.plan.seconds / 8))  # it holds partitions now
            code = await asyncio.to_thread(self.h.stop_worker, self.joiner.worker)
            if code != 0:
                self.summary.problems.append(f"the joining worker left with status {code}")
            self.joiner.worker = None
            self.summary.rebalances += 1

    # -- BigQuery, poison, retention ------------------------------------------------------

    def _mode(self, mode: str | None) -> None:
        """Both proxies fail BigQuery's calls alike; only Storage Write answers get lost."""
        self.proxy.mode = None if mode == "lost_answer" else mode
        if self.grpc is not None:
            self.grpc.mode = mode

    async def outage(self) -> None:
        if self.plan.outage <= 0:
            return
        await self._at(0.35)
        self.say(f"BigQuery down for {self.plan.outage:.0f}s")
        t0 = time.monotonic()
        self._mode("503")
        await asyncio.sleep(self.plan.outage / 2)
        self._mode("drop")
        await asyncio.sleep(self.plan.outage / 2)
        self._mode(None)
        self.summary.outage_seconds += time.monotonic() - t0

    async def storm(self) -> None:
        if self.plan.storm <= 0:
            return
        await self._at(0.8)
        self.proxy.delay = 1.0
        modes: list[str | None] = ["503", "429", "403", "drop", "slow", None]
        if self.grpc is not None:
            self.grpc.delay = 1.0
            modes.append("lost_answer")
        end = time.monotonic() + self.plan.storm
        while time.monotonic() < end:
            self._mode(self.rng.choice(modes))
            await asyncio.sleep(self.rng.uniform(0.3, 1.5))
        self._mode(None)
        if self.grpc is not None:  # the storm's may fall between appends: three for sure
            self.grpc.budget = 3
            self.grpc.mode = "lost_answer"
        self.summary.storms += 1

    async def poison_rounds(self) -> None:
        settings = self.h.settings.kafka
        for i in range(self.plan.poison_rounds):
            await self._at((i + 0.2) / self.plan.poison_rounds * 0.9)
            landed = await inject(
                settings.bootstrap_servers, settings.topic_prefix, self.h.tables, i
            )
            self.poison += landed
            self.summary.poison += len(landed)

    async def _resnapshots(self) -> int:
        rows = await self.h.query(
            "SELECT COUNT(*) AS n FROM `{ds}._ctstream_snapshots` "
            "WHERE reason LIKE 'saved version too old%'"
        )
        return int(rows[0]["n"])

    async def overruns(self) -> None:
        for i in range(self.plan.overruns):
            await self._at((i + 0.55) / self.plan.overruns * 0.9)
            before = await self._resnapshots()
            sampler = await self._sample_views()
            for _ in range(5):
                # Changes committed and then dropped by cleanup before any poll read them.
                await asyncio.to_thread(self.workload.burst, 300)
                sampler.trigger()
                await asyncio.to_thread(cleanup_database, self.h.db, time.time() + 10**8)
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and await self._resnapshots() == before:
                    await asyncio.sleep(1)
                after = await self._resnapshots()
                if after > before:
                    self.summary.overruns += after - before
                    self.say(f"retention overrun: {after - before} tables re-snapshotted")
                    break

    async def _sample_views(self) -> ViewSampler:
        """Start sampling the latest views (until the snapshots the overrun causes are
        recorded, or the run's checks are over); return once the first sample is in."""
        epoch = time.time() - (time.monotonic() - self.started)
        sampler = ViewSampler(self.h, epoch, self.say)
        self.samplers.append(asyncio.create_task(sampler.run(self.sampling_over, limit=900)))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(sampler.sampled.wait(), 60)
        return sampler

    async def _samplers_done(self) -> None:
        """The samplers' figures into the summary (they stop once ``sampling_over`` is
        set)."""
        s = self.summary
        for task in self.samplers:
            try:
                r = await asyncio.wait_for(task, 120)
            except Exception as exc:
                s.problems.append(f"the view sampler failed: {exc!r}")
                continue
            self.say(sampler_line(r))
            for note in r.notes:
                self.say(f"view sampler: {note}")
            for table, n in r.during.items():
                s.view_samples[table] = s.view_samples.get(table, 0) + n
            s.view_sampling = (
                f"{r.rounds} samples every {r.period:.2f}s, query {r.query_seconds:.2f}s"
            )
            s.view_keys_lost += r.keys_lost
            s.view_keys_excused += r.excused + r.read_deleted
            s.problems += r.problems

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> Summary:
        try:
            return await self._run()
        finally:  # after a failure too, no sampler is left running
            self.sampling_over.set()
            for task in self.samplers:
                task.cancel()

    async def _run(self) -> Summary:
        t0 = time.monotonic()
        h, plan = self.h, self.plan
        create_bookkeeping(h.db)
        # The first worker alone, armed to die after a chunk of its first snapshots is
        # acknowledged (before its progress is saved), then again once a snapshot's rows
        # are all in BigQuery (before it is recorded): the snapshots resume from their
        # saved chunks.
        first = self.slots[0]
        for point in ("snapshot.chunk_acked", "snapshot.acked"):
            self._start(first, armed=point)
            assert first.worker is not None
            code = await self._wait_exit(first.worker, timeout=120)
            if code == -signal.SIGKILL and self._crashed_at(first, point):
                self.summary.kills[point] += 1
                self.summary.poller_kills += 1
            else:
                self.summary.crash_points_missed[point] += 1
            if first.worker.proc.poll() is None:
                await self._kill(first)
            else:
                self.h.workers.remove(first.worker)
        for slot in self.slots:
            self._start(slot)
        await wait_until_polling(
            [s.worker for s in self.slots if s.worker is not None], h.tables, timeout=120
        )
        self.say(f"{plan.workers} workers polling; workload at {plan.rate:.0f} changes/s")
        self.started = time.monotonic()
        self.workload.start()
        watchdog = asyncio.create_task(self.watchdog())
        faults = [
            self.process_faults(),
            self.rebalances(),
            self.outage(),
            self.storm(),
            self.poison_rounds(),
            self.overruns(),
        ]
        try:
            await asyncio.gather(*faults)
            await self._at(1.0)
        finally:
            self._mode(None)
            self.workload.stop()
            self.done.set()
            await watchdog
        self.summary.changes = self.workload.changes
        self.summary.refused_requests = self.proxy.refused
        if self.grpc is not None:
            self.summary.refused_requests += self.grpc.refused
            self.summary.lost_answers = self.grpc.lost_answers
        self.say(f"faults done; {self.workload.total} changes; waiting for the pipeline")
        try:
            # A snapshot of the overrun still under way (its record is the moment that
            # matters most) is sampled on while the pipeline catches up.
            await self._check()
        finally:
            self.sampling_over.set()
            await self._samplers_done()
        self.summary.elapsed = time.monotonic() - t0
        return self.summary

    async def _check(self) -> None:
        h, s = self.h, self.summary
        deadline = time.monotonic() + self.plan.settle
        problems: list[str] = []
        while True:
            problems = []
            for table in h.tables:
                problems += await h.differences(table)
            if not problems or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        s.rows_lost = sum("missing" in p or "column" in p for p in problems)
        s.problems += problems[:20]
        if not problems:  # the views must not depend on the merged change rows
            s.change_log_repeats = await repeated_ids(h)
            if s.change_log_repeats and self.plan.write_api == "storage_write_committed":
                for line in await repeated_samples(h):
                    self.say(f"repeated: {line}")
            s.merged_rows_expired = await compact_and_expire(h)
            after = [p for table in h.tables for p in await h.differences(table)]
            s.rows_lost += sum("missing" in p or "column" in p for p in after)
            s.problems += [f"after the merged change rows expired: {p}" for p in after[:20]]
        for slot in self.slots:  # the pipeline kept running: every worker still answers
            w = slot.worker
            if w is None or w.proc.poll() is not None or worker_status(w.web_port) is None:
                s.problems.append(f"worker {slot.index} is not running at the end")
        names = TopicNames(h.settings.kafka.topic_prefix)
        specs = [TableSpec(t, None, t, ()) for t in h.tables]
        kafka = h.settings.kafka
        raw = await read_all(
            kafka.bootstrap_servers, [names.raw(x) for x in specs], kafka.partitions
        )
        deduped = await read_all(
            kafka.bootstrap_servers, [names.deduped(x) for x in specs], kafka.partitions
        )
        errors = await read_all(kafka.bootstrap_servers, [names.errors], kafka.partitions)
        s.problems += versions_going_backwards(raw)[:20]
        s.problems += poison_not_reported(self.poison, errors)
        raw_ids, deduped_ids = unique_ids(raw), unique_ids(deduped)
        s.raw_events = sum(raw_ids.values())
        s.raw_copies = s.raw_events - len(raw_ids)
        s.duplicates_dropped, s.deduped_copies = dedup_effect(raw_ids, deduped_ids)
        s.holes_reread = h.full_logs().count(REREAD_NOTICE)


async def run_faults(
    stack: StackInfo, workdir: Path, plan: FaultPlan, say: Callable[[str], None] = print
) -> Summary:
    """One fault run on ``stack`` (tables, topics and dataset of its own)."""
    grpc = GrpcFaultProxy(stack.bigquery_grpc) if plan.write_api != "insert_all" else None
    async with fault_proxy(stack.bigquery_endpoint) as (proxy, endpoint):
        seed: list[tuple[str, list[tuple[object, ...]]]] = [
            (
                "INSERT INTO accounts VALUES (?, ?, ?, ?)",
                [(i, f"seed {i}", 1.0, 0) for i in range(plan.seed_rows)],
            ),
            (
                "INSERT INTO order_lines VALUES (?, ?, ?, ?)",
                [(i // 4, 1 + i % 4, "seed", 1) for i in range(plan.seed_rows)],
            ),
            (
                "INSERT INTO tags VALUES (?, ?, ?, ?)",
                [(f"ns|{i % 25}", f"t,{i // 25}", None, 0) for i in range(plan.seed_rows)],
            ),
        ]
        h = Harness(
            stack,
            workdir,
            TABLES,
            partitions=4,
            bigquery_endpoint=endpoint,
            write_api=plan.write_api,
            storage_endpoint=grpc.endpoint if grpc else None,
            snapshot_mode="when_needed",
            seed=seed,
            sink_extra='retry_max = "5s"\nrequest_timeout = "10s"',
            # The leader merges every 15 s, through the kills and outages.
            bigquery_extra='compact_interval = "15s"\ncompact_settle = "20s"',
            # Several chunks per table: the first worker dies after one of them.
            source_extra="snapshot_chunk_rows = 64",
        )
        try:
            return await FaultRun(h, proxy, plan, say, grpc).run()
        finally:
            h.close()
            if grpc is not None:
                grpc.close()
