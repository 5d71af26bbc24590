"""Poll agents: Change Tracking → raw topics, one poll per table per tick; snapshots.

The leader worker sends a tick per table every poll interval to the poll-ticks topic,
keyed by table name. The worker that owns that partition runs the poll, so each table is
polled by one worker at a time and another takes over when it dies (Kafka rebalance).
The table's state lives in the changelog-backed ``ct-versions`` table, written inside
the tick's stream iteration, and only after Kafka acknowledged every event of the poll.

A table is read whole (a snapshot, its rows sent as 'S' events, in key-ordered chunks
between its polls: agents/snapshots.py) when it has no saved version (snapshot modes
``initial``, ``when_needed``), when its saved version fell below the minimum valid
version (``when_needed``), or when ``ctstream snapshot`` asked for it — the request is a
tick too, saved in the state before the snapshot starts, so it survives a crash; so do
the snapshot's progress and its pause.

The source lag of a table (PollStats.record_lag) is measured by the worker that polls it:
each successful poll or snapshot leaves none (it saved the current version its
transaction read), and at most every ``LAG_CHECK_INTERVAL`` seconds per table one
``table_health`` query reads the source's current version and the age of the oldest
change after the saved version, also while polls fail, unless the source just could not
be reached (the query would only wait again).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

from aiokafka.errors import KafkaError as AioKafkaError

from ctstream.agents.registry import TableRegistry
from ctstream.agents.snapshots import SnapshotRunner
from ctstream.agents.stats import PollStats, failure_reason
from ctstream.bigquery.drift import adopt_schema
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack.crash_points import CrashPoints
from ctstream.errors import (
    ChunkColumnRefused,
    CtstreamError,
    KafkaSendFailed,
    SchemaChanged,
    SourceError,
    TableNotTracked,
    VersionTooOld,
)
from ctstream.models import SourceState, TableSpec
from ctstream.models.change_event import Record
from ctstream.retry import retry_forever
from ctstream.settings import Settings
from ctstream.source.change_capture import PollResult, Send, poll_table
from ctstream.source.reader import SourceReader
from ctstream.streams.acks import Sent
from ctstream.streams.app import PipelineApp
from ctstream.streams.producer import aiokafka_producer, send_batched
from ctstream.streams.topics import PipelineTopics

log = logging.getLogger("ctstream.poll")
lag_log = logging.getLogger("ctstream.poll.lag")

# Seconds between two measures of a table's source lag (one table_health query). A
# constant: every poll already refreshes the lag, this only bounds how stale it gets
# while polls fail, and one query per table every 30 s costs the source nothing.
LAG_CHECK_INTERVAL = 30.0
# Failures after which the source is not asked for its lag: it just did not answer.
_UNREACHABLE = frozenset({"source_unavailable", "timeout"})


class TablePoller:
    """Runs polls and snapshots for the tables whose ticks this worker receives."""

    def __init__(
        self,
        app: PipelineApp,
        settings: Settings,
        registry: TableRegistry,
        topics: PipelineTopics,
        reader: SourceReader,
        writer: BigQueryWriter,
        stats: PollStats,
        crash: CrashPoints,
    ) -> None:
        self.app = app
        self.crash = crash
        self.registry = registry
        # Shared with the sink and the status views; a table's spec is replaced when its
        # columns change at the source (see _adopt), tables found while running join.
        self.specs: dict[str, TableSpec] = registry.specs
        self.settings = settings
        self.topics = topics
        self.reader = reader
        self.writer = writer
        self.stats = stats
        self._lag_checked: dict[str, float] = {}  # table → time.monotonic() of the last try
        self._age_denied: set[str] = set()  # tables whose change ages the login may not read
        self.snapshots = SnapshotRunner(
            settings,
            reader,
            writer,
            stats,
            crash,
            self.state,
            self._save,
            lambda: bool(app.should_stop),
        )

    def state(self, name: str) -> SourceState:
        try:
            return SourceState.from_value(self.topics.versions.get(name))
        except ValueError:
            log.warning("table %s: unreadable saved state; treating it as none", name)
            return SourceState()

    def _save(self, name: str, state: SourceState) -> None:
        self.topics.versions[name] = state.to_value()

    def request_snapshot(self, name: str, reason: str, request_id: str | None = None) -> None:
        """Save a snapshot request; one seen before (a tick read again after a crash or
        rebalance) is ignored, so a snapshot under way goes on from its saved chunk."""
        state = self.state(name)
        if request_id is not None and request_id in (
            state.snapshot_request_id,
            state.snapshot_id,
            state.snapshot.id if state.snapshot else None,
        ):
            log.info("table %s: snapshot request %s seen before; ignored", name, request_id)
            return
        self._save(name, state.requesting(reason, request_id))
        log.info("table %s: snapshot requested (%s)", name, reason)

    async def run(self, name: str) -> None:
        """One poll (or snapshot) of table ``name``, a failure counted by its reason, and
        the source lag measured when due; never raises: the next tick tries again."""
        reason: str | None = None
        try:
            try:
                await self._run(self.specs[name])
            except SchemaChanged as exc:
                # Nothing was sent: add the columns to BigQuery first, then read again.
                if await self._adopt(exc):
                    await self._run(self.specs[name])
            except TableNotTracked:
                if not await self._re_resolve(self.specs[name]):
                    raise
                await self._run(self.specs[name])
        except ChunkColumnRefused as exc:
            self._stop_with(name, str(exc))  # until the setting or the column is fixed
        except CtstreamError as exc:
            reason = failure_reason(exc)
            self.stats.last_error[name] = str(exc)
            log.warning(
                "table %s: poll failed, will retry on the next tick: %s",
                name,
                exc,
                extra={"ctstream": {"table": name}},
            )
        except Exception as exc:
            # Nothing was saved, so the next tick re-reads the same changes: no loss.
            self.stats.last_error[name] = f"{type(exc).__name__}: {exc}"
            if self.app.should_stop:
                # Stopping closes the source connection under a running read: expected,
                # and the worker that takes the table over polls it again.
                log.info("table %s: poll interrupted by the worker stopping: %s", name, exc)
                return
            reason = failure_reason(exc)
            log.exception("table %s: poll failed, will retry on the next tick", name)
        if self.app.should_stop:
            return  # a poll cut short by the stop is not a failure, nor worth a measure
        if reason is not None:
            self.stats.failed(name, reason)
        if reason not in _UNREACHABLE:
            await self._measure_lag(name)

    async def _measure_lag(self, name: str) -> None:
        """At most every LAG_CHECK_INTERVAL s per table: one ``table_health`` query for the
        source's current version and the age of the oldest change not yet sent. Never
        raises: a failed measure leaves the last values, and the time they were taken."""
        now = time.monotonic()
        if now - self._lag_checked.get(name, -math.inf) < LAG_CHECK_INTERVAL:
            return
        self._lag_checked[name] = now
        try:
            saved = self.state(name).version
            if saved is None:
                return  # nothing saved yet (a first snapshot pending): no lag to speak of
            checked_at = time.time()
            health = await self.reader.table_health(self.specs[name], saved)
        except Exception as exc:
            fields = {"ctstream": {"table": name}}
            lag_log.warning(
                "table %s: could not measure the source lag: %s", name, exc, extra=fields
            )
            return
        denied = health.age_denied
        if denied is None:
            self._age_denied.discard(name)
        elif name not in self._age_denied:
            self._age_denied.add(name)
            lag_log.warning(
                "table %s: the source does not tell this login the age of changes not yet "
                "sent (ctstream_source_oldest_unsent_change_age_seconds is left out); run %s",
                name,
                denied.grant,
                extra={"ctstream": {"table": name}},
            )
        # No unsent change: the source reports no age, which is an age of 0.
        age = None if denied is not None else health.oldest_unpolled_change_age_s or 0.0
        lag = health.current_version - saved
        self.stats.record_lag(name, lag, age, health.retention_seconds, checked_at)

    async def _run(self, spec: TableSpec) -> None:
        """Start a snapshot when one is due, poll the table's changes, then read the
        snapshot's next chunks (changes first: a snapshot never delays them)."""
        name = spec.name
        state = self.state(name)
        mode = self.settings.source.snapshot_mode_of(name)
        # Before the poll: a refused snapshot stops the table, not only its chunks.
        self.snapshots.check(spec, state, state.version is None and mode != "never")
        if state.snapshot_requested is not None:
            state = await self.snapshots.start(
                spec, state.snapshot_requested, state.snapshot_request_id, reset_version=False
            )
        elif state.version is None:
            if mode != "never":
                reason = f"no saved version (snapshot_mode {mode})"
                state = await self.snapshots.start(spec, reason, None, reset_version=True)
            else:
                state = state.advanced(await self.reader.min_valid_version(spec))
                self._save(name, state)
                log.info("table %s: no saved version, starting at version %d", name, state.version)
        assert state.version is not None
        try:
            previous = self.stats.last_start.get(name)
            send = self._sender(spec)
            result = await poll_table(self.reader, spec, state.version, send, previous)
        except VersionTooOld as exc:
            progress = self.state(name).snapshot
            if progress is not None and progress.start_version > state.version:
                # The snapshot under way reads every row as of its start or later: the
                # changes lost before it are covered, those after it are polled next.
                self._save(name, self.state(name).advanced(progress.start_version))
                log.warning(
                    "table %s: %s; polling goes on from the start of the snapshot under way "
                    "(version %d)",
                    name,
                    exc,
                    progress.start_version,
                )
            elif progress is not None or mode == "when_needed":
                log.warning("table %s: %s; re-snapshotting (snapshot_mode %s)", name, exc, mode)
                reason = progress.reason if progress else f"saved version too old: {exc}"
                await self.snapshots.start(spec, reason, None, reset_version=True)
            else:
                self._stop(spec, exc, mode)
                return
        else:
            if result.events:
                self.crash.reach("poll.acked")
            if result.to_version != state.version:
                self._save(name, self.state(name).advanced(result.to_version))
            self._record(result)
            if result.events:
                log.info(
                    "table %s: %d changes, version %d → %d in %.3fs",
                    name,
                    result.events,
                    result.from_version,
                    result.to_version,
                    result.seconds,
                )
        await self.snapshots.advance(spec, self._sender(spec))

    async def _re_resolve(self, spec: TableSpec) -> bool:
        """True when the table was dropped and created again (tracked under a new
        identity): its spec now has the new one, and its next read finds its saved
        version too old, which its snapshot mode answers (snapshot, or stop and say)."""
        try:
            fresh = await self.reader.describe(spec.name)
        except CtstreamError:
            return False  # gone or untracked: table discovery says so and stops polling
        if fresh.object_id == spec.object_id:
            return False
        self.specs[spec.name] = replace(
            spec, object_id=fresh.object_id, change_table=fresh.change_table
        )
        log.warning(
            "table %s: was dropped and created again (tracking identity %s → %s); "
            "changes of the old table after the saved version are gone, so the table "
            "follows its snapshot mode (snapshot_mode %s)",
            spec.name,
            spec.object_id,
            fresh.object_id,
            self.settings.source.snapshot_mode_of(spec.name),
            extra={"ctstream": {"table": spec.name}},
        )
        return True

    async def _adopt(self, change: SchemaChanged) -> bool:
        """Carry the table's new columns; False when the change stops the table."""
        spec = change.spec
        assert isinstance(spec, TableSpec)
        try:
            spec.check()
        except ValueError as exc:
            raise SourceError(f"{change}; cannot carry the new columns: {exc}") from None
        options = self.settings.bigquery.options_for(spec.name)
        sink = self.settings.sink
        try:
            drift, added = await retry_forever(
                lambda: adopt_schema(self.writer, spec, options),
                f"adding columns of {spec.name} to BigQuery",
                sink.retry_initial,
                sink.retry_max,
                should_abort=lambda: bool(self.app.should_stop),
                log_fields={"table": spec.name},
            )
        except SourceError as exc:  # a retyped key: nothing can be written faithfully
            self._stop_with(spec.name, str(exc))
            return False
        self.specs[spec.name] = drift.spec
        notes = drift.notes()
        if notes:
            self.registry.schema_notes[spec.name] = notes
        else:
            self.registry.schema_notes.pop(spec.name, None)
        log.warning(
            "table %s: %s; BigQuery columns added: %s",
            spec.name,
            change,
            ", ".join(added) or "none",
            extra={"ctstream": {"table": spec.name}},
        )
        for note in notes:
            log.warning("table %s: %s", spec.name, note, extra={"ctstream": {"table": spec.name}})
        return True

    def _sender(self, spec: TableSpec) -> Send:
        raw_topic = self.topics.names.raw(spec)

        async def send(records: list[Record]) -> Sent:
            # Straight to aiokafka in one record batch per partition, by the producer's
            # own partitioner (as topic.send would); the futures complete on Kafka's ack.
            try:
                return Sent(await send_batched(aiokafka_producer(self.app), raw_topic, records))
            except AioKafkaError as exc:
                raise KafkaSendFailed(
                    f"sending to {raw_topic} failed ({type(exc).__name__}: {exc})"
                ) from exc

        return send

    def _record(self, result: PollResult) -> None:
        name, stats = result.table, self.stats
        stats.last_start[name] = result.started_at
        stats.polls[name] = stats.polls.get(name, 0) + 1
        stats.events[name] = stats.events.get(name, 0) + result.events
        stats.versions[name] = result.to_version
        stats.last_error.pop(name, None)
        stats.stopped.pop(name, None)
        # The poll saved the current version its transaction read: as of that read nothing
        # was left unsent (to_version is max(current version, saved version)).
        age = None if name in self._age_denied else 0.0
        stats.record_lag(name, 0, age, None, result.started_at)

    def _stop(self, spec: TableSpec, exc: VersionTooOld, mode: str) -> None:
        self._stop_with(
            spec.name,
            f"{exc}. Polling of this table is stopped (snapshot_mode {mode}): run "
            f"`ctstream snapshot --config FILE --table {spec.name}` to re-read it, or set "
            f'source.table_snapshot_mode."{spec.name}" = "when_needed"',
        )

    def _stop_with(self, name: str, message: str) -> None:
        """Stop polling ``name`` until something changes; say so once, loudly."""
        if self.stats.stopped.get(name) != message:
            log.error("table %s: %s", name, message, extra={"ctstream": {"table": name}})
        self.stats.stopped[name] = message
        self.stats.last_error[name] = message
