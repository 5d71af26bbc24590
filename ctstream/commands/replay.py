"""``ctstream replay``: re-send a table's topic from a time or an offset to BigQuery.

:func:`replay` checks the arguments against the config, then reads the table's raw or
deduped topic on every partition from ``since`` (or offset ``from_offset``) up to the end
as of now, keeping messages with a timestamp in [since, until), and writes the events as
the sink does (see :mod:`ctstream.commands.topic_replay`). ``--to-table`` builds a
backfill table with its ``_latest`` view and ``_at`` function instead of writing to the
table's own; it may not be another of ctstream's tables.

:func:`run` is the command: a progress bar on stderr when it is a terminal (and not
``--json``), then the summary (:func:`render`) or ``ReplayResult.as_json()``; exit status
1 when any row was parked as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Callable
from typing import Literal

from ctstream.bigquery.schema import ERROR_RECORDS_TABLE, SNAPSHOTS_TABLE
from ctstream.commands.replay_result import PartitionSpan, ReplayResult, render
from ctstream.commands.topic_replay import TopicReplay
from ctstream.errors import ConfigError
from ctstream.models import TableSpec
from ctstream.settings import Settings, load_settings
from ctstream.streams.topics import TopicNames

__all__ = ["PartitionSpan", "ReplayResult", "render", "replay", "run"]

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")


def run(args: argparse.Namespace) -> int:
    """``ctstream replay --config FILE --table T (--since TIME | --from-offset N) …``."""
    settings = load_settings(args.config)

    def progress(done: int, total: int) -> None:
        if not args.json and sys.stderr.isatty():
            width = 30
            filled = width * done // max(total, 1)
            bar = "#" * filled + "." * (width - filled)
            print(f"\r[{bar}] {done}/{total} messages", end="", file=sys.stderr, flush=True)

    result = asyncio.run(
        replay(
            settings,
            args.table,
            since=args.since,
            from_offset=args.from_offset,
            until=args.until,
            topic=args.topic,
            to_table=args.to_table,
            skip_dedup=args.skip_dedup,
            dry_run=args.dry_run,
            progress=progress,
        )
    )
    if not args.json and sys.stderr.isatty():
        print(file=sys.stderr)
    print(json.dumps(result.as_json(), default=str) if args.json else render(result))
    return 1 if result.error_rows else 0


async def replay(
    settings: Settings,
    table: str,
    *,
    since: dt.datetime | None = None,
    from_offset: int | None = None,
    until: dt.datetime | None = None,
    topic: Literal["raw", "deduped"] = "deduped",
    to_table: str | None = None,
    skip_dedup: bool = False,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay ``table``'s topic into BigQuery (naive datetimes are local time).

    Raises :class:`ConfigError` for arguments that do not fit the config (before reading
    anything), :class:`SinkError` when the table's BigQuery table does not exist.
    """
    selection = settings.source.selection
    if not selection.selects(table):
        raise ConfigError(f"--table {table!r} is not selected by source.tables")
    if (since is None) == (from_offset is None):
        raise ConfigError("give exactly one of --since and --from-offset")
    if from_offset is not None and from_offset < 0:
        raise ConfigError("--from-offset must be 0 or more")
    if topic not in ("raw", "deduped"):
        raise ConfigError(f"--topic must be raw or deduped, not {topic!r}")
    if since is not None and until is not None and until <= since:
        raise ConfigError("--until must be later than --since")
    spec = TableSpec(table, None, table, ())
    if to_table is not None and (
        not _SAFE_NAME.match(to_table) or len(to_table) > 1024 - len("_latest")
    ):
        raise ConfigError(
            "--to-table: expected a BigQuery table name of at most 1017 letters, digits and "
            "underscores, not starting with a digit"
        )
    own = {TableSpec(t, None, t, ()).bq_table for t in selection.names}
    if to_table in (own - {spec.bq_table}) | {ERROR_RECORDS_TABLE, SNAPSHOTS_TABLE} or (
        to_table is not None and to_table != spec.bq_table and selection.selects(to_table)
    ):
        raise ConfigError(f"--to-table {to_table!r} is another of ctstream's tables")
    names = TopicNames(settings.kafka.topic_prefix)
    topic_name = names.raw(spec) if topic == "raw" else names.deduped(spec)
    job = TopicReplay(
        settings,
        ReplayResult(table, topic_name, to_table or spec.bq_table, dry_run),
        skip_dedup=skip_dedup,
        since_ms=None if since is None else int(since.timestamp() * 1000),
        until_ms=None if until is None else int(until.timestamp() * 1000),
    )
    started = time.monotonic()
    try:
        await job.prepare()
        await job.read(from_offset, progress)
    finally:
        await job.close()
    job.result.seconds = round(time.monotonic() - started, 3)
    return job.result
