"""Tables that start or stop being tracked while ctstream runs, found without a restart.

Every worker reads the source catalog every ``source.discover_interval`` (and at once
when a poll tick names a table it does not know). A newly tracked table that
``source.tables`` selects gets its topics, its BigQuery table, views and function, then
joins the dedup and sink subscriptions (a rebalance) and the leader's poll ticks: its
first poll takes the snapshot its snapshot mode asks for, then Change Tracking goes on.
A table no longer tracked is no longer polled — said once in the log and in the status
views — while what is already in Kafka still reaches BigQuery, where its data stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ctstream.agents.registry import TableRegistry, name_clash
from ctstream.bigquery.drift import prepare_table
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.errors import CtstreamError
from ctstream.settings import Settings
from ctstream.source.reader import SourceReader
from ctstream.streams.app import PipelineApp
from ctstream.streams.security import client_options
from ctstream.streams.topics import PipelineTopics, ensure_topics

log = logging.getLogger("ctstream.discovery")
WAKE_EVERY = 3.0


class TableDiscovery:
    def __init__(
        self,
        app: PipelineApp,
        settings: Settings,
        registry: TableRegistry,
        topics: PipelineTopics,
        writer: BigQueryWriter,
    ) -> None:
        self.app = app
        self.settings = settings
        self.registry = registry
        self.topics = topics
        self.writer = writer
        self.reader = SourceReader(settings.source)  # its own connection: polls run long
        self._wake: asyncio.Event | None = None
        self._said: dict[str, str] = {}  # table → last problem logged (log each once)
        self._woken_at = -WAKE_EVERY

    def wake(self, table: str | None = None) -> None:
        """Look at the catalog soon: a poll tick named a table this worker lacks. At most
        every few seconds — a tick may name a table this worker's config leaves out."""
        now = time.monotonic()
        if self._wake is not None and now - self._woken_at > WAKE_EVERY:
            self._woken_at = now
            self._wake.set()

    async def run_forever(self) -> None:
        self._wake = asyncio.Event()
        interval = self.settings.source.discover_interval
        while not self.app.should_stop:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            await self.check()

    async def check(self) -> None:
        """One look at the catalog; never raises (the next round tries again)."""
        try:
            tracked = await self.reader.tracked_names()
        except CtstreamError as exc:
            log.warning("reading the source catalog for new tables failed: %s", exc)
            return
        tracked_folded = {t.casefold() for t in tracked}
        registry = self.registry
        for name in self.settings.source.selection.resolve(tracked):
            if name.casefold() not in tracked_folded:
                continue  # a table named outright but not tracked: handled below
            if name not in registry.specs or name in registry.untracked:
                await self._add(name)  # described again: it may be a new table by that name
        for name in list(registry.specs):
            if name.casefold() not in tracked_folded and name not in registry.untracked:
                message = (
                    "no longer change-tracked at the source (tracking disabled or table "
                    "dropped): polling stopped; its data in BigQuery stays. To carry it "
                    "again, enable change tracking on it (SQL Server: ALTER TABLE … ENABLE "
                    "CHANGE_TRACKING; SQLite stand-in: `ctstream sqlite track DB TABLE`)"
                )
                registry.untracked[name] = message
                log.warning("table %s: %s", name, message, extra={"ctstream": {"table": name}})
        registry.discovery_rounds += 1
        registry.discovered_at = time.time()
        missing = self.topics.ensure_subscribed()
        if missing:
            log.info("asking again to subscribe to %s", ", ".join(missing))

    async def _add(self, name: str) -> None:
        settings, registry = self.settings, self.registry
        try:
            spec = await self.reader.describe(name)
            clash = name_clash(registry.specs.values(), spec)
            if clash:
                self._say(name, clash)
                return
            names = self.topics.names
            kafka = settings.kafka
            await ensure_topics(
                kafka.bootstrap_servers,
                names.per_table(spec),
                kafka.partitions,
                kafka.replication_factor,
                retention=names.retention_of([spec], kafka.retention),
                client_options=client_options(kafka),
            )
            drift = await prepare_table(self.writer, spec, settings.bigquery.options_for(name))
        except CtstreamError as exc:
            self._say(name, f"selected by source.tables but cannot be carried yet: {exc}")
            return
        spec = drift.spec
        registry.specs[name] = spec
        registry.found_at[name] = time.time()
        if drift.notes():
            registry.schema_notes[name] = drift.notes()
        self.topics.add_table(spec)  # for a table tracked again: its topics are known
        self._said.pop(name, None)
        if registry.untracked.pop(name, None) is not None:
            what = "change-tracked again; polling resumes (a saved version older than the new "
            what += "minimum valid version follows its snapshot mode)"
        else:
            what = "newly change-tracked and selected by source.tables; now carried"
        log.warning(
            "table %s: %s (snapshot_mode %s)",
            name,
            what,
            settings.source.snapshot_mode_of(name),
            extra={"ctstream": {"table": name}},
        )

    def _say(self, name: str, message: str) -> None:
        if self._said.get(name) != message:
            log.error("table %s: %s", name, message, extra={"ctstream": {"table": name}})
        self._said[name] = message


def install_discovery(app: PipelineApp, discovery: TableDiscovery) -> None:
    """A task of ``app`` that runs ``discovery`` until the worker stops."""

    @app.task
    async def discover_tables() -> None:
        await discovery.run_forever()
