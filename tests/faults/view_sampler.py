"""The latest views while their tables are snapshotted: no key may go missing.

At every moment of a snapshot, ``<t>_latest`` must hold every key it held just before the
snapshot began that the source has held since, at the version it had or a newer one. A
snapshot that hid keys it had not read yet (recorded too early, a chunk skipped, ...)
would show as keys missing from the view until it completes.

A :class:`ViewSampler` runs around a retention overrun. It samples, about every
``INTERVAL`` seconds: the source's keys, then one query for the keys and change versions
of every table's latest view (with the keys whose newest change is a delete, and the
newest snapshot recorded per table in ``_ctstream_snapshots``), then the source's keys
again. From the sample before the source's cleanup (:meth:`ViewSampler.trigger`) until a
table's snapshot is recorded, each sample is checked with
:func:`tests.faults.invariants.view_keys_lost` against a baseline: a key of the baseline
that the source held before and after the view was read must be in the view. The
baseline is the sample before the cleanup, then, once the table's snapshot has logged
"snapshot ... starting at version V", the sample taken just before that line (a baseline
taken earlier is as valid: a key the source kept must stay in the view in any case). The
snapshot is complete once ``_ctstream_snapshots`` holds version V for the table, as the
view sees it (the same query); the samples in between are those "during" it. The checks
go on for ``AFTER_RECORD`` seconds more, to tell how long a lost key stayed lost.

A key the source deleted and inserted again may be missing from the view until its
re-insert reaches BigQuery: lag, not loss. It is excused (and counted) when the workload
logged a delete of it after the version the view had (``delete_log``) and, in the same
query, either its newest change in BigQuery is that delete, or its newest change is older
than the snapshot recorded (which hides it) and the source inserted it again after the
snapshot began: the snapshot read it while it was deleted (the delete lost to the
overrun, or folded by Change Tracking into the re-insert).

A lost key is reported with what BigQuery held of it just after (its change rows, the
table's snapshot records), so a failure tells a record written too early from a row that
never came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ctstream.bigquery.layout import quote_bq
from ctstream.bigquery.schema import SNAPSHOTS_TABLE
from ctstream.models import TableSpec
from ctstream.source.sqlite_tracking import CHANGE_TABLE_PREFIX, quote_ident
from tests.faults.invariants import ViewKey, view_keys_lost
from tests.integration.harness import Harness

# Seconds from one sample's start to the next's. Measured on 2 cores in the bounded run
# (three tables of ~1,000-4,000 keys, ~10,000 change rows each): a sample takes 0.3-0.45 s
# and costs the emulator about 0.28 s of CPU (its window functions over the change tables)
# and this process about 0.06 s. At 0.5 s the sampler thus takes ~0.55 of a core of the
# emulator and ~0.1 of this process while it runs (1.5-2 minutes); the load average stayed
# under 2 and the run took no longer. More often would take over half the machine.
INTERVAL = 0.5
PAUSE = 0.1  # seconds between samples at least, however long the last one took
TIMEOUT = 30.0  # for each read of the source or of BigQuery
HISTORY = 12  # samples kept to find a snapshot's baseline once its log line is read
AFTER_RECORD = 5.0  # seconds a table is still checked after its snapshot's record
EXAMPLES = 5  # lost keys shown (and looked up in BigQuery) per table
_MARK = "_ctstream_snapshots"  # the union query's rows of the snapshots table
_GONE = "#gone"  # and its rows of keys whose newest change is a delete or is hidden
_START = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] \[\d+\] \[\w+\] ctstream\.snapshot: "
    r"table (.+?): snapshot \S+ starting at version (\d+) "
)


@dataclass
class Sample:
    index: int
    started: float  # time.time() when the view query was sent
    ended: float  # and when its answer was in
    view: dict[str, dict[ViewKey, int]]  # table → key → change version in <t>_latest
    # table → key → (version, is a delete) of its newest change in BigQuery, for the keys
    # whose newest change is a delete or older than the newest recorded snapshot
    gone: dict[str, dict[ViewKey, tuple[int, bool]]]
    recorded: dict[str, int]  # table → newest snapshot_version in _ctstream_snapshots
    source: dict[str, set[ViewKey]]  # table → keys at the source before and after
    created: dict[str, dict[ViewKey, int]]  # table → key → its last insert's version (after)
    delete_seq: int  # the delete log's end when the source was read after the view


@dataclass
class Lost:
    """A baseline key a sample lacked (or held at an older version)."""

    baseline_version: int
    first: float  # time.time() of the first sample that lacked it
    last: float  # and of the last one
    samples: int = 0
    older: bool = False  # held at an older version, not lacked


@dataclass
class Watch:
    """One table, from the trigger until its snapshot is recorded (and a while after)."""

    table: str
    baseline: Sample | None  # the sample before the cleanup, then the one before the start
    started: float | None = None  # time.time() of its first "starting" line
    version: int | None = None  # its start version (the newest, if it started again)
    checked: int = -1  # index of the last sample checked
    samples: int = 0  # samples taken while it was under way
    recorded_at: float | None = None  # time.time() of the first sample that saw its record
    last_checked: float = 0.0  # time.time() of the last sample checked
    lost: dict[ViewKey, Lost] = field(default_factory=dict)
    bad_samples: int = 0
    first_bad: str = ""  # the first sample that lacked a key: when, in which phase
    evidence: str = ""  # what BigQuery held of the first keys lost, just after

    def done(self, now: float) -> bool:
        return self.recorded_at is not None and now > self.recorded_at + AFTER_RECORD


@dataclass
class SamplerResult:
    rounds: int = 0  # samples taken
    failed: int = 0  # rounds whose source or view read failed
    during: dict[str, int] = field(default_factory=dict)  # table → samples during its snapshot
    during_any: int = 0  # samples taken while some snapshot was under way
    keys_lost: int = 0  # distinct baseline keys a sample lacked (or held at an older version)
    bad_samples: int = 0  # samples that lacked one at least (per table)
    # Distinct keys lacked but deleted and inserted again at the source, the re-insert not
    # in BigQuery yet: their delete was their newest change there, or the snapshot hid
    # them, having read them deleted.
    excused: int = 0
    read_deleted: int = 0
    seconds: float = 0.0  # from the first sample to the last
    query_seconds: float = 0.0  # the view queries' mean
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def period(self) -> float:
        return self.seconds / (self.rounds - 1) if self.rounds > 1 else 0.0


class ViewSampler:
    def __init__(self, h: Harness, epoch: float, say: Callable[[str], None] = print) -> None:
        """``epoch``: time.time() at the start of the run (sample times are shown from it)."""
        self.h, self.epoch, self.say = h, epoch, say
        self.tables = list(h.tables)
        self.result = SamplerResult()
        self.sampled = asyncio.Event()  # the first sample is in
        self._keys = {t: self._key_columns(t) for t in self.tables}
        self._sql = self._view_sql()
        self._names = {TableSpec(t, None, t, ()).base_bq_table: t for t in self.tables}
        self._deletes: dict[str, dict[ViewKey, list[tuple[int, int]]]] = defaultdict(dict)
        self._delete_seq = 0
        self._history: list[Sample] = []
        self._watches: dict[str, Watch] = {}  # from the trigger on
        self._pending: list[tuple[str, float, int]] = []  # start lines not yet applied
        self._during: set[int] = set()
        self._excused: set[tuple[str, ViewKey]] = set()
        self._read_deleted: set[tuple[str, ViewKey]] = set()
        self._query_seconds: list[float] = []
        # Worker logs are read from their current ends: older snapshots are not ours.
        self._logs = {p: p.stat().st_size for p in h.workdir.glob("worker-*.log")}
        self._created = time.time()

    def _at(self, t: float) -> str:
        return f"{t - self.epoch:.1f}s"

    # -- reads ------------------------------------------------------------------------------

    def _key_columns(self, table: str) -> list[str]:
        with contextlib.closing(sqlite3.connect(self.h.db, timeout=TIMEOUT)) as conn:
            rows = conn.execute(
                "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", (table,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def _ref(self, table: str, suffix: str = "") -> str:
        return quote_bq(self.h.writer.ref(TableSpec(table, None, table, ()).bq_table + suffix))

    def _view_sql(self) -> str:
        """One query (one state of BigQuery): every table's latest-view keys and versions;
        the keys whose newest change is a delete or is older than the newest recorded
        snapshot (so hidden), with that change's version; and the newest recorded snapshot
        per table. Each kind comes as one text value ("k0<TAB>k1<TAB>version<TAB>D"
        lines): thousands of rows cost the emulator and the client far more than one."""
        width = max(len(k) for k in self._keys.values())
        snapshots = quote_bq(self.h.writer.ref(SNAPSHOTS_TABLE))

        def columns(values: list[str]) -> str:
            padded = values + ["CAST(NULL AS STRING)"] * (width - len(values))
            return ", ".join(f"{c} AS k{i}" for i, c in enumerate(padded))

        parts = []
        for table, keys in self._keys.items():
            key_columns = columns([f"CAST({quote_bq(k)} AS STRING)" for k in keys])
            parts.append(
                f"SELECT '{table}' AS t, {key_columns}, changetrack_ver AS v, '' AS x "
                f"FROM {self._ref(table, '_latest')}"
            )
            newest = "MAX(changetrack_ver)"
            newest_delete = "MAX(IF(changetrack_type = 'D', changetrack_ver, NULL))"
            base = TableSpec(table, None, table, ()).base_bq_table
            parts.append(
                f"SELECT '{table}{_GONE}' AS t, {key_columns}, {newest} AS v, "
                f"IF({newest} = {newest_delete}, 'D', '') AS x "
                f"FROM {self._ref(table)} GROUP BY {', '.join(quote_bq(k) for k in keys)} "
                f"HAVING {newest} = {newest_delete} OR {newest} < (SELECT "
                f"IFNULL(MAX(snapshot_version), 0) FROM {snapshots} WHERE table_name = '{base}')"
            )
        parts.append(
            f"SELECT '{_MARK}' AS t, {columns(['table_name'])}, MAX(snapshot_version) AS v, "
            f"'' AS x FROM {snapshots} GROUP BY table_name"
        )
        line = ", '\\t', ".join(
            [f"IFNULL(k{i}, '')" for i in range(width)] + ["CAST(v AS STRING)", "x"]
        )
        return (
            f"SELECT t, STRING_AGG(CONCAT({line}), '\\n') AS lines FROM (\n"
            + "\nUNION ALL ".join(parts)
            + "\n) GROUP BY t"
        )

    def _read_source(
        self, after_seq: int
    ) -> tuple[dict[str, set[ViewKey]], dict[str, dict[ViewKey, int]], list[tuple[Any, ...]], int]:
        """The source's keys per table, the version of each key's last insert (from its
        change table: since the last cleanup), and the deletes logged after
        ``after_seq``, in one read transaction (WAL: consistent, the writer not blocked)."""
        with contextlib.closing(sqlite3.connect(self.h.db, timeout=TIMEOUT)) as conn:
            conn.isolation_level = None
            conn.execute("BEGIN")
            try:
                keys = {
                    t: {
                        tuple(str(v) for v in row)
                        for row in conn.execute(
                            f"SELECT {', '.join(map(quote_ident, cols))} FROM {quote_ident(t)}"
                        )
                    }
                    for t, cols in self._keys.items()
                }
                created = {
                    t: {
                        tuple(str(v) for v in row[:-1]): int(row[-1])
                        for row in conn.execute(
                            f"SELECT {', '.join(map(quote_ident, cols))}, "
                            "sys_change_creation_version "
                            f"FROM {quote_ident(CHANGE_TABLE_PREFIX + t)} "
                            "WHERE sys_change_creation_version IS NOT NULL"
                        )
                    }
                    for t, cols in self._keys.items()
                }
                deletes = conn.execute(
                    "SELECT seq, t, k, version FROM delete_log WHERE seq > ? ORDER BY seq",
                    (after_seq,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        end = deletes[-1][0] if deletes else after_seq
        return keys, created, deletes, end

    def _note_deletes(self, rows: list[tuple[Any, ...]]) -> None:
        for seq, table, key, version in rows:
            if seq > self._delete_seq:
                self._deletes[table].setdefault(tuple(json.loads(key)), []).append((seq, version))
                self._delete_seq = seq

    async def _sample(self) -> Sample | None:
        try:
            before, _, deletes, seq = await asyncio.wait_for(
                asyncio.to_thread(self._read_source, self._delete_seq), TIMEOUT
            )
            self._note_deletes(deletes)
            started = time.time()
            rows = await asyncio.wait_for(self.h.writer.query(self._sql), TIMEOUT)
            ended = time.time()
            after, created, deletes, seq = await asyncio.wait_for(
                asyncio.to_thread(self._read_source, self._delete_seq), TIMEOUT
            )
            self._note_deletes(deletes)
        except Exception as exc:  # a failed read is a sample less, not a failure
            self.result.failed += 1
            if self.result.failed <= 3:
                self.say(f"view sampler: a read failed: {exc!r}"[:300])
            return None
        view: dict[str, dict[ViewKey, int]] = {t: {} for t in self.tables}
        gone: dict[str, dict[ViewKey, tuple[int, bool]]] = {t: {} for t in self.tables}
        recorded: dict[str, int] = {}
        for row in rows:
            kind, lines = row["t"], (row["lines"] or "").split("\n")
            if kind == _MARK:
                for line in lines:
                    name, *_, version, _ = line.split("\t")
                    if name in self._names:
                        recorded[self._names[name]] = int(version)
                continue
            table = kind.removesuffix(_GONE)
            width = len(self._keys[table])
            for line in lines:
                *values, version, flag = line.split("\t")
                key = tuple(values[:width])
                if kind == table:
                    view[table][key] = int(version)
                else:
                    gone[table][key] = (int(version), flag == "D")
        self._query_seconds.append(ended - started)
        source = {t: before[t] & after[t] for t in self.tables}
        return Sample(
            self.result.rounds, started, ended, view, gone, recorded, source, created, seq
        )

    async def _evidence(self, table: str, keys: list[ViewKey]) -> str:
        """What BigQuery holds of ``keys`` now: their change rows and the view's row, and
        the table's snapshot records."""
        match = " OR ".join(
            "("
            + " AND ".join(
                f"CAST({quote_bq(c)} AS STRING) = '{v.replace(chr(39), chr(92) + chr(39))}'"
                for c, v in zip(self._keys[table], key, strict=True)
            )
            + ")"
            for key in keys
        )
        cols = ", ".join(
            f"CAST({quote_bq(c)} AS STRING) AS k{i}" for i, c in enumerate(self._keys[table])
        )
        try:
            changes = await asyncio.wait_for(
                self.h.writer.query(
                    f"SELECT {cols}, changetrack_type AS op, changetrack_ver AS v, "
                    "bigquery_insert_time AS at, message_unique_id AS id "
                    f"FROM {self._ref(table)} WHERE {match} ORDER BY changetrack_ver"
                ),
                TIMEOUT,
            )
            latest = await asyncio.wait_for(
                self.h.writer.query(
                    f"SELECT {cols}, changetrack_ver AS v FROM {self._ref(table, '_latest')} "
                    f"WHERE {match}"
                ),
                TIMEOUT,
            )
            records = await asyncio.wait_for(
                self.h.writer.query(
                    "SELECT snapshot_version AS v, row_count AS n, completed_at AS at "
                    f"FROM {quote_bq(self.h.writer.ref(SNAPSHOTS_TABLE))} WHERE table_name = "
                    f"'{TableSpec(table, None, table, ()).base_bq_table}' "
                    "ORDER BY snapshot_version"
                ),
                TIMEOUT,
            )
        except Exception as exc:
            return f"BigQuery could not be asked about them: {exc!r}"[:300]
        width = len(self._keys[table])

        def key_of(row: dict[str, Any]) -> ViewKey:
            return tuple(str(row[f"k{i}"]) for i in range(width))

        def when(value: Any) -> str:
            return self._at(value.timestamp()) if hasattr(value, "timestamp") else str(value)

        per_key = []
        in_view = {key_of(r): r["v"] for r in latest}
        for key in keys:
            rows = [r for r in changes if key_of(r) == key]
            shown = "; ".join(
                f"{r['op']} v{r['v']} written {when(r['at'])} id …{str(r['id'])[-24:]}"
                for r in rows[-4:]
            )
            view = (
                f"in the view now at v{in_view[key]}" if key in in_view else "not in the view now"
            )
            deleted = [v for _, v in self._deletes.get(table, {}).get(key, [])][-3:]
            created = self._history[-1].created[table].get(key) if self._history else None
            per_key.append(
                f"{key!r}: {view}; {len(rows)} change rows, the last: {shown}; at the "
                f"source deleted at {deleted or 'no version logged'}, last inserted at "
                f"{created if created is not None else 'no version since the cleanup'}"
            )
        recorded = ", ".join(f"v{r['v']} ({r['n']} rows) at {when(r['at'])}" for r in records)
        return f"just after, BigQuery held: {' | '.join(per_key)} | records: {recorded}"

    # -- snapshots --------------------------------------------------------------------------

    def _starts(self) -> list[tuple[str, float, int]]:
        """(table, time, start version) of the snapshots whose start was logged since
        the last call."""
        found: list[tuple[str, float, int]] = []
        for path in sorted(self.h.workdir.glob("worker-*.log")):
            offset = self._logs.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1  # a line still being written is read next time
            self._logs[path] = offset + end
            for line in data[:end].decode(errors="replace").splitlines():
                m = _START.match(line)
                if m is None or m[3] not in self._keys:
                    continue
                at = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000
                if at >= self._created:
                    found.append((m[3], at, int(m[4])))
        return found

    def trigger(self) -> None:
        """The snapshots are about to be caused (the source's cleanup): the latest sample
        is every table's baseline until its snapshot's start is read. Only the first call
        counts."""
        if self._watches:
            return
        baseline = self._history[-1] if self._history else None
        self._watches = {t: Watch(t, baseline) for t in self.tables}
        if baseline is None:
            self.result.notes.append("no sample before the cleanup: nothing checked")
            return
        for watch in self._watches.values():
            watch.checked = baseline.index

    def _started(self, table: str, at: float, version: int) -> None:
        watch = self._watches[table]
        if watch.recorded_at is not None:
            return
        watch.version = max(watch.version or 0, version)  # started again: its record counts
        if watch.started is not None:
            return
        watch.started = at
        if watch.baseline is None:
            return
        # The sample taken just before the start, if later than the baseline so far.
        for sample in self._history:
            if watch.baseline.index < sample.index and sample.ended < at:
                watch.baseline = sample

    def _recorded(self, watch: Watch, sample: Sample) -> bool:
        newest = sample.recorded.get(watch.table, -1)
        if watch.version is not None:
            return newest >= watch.version
        # No "starting" line read (its worker killed right after the start?): any record.
        before = watch.baseline.recorded.get(watch.table, -1) if watch.baseline else -1
        return newest > before

    def _check(self, watch: Watch, sample: Sample) -> list[ViewKey]:
        """Check ``sample`` against the table's baseline; the keys it newly lost."""
        if watch.baseline is None or sample.index <= watch.checked or watch.done(sample.started):
            return []
        watch.checked, watch.last_checked = sample.index, sample.started
        table, baseline = watch.table, watch.baseline
        phase = "after its record"
        if watch.recorded_at is None:
            if self._recorded(watch, sample):
                watch.recorded_at = sample.started
                phase = "the sample that saw its record"
                if watch.started is None:
                    self.result.notes.append(
                        f"{table}: its snapshot was recorded, its start never logged: checked "
                        "from the sample before the cleanup, no sample counted as during it"
                    )
            elif watch.started is not None and sample.started >= watch.started:
                watch.samples += 1
                self._during.add(sample.index)
                phase = "during its snapshot"
            else:
                phase = "before its snapshot's start was read"
        loss = view_keys_lost(
            baseline.view[table],
            sample.view[table],
            sample.source[table],
            sample.gone[table],
            sample.recorded.get(table, 0),
            sample.created[table],
            self._deletes.get(table, {}),
            sample.delete_seq,
        )
        self._excused.update((table, k) for k in loss.excused)
        self._read_deleted.update((table, k) for k in loss.read_deleted)
        if not loss.missing and not loss.older:
            return []
        watch.bad_samples += 1
        if not watch.first_bad:
            began = (
                f"{sample.started - watch.started:+.1f}s from its start at "
                f"{self._at(watch.started)}"
                if watch.started is not None
                else "its start not logged"
            )
            watch.first_bad = f"{self._at(sample.started)} ({phase}, {began})"
        new = []
        for key, older in [(k, False) for k in loss.missing] + [(k, True) for k in loss.older]:
            lost = watch.lost.get(key)
            if lost is None:
                lost = watch.lost[key] = Lost(baseline.view[table][key], sample.started, 0, 0)
                new.append(key)
            lost.last, lost.older = sample.started, older
            lost.samples += 1
        return new

    def _report(self, watch: Watch) -> str:
        table, lost = watch.table, watch.lost
        assert watch.baseline is not None
        back = [k for k, v in lost.items() if v.last < watch.last_checked]
        shown = sorted(lost, key=lambda k: (lost[k].first, k))[:EXAMPLES]
        examples = ", ".join(
            f"{k!r} (v{lost[k].baseline_version}{', held older' if lost[k].older else ''}, "
            f"lacked {self._at(lost[k].first)}-{self._at(lost[k].last)})"
            for k in shown
        )
        recorded = (
            f"its record seen at {self._at(watch.recorded_at)}"
            if watch.recorded_at is not None
            else "its record not seen"
        )
        return (
            f"{table}_latest lost {len(lost)} of the {len(watch.baseline.view[table])} keys "
            f"it held at {self._at(watch.baseline.started)} (the baseline) although the source "
            f"held them, in {watch.bad_samples} samples from {watch.first_bad}; {recorded}; "
            f"{len(back)} back by the last sample checked ({self._at(watch.last_checked)}); "
            f"e.g. {examples}; {watch.evidence}"
        )

    def _finished(self) -> bool:
        now = self._history[-1].started if self._history else 0.0
        return bool(self._watches) and all(w.done(now) for w in self._watches.values())

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, limit: float) -> SamplerResult:
        """Sample until every table's snapshot after the trigger is recorded (and
        ``AFTER_RECORD`` seconds more), ``stop`` is set, or ``limit`` seconds pass."""
        deadline = time.monotonic() + limit
        first: float | None = None
        last = 0.0
        while not stop.is_set() and time.monotonic() < deadline and not self._finished():
            began = time.monotonic()
            sample = await self._sample()
            if sample is not None:
                self.result.rounds += 1
                first = sample.started if first is None else first
                last = sample.started
                self._history = [*self._history[-(HISTORY - 1) :], sample]
                self.sampled.set()
                self._pending += self._starts()
                if self._watches:
                    for table, at, version in self._pending:
                        self._started(table, at, version)
                    self._pending = []
                    for watch in self._watches.values():
                        new: list[ViewKey] = []
                        for held in self._history:  # in order; those checked are skipped
                            new += self._check(watch, held)
                        if new and not watch.evidence:
                            watch.evidence = await self._evidence(watch.table, new[:EXAMPLES])
            pause = max(PAUSE, INTERVAL - (time.monotonic() - began))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
        return self._finish(first, last)

    def _finish(self, first: float | None, last: float) -> SamplerResult:
        r = self.result
        r.seconds = 0.0 if first is None else last - first
        r.query_seconds = sum(self._query_seconds) / max(1, len(self._query_seconds))
        r.during_any = len(self._during)
        r.excused = len(self._excused)
        r.read_deleted = len(self._read_deleted)
        for table, watch in sorted(self._watches.items()):
            if watch.started is not None:
                r.during[table] = watch.samples
            if watch.recorded_at is None:
                state = "began" if watch.started is not None else "was not seen to begin"
                r.notes.append(f"{table}: its snapshot {state}, not recorded while sampled")
            if watch.lost:
                r.keys_lost += len(watch.lost)
                r.bad_samples += watch.bad_samples
                r.problems.append(self._report(watch))
        return r


def sampler_line(r: SamplerResult) -> str:
    tables = ", ".join(f"{t} {n}" for t, n in sorted(r.during.items()))
    return (
        f"view sampler: {r.rounds} samples in {r.seconds:.0f}s (every {r.period:.2f}s, "
        f"view query {r.query_seconds:.2f}s, {r.failed} failed), {r.during_any} during "
        f"snapshots ({tables}), keys lost {r.keys_lost} in {r.bad_samples} samples, "
        f"keys lacked while re-inserted at the source and not yet in BigQuery: "
        f"{r.excused} after their delete landed, {r.read_deleted} after the snapshot read "
        "them deleted"
    )
