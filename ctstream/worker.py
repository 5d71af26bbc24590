"""Starting a worker: check everything it needs first, then run the faust worker."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import logging.config
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

from ctstream.agents.registry import TableRegistry, name_clash
from ctstream.bigquery.client import DEFAULT_CONNECTIONS
from ctstream.bigquery.drift import prepare_table
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack.crash_points import CrashPoints
from ctstream.errors import ConfigError, CtstreamError
from ctstream.logging import logging_config
from ctstream.settings import Settings
from ctstream.source.dialects import dialect_for
from ctstream.source.reader import SourceReader, selected_tables
from ctstream.streams.security import client_options
from ctstream.streams.topics import TopicNames, ensure_topics

log = logging.getLogger("ctstream.worker")

# Tracked objects allocated (net) before a young-generation collection; Python's is 700.
GC_YOUNG_THRESHOLD = 20_000


async def preflight(settings: Settings, writer: BigQueryWriter) -> TableRegistry:
    """Source tables resolved, described and checked, topics created, BigQuery tables and
    views made. Every failure here is a clear error at start instead of a stalled pipeline
    later.
    """
    try:
        dialect = dialect_for(settings.source.dialect)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    reader = SourceReader(settings.source, dialect)
    try:
        await reader.check_database()
        specs = await reader.describe_all(await selected_tables(settings.source, reader))
    finally:
        await reader.close()
    for spec in specs.values():
        clash = name_clash(specs.values(), spec)
        if clash:
            raise ConfigError(clash)
    topic_names = TopicNames(settings.kafka.topic_prefix)
    await ensure_topics(
        settings.kafka.bootstrap_servers,
        topic_names.all_for(specs.values()),
        settings.kafka.partitions,
        settings.kafka.replication_factor,
        retention=topic_names.retention_of(specs.values(), settings.kafka.retention),
        client_options=client_options(settings.kafka),
    )
    registry = TableRegistry(specs)
    try:
        await writer.ensure_dataset()
        if settings.bigquery.write_api != "insert_all" and "sink" in settings.app.roles:
            writer.write_client()  # credentials are checked now, not at the first batch
        for spec in list(specs.values()):
            options = settings.bigquery.options_for(spec.name)
            drift = await prepare_table(writer, spec, options)
            specs[spec.name] = drift.spec
            if drift.notes():
                registry.schema_notes[spec.name] = drift.notes()
    except CtstreamError as exc:
        where = settings.bigquery.endpoint or "Google's endpoint"
        advice = (
            "; check that BigQuery is reachable from this host (bigquery.endpoint, proxy, "
            "firewall) and start again"
            if exc.retriable
            else ""
        )
        raise type(exc)(f"BigQuery at {where}: {exc}{advice}") from None
    return registry


def uvloop_everywhere() -> asyncio.AbstractEventLoop:
    """A uvloop loop for this thread, and uvloop for every loop made later.

    The policy, not only this loop: any loop a library makes later (``asyncio.new_event_loop()``)
    is a uvloop too. uvloop costs a worker less CPU per event than asyncio's own loop.
    """
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def worker_threads(settings: Settings) -> int:
    """Threads for the blocking calls of a worker (ODBC through aioodbc, BigQuery's client
    through ``asyncio.to_thread``): enough that the source's connections never wait
    behind BigQuery requests, which come up to ``tables_at_once`` per batch in flight."""
    sink = settings.sink
    return settings.source.max_connections + sink.tables_at_once * sink.max_in_flight + 4


def bigquery_connections(settings: Settings) -> int:
    """BigQuery connections a worker keeps open: one per request the sink makes at once
    (``tables_at_once`` per batch in flight), and two for its other calls."""
    sink = settings.sink
    return max(DEFAULT_CONNECTIONS, sink.tables_at_once * sink.max_in_flight + 2)


def calm_gc() -> None:
    """Collect cyclic garbage less often, and never scan what start-up built again.

    A worker allocates a few short-lived objects per event (faust's message and event,
    parsed JSON), which at Python's default threshold start a young collection every 700
    net allocations; every tenth of those goes on to the middle generation and every
    hundredth to the whole heap — the imported libraries and the app, which live as long
    as the process (at the default, a tenth of the dedup and sink workers' CPU, seen with
    ``benchmarks.stages --only dedup,sink``). Memory: at most ``GC_YOUNG_THRESHOLD`` more
    objects wait for a collection.
    """
    gc.collect()
    gc.freeze()  # start-up's objects live as long as the process; the collector skips them
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


def faust_worker(app: Any, loop: Any, level: str, log_config: dict[str, Any]) -> Any:
    """faust's Worker for ``app``, logging with ``log_config`` and without its spinner.

    The terminal spinner is no use in a service, writes cursor escapes into the log, and
    at a level of warning or above faust sets the *root* logger to DEBUG to feed it: every
    debug call in the process then builds a record, and google-auth parses and hashes
    each insertAll body for a debug line nobody sees (a few % of a worker's CPU).
    """
    from faust.worker import Worker

    worker: Any = Worker(
        app,
        loop=loop,
        loglevel=level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=True,
        logging_config=dict(log_config),
    )
    worker.spinner = None
    return worker


def run_worker(settings: Settings, loglevel: str | None = None) -> NoReturn:
    """Run one worker until SIGINT/SIGTERM. Several may run at once on one config."""
    from ctstream.agents import install
    from ctstream.streams.app import create_app
    from ctstream.streams.faust_compat import check_versions
    from ctstream.web import install_views

    # A crash in native code (an ODBC driver, a C extension) leaves the Python stacks of
    # every thread on stderr instead of nothing.
    faulthandler.enable()
    # Set up before the checks at start, so what they find is logged too; faust's worker
    # gets the same configuration.
    log_config = logging_config(
        settings.app.log_format, loglevel or settings.app.log_level, settings.app.log_levels
    )
    logging.config.dictConfig(log_config)
    check_versions(settings.app.allow_unverified_versions)
    writer = BigQueryWriter(
        settings.bigquery,
        timeout=settings.sink.request_timeout,
        max_request_bytes=settings.sink.max_request_bytes,
        connections=bigquery_connections(settings),
    )
    registry = asyncio.run(preflight(settings, writer))
    crash = CrashPoints({str(k): p for k, p in settings.faults.crash_points.items()})
    if crash.armed:
        log.warning("FAULT TEST: this worker may kill itself at %s", crash.armed)
    loop = uvloop_everywhere()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=worker_threads(settings), thread_name_prefix="ctstream")
    )
    app = create_app(settings)
    pipeline = install(app, settings, registry, writer, crash)
    install_views(app, pipeline)
    worker = faust_worker(app, loop, loglevel or settings.app.log_level, log_config)
    log.info("worker starting: tables %s", ", ".join(registry.specs))
    code = 0
    calm_gc()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    # faust has stopped: what was finished is committed, what was not is withheld. A
    # BigQuery or ODBC call cancelled by the stop may still block a worker thread (up to
    # its request or busy timeout) and would hold up the interpreter's exit, which joins
    # those threads; its result no longer matters, so leave without waiting for it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
