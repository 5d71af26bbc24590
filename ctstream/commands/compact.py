"""``ctstream compact``: merge change tables into ``<t>_current`` now, or rebuild them.

The leader of the running workers merges every ``bigquery.compact_interval`` anyway; this
command is for catching up after the workers were down longer than
``bigquery.compact_horizon`` (the latest-state view then says so), and ``--rebuild`` for
repairing ``<t>_current`` from the change log. A merge running at the same moment on the
leader may make one of them fail with a concurrent-update error; run the command again.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from ctstream.bigquery.compaction import MergeResult, compact, rebuild
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.commands.bigquery_tables import existing_table
from ctstream.errors import ConfigError
from ctstream.settings import Settings, load_settings
from ctstream.source.reader import SourceReader, selected_tables


def run(args: argparse.Namespace) -> int:
    """``ctstream compact --config FILE [--table T]… [--rebuild] [--json]``."""
    settings = load_settings(args.config)
    tables = args.table or asyncio.run(selected_tables(settings.source))
    unknown = [t for t in tables if not settings.source.selection.selects(t)]
    if unknown:
        raise ConfigError(f"--table {unknown[0]!r} is not in source.tables of {args.config}")
    results = asyncio.run(compact_tables(settings, tables, args.rebuild))
    if args.json:
        print(json.dumps([r.as_json() for r in results]))
    else:
        for result in results:
            print(render(result, args.rebuild))
    return 0


def render(result: MergeResult, rebuilt: bool) -> str:
    what = "rebuilt from its change log" if rebuilt else "merged"
    return (
        f"{result.table}_current: {what} up to {result.merged_to:%Y-%m-%d %H:%M:%S} UTC, "
        f"{result.rows_merged:,} rows inserted or updated, {result.rows_pruned:,} removed "
        f"as older than the newest snapshot, in {result.seconds:.1f} s"
    )


async def compact_tables(settings: Settings, tables: list[str], rebuilt: bool) -> list[MergeResult]:
    """Merge (or rebuild) each table and its restricted copy, one after another."""
    reader = SourceReader(settings.source)
    writer = BigQueryWriter(settings.bigquery, timeout=settings.sink.request_timeout)
    results = []
    try:
        for name in tables:
            spec = await reader.describe(name)
            specs = [spec, spec.restricted_copy()] if spec.restricted else [spec]
            for each in specs:
                await existing_table(writer, f"{each.bq_table}_current")
                run = rebuild if rebuilt else compact
                results.append(await run(writer, each))
    finally:
        await reader.close()
        writer.close()
    return results
