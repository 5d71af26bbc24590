"""The ``ctstream`` command."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ctstream import __version__
from ctstream.errors import ConfigError, CtstreamError

_DESCRIPTION = """\
ctstream moves row changes from SQL Server (Change Tracking) into BigQuery in seconds:
pollers read changes into Kafka, a Faust table drops duplicates by unique id within a
window, and sinks write batches to BigQuery, slowing down instead of dropping data.
"""


# google-cloud-bigquery (and its storage client) import pyarrow and numpy whenever they are
# installed (the local emulator needs them), for DataFrame reads a worker never makes: about
# 36 MB of a worker's RSS. Marked missing, the clients take their no-pyarrow paths.
_UNUSED_IN_A_WORKER = ("pyarrow", "numpy", "pandas")


def _skip_dataframe_libraries() -> None:
    for name in _UNUSED_IN_A_WORKER:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def _cmd_worker(args: argparse.Namespace) -> int:
    _skip_dataframe_libraries()
    from ctstream.settings import load_settings
    from ctstream.worker import run_worker

    settings = load_settings(args.config)
    return run_worker(settings, loglevel=args.loglevel)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ctstream.commands.demo import DemoOptions, run_demo

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


def _cmd_stack(args: argparse.Namespace) -> int:
    from ctstream.devstack import local_stack

    base = Path(args.dir)
    if args.action == "up":
        info, already = local_stack.stack_up(base)
        data = {
            "kafka_bootstrap": info.kafka_bootstrap,
            "bigquery_endpoint": info.bigquery_endpoint,
            "bigquery_grpc": info.bigquery_grpc,
            "already_running": already,
        }
        if args.json:
            print(json.dumps(data))
        else:
            state = "already running" if already else "started"
            print(f"local stack {state} (state in {local_stack.state_path(base)})")
            print(f"  kafka_bootstrap    {info.kafka_bootstrap}")
            print(f"  bigquery_endpoint  {info.bigquery_endpoint}")
        return 0
    stopped = local_stack.stack_down(base)
    if args.json:
        print(json.dumps({"stopped": stopped}))
    else:
        print("local stack stopped" if stopped else "no local stack was running")
    return 0


def _cmd_sqlite_track(args: argparse.Namespace) -> int:
    from ctstream.source.sqlite_tracking import track_database

    retention = args.retention
    tracked = track_database(args.db, args.tables, retention_seconds=retention)
    for t in tracked:
        print(
            f"tracking {t.table_name!r}: key ({', '.join(t.key_columns)}), "
            f"changes in {t.change_table!r}, min valid version {t.min_valid_version}"
        )
    return 0


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from ctstream.commands.snapshot import request_snapshots
    from ctstream.settings import load_settings
    from ctstream.source.reader import selected_tables

    settings = load_settings(args.config)
    tables = asyncio.run(selected_tables(settings.source)) if args.all else args.table
    if not tables:
        raise ConfigError("name the tables to snapshot with --table T (repeatable) or --all")
    unknown = [t for t in tables if not settings.source.selection.selects(t)]
    if unknown:
        raise ConfigError(
            f"--table {unknown[0]!r} is not in source.tables of {args.config} "
            f"({', '.join(settings.source.tables)})"
        )
    asyncio.run(request_snapshots(settings, tables, args.reason))
    for table in tables:
        print(f"snapshot of {table!r} requested ({args.reason})")
    print("the worker that polls each table runs it; follow it in the worker log or /api/status/")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ctstream.commands.doctor import as_json, render, run_doctor
    from ctstream.settings import load_settings

    settings = load_settings(args.config)
    findings = asyncio.run(run_doctor(settings))
    if args.json:
        print(json.dumps(as_json(findings)))
    else:
        print(render(findings))
    return 1 if any(f.level == "error" for f in findings) else 0


def _cmd_redrive(args: argparse.Namespace) -> int:
    from ctstream.commands.redrive import redrive, render
    from ctstream.settings import load_settings
    from ctstream.source.reader import selected_tables

    settings = load_settings(args.config)
    tables = args.table or asyncio.run(selected_tables(settings.source))
    unknown = [t for t in tables if not settings.source.selection.selects(t)]
    if unknown:
        raise ConfigError(f"--table {unknown[0]!r} is not in source.tables of {args.config}")
    result = asyncio.run(redrive(settings, tables, args.since, args.until, args.dry_run))
    print(json.dumps(result.as_json()) if args.json else render(result, args.dry_run))
    return 0 if not (result.still_failing or result.unrecoverable) else 1


def _cmd_replay(args: argparse.Namespace) -> int:
    from ctstream.commands.replay import render, replay
    from ctstream.settings import load_settings

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


def _cmd_status(args: argparse.Namespace) -> int:
    from ctstream.commands.status import collect_status, render
    from ctstream.settings import load_settings

    settings = load_settings(args.config)
    status = asyncio.run(collect_status(settings, args.worker))
    print(json.dumps(status, default=str) if args.json else render(status))
    return 0


def _cmd_sqlite_untrack(args: argparse.Namespace) -> int:
    from ctstream.source.sqlite_tracking import untrack_database

    for table, was in untrack_database(args.db, args.tables).items():
        print(f"{table!r}: change tracking {'turned off' if was else 'was not on'}")
    return 0


def _cmd_sqlite_cleanup(args: argparse.Namespace) -> int:
    from ctstream.source.sqlite_tracking import cleanup_database

    removed = cleanup_database(args.db)
    for table, count in removed.items():
        print(f"{table!r}: {count} change rows past retention removed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ctstream.settings import parse_duration

    def duration(value: str) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def timestamp(value: str) -> dt.datetime:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not an ISO-8601 time, e.g. 2026-11-22T10:00:00Z"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

    parser = argparse.ArgumentParser(
        prog="ctstream",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ctstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = sub.add_parser(
        "worker",
        help="run a pipeline worker (poll, dedup, sink); several may run at once",
        description="Run one worker. Workers of one config share the work through Kafka "
        "consumer groups; each needs its own web port (set CTSTREAM_WEB__PORT).",
    )
    worker.add_argument("--config", "-c", required=True, help="TOML config file")
    worker.add_argument(
        "--loglevel",
        "-l",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="log level (default: app.log_level from the config); the loggers named in "
        "app.log_levels keep theirs",
    )
    worker.set_defaults(func=_cmd_worker)

    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline on the embedded local stack and check the result",
        description="Start a local Kafka-compatible broker and BigQuery emulator, create a "
        "change-tracked SQLite source, drive inserts/updates/deletes through the pipeline "
        "and compare every source table with its BigQuery latest-state view. Progress goes "
        "to stderr; exit status 0 only when nothing differs.",
    )
    demo.add_argument("--rows", type=int, default=20_000, help="changes to make (default 20000)")
    demo.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    demo.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    demo.add_argument(
        "--collectors",
        type=int,
        default=2,
        choices=[1, 2],
        help="2 (default) adds a second, redundant collector like the seed system's, "
        "so every change reaches Kafka twice and dedup has work to do",
    )
    demo.add_argument(
        "--timeout",
        type=duration,
        default=300.0,
        help="how long to wait for BigQuery to catch up (default 300s)",
    )
    demo.add_argument("--workdir", help="keep the demo's files here (default: a temp dir)")
    demo.add_argument("--keep", action="store_true", help="do not delete the work dir")
    demo.set_defaults(func=_cmd_demo)

    stack = sub.add_parser(
        "stack",
        help="start or stop the local broker and BigQuery emulator",
        description="Start (up) or stop (down) the embedded local stack: a Tansu "
        "Kafka-compatible broker and bqemulator, on free loopback ports. `up` prints their "
        "addresses and leaves them running; `down` stops them.",
    )
    stack.add_argument("action", choices=["up", "down"])
    stack.add_argument(
        "--json", action="store_true", help="print kafka_bootstrap and bigquery_endpoint as JSON"
    )
    stack.add_argument(
        "--dir", default=".ctstream", help="where the state file and logs live (default .ctstream)"
    )
    stack.set_defaults(func=_cmd_stack)

    sqlite = sub.add_parser(
        "sqlite",
        help="the SQLite Change Tracking stand-in",
        description="Tools for the SQLite source that stands in for SQL Server.",
    )
    sqlite_sub = sqlite.add_subparsers(dest="sqlite_command", required=True, metavar="COMMAND")
    track = sqlite_sub.add_parser(
        "track",
        help="turn on change tracking for tables",
        description="Install triggers that keep a change table per table with SQL Server "
        "Change Tracking's semantics (net changes, one row per key, a database-wide "
        "version, a minimum valid version advanced by cleanup). Tables need a primary key.",
    )
    track.add_argument("db", help="SQLite database file")
    track.add_argument("tables", nargs="+", metavar="TABLE")
    track.add_argument(
        "--retention",
        type=duration,
        default=2 * 86400.0,
        help="how long changes are kept before cleanup may drop them (default 2d, as SQL Server)",
    )
    track.set_defaults(func=_cmd_sqlite_track)
    untrack = sqlite_sub.add_parser(
        "untrack",
        help="turn off change tracking for tables",
        description="Drop the tables' triggers and change tables (ALTER TABLE … DISABLE "
        "CHANGE_TRACKING). A running pipeline notices within source.discover_interval and "
        "stops polling them; their data in BigQuery stays.",
    )
    untrack.add_argument("db", help="SQLite database file")
    untrack.add_argument("tables", nargs="+", metavar="TABLE")
    untrack.set_defaults(func=_cmd_sqlite_untrack)
    cleanup = sqlite_sub.add_parser(
        "cleanup",
        help="drop change rows past retention (SQL Server's auto cleanup)",
        description="Remove change rows older than each table's retention and raise its "
        "minimum valid version, as SQL Server's change tracking cleanup does. A poller "
        "whose saved version falls below it must re-snapshot the table.",
    )
    cleanup.add_argument("db", help="SQLite database file")
    cleanup.set_defaults(func=_cmd_sqlite_cleanup)

    snapshot = sub.add_parser(
        "snapshot",
        help="re-read whole tables (a snapshot), then continue change tracking",
        description="Ask the running pipeline to snapshot tables: the worker that polls a "
        "table reads all its rows at one version in one transaction, sends them as 'S' "
        "events, records the snapshot in BigQuery (_ctstream_snapshots) and continues "
        "change tracking from that version. The request goes through Kafka, so it is kept "
        "until a worker runs it (workers need not be running now). Use it after a retention "
        "overrun or TRUNCATE in snapshot_mode never/initial, or to backfill.",
    )
    snapshot.add_argument("--config", "-c", required=True, help="TOML config file")
    snapshot.add_argument(
        "--table", "-t", action="append", default=[], help="a table of source.tables (repeatable)"
    )
    snapshot.add_argument("--all", action="store_true", help="every table of source.tables")
    snapshot.add_argument(
        "--reason", default="requested by ctstream snapshot", help="noted in logs and BigQuery"
    )
    snapshot.set_defaults(func=_cmd_snapshot)

    redrive = sub.add_parser(
        "redrive",
        help="send rows parked in _error_records again, once the cause is fixed",
        description="Select error records (the newest per unique id) of the given tables and "
        "time range, read each change back from its kept payload (or from Kafka, when the "
        "payload was too large to keep), check it against the BigQuery table's current "
        "schema and write it with insertId = its unique id. Rows that still do not fit are "
        "listed with the reason and stay in _error_records. Exit status 1 when any row "
        "could not be redriven.",
    )
    redrive.add_argument("--config", "-c", required=True, help="TOML config file")
    redrive.add_argument(
        "--table", "-t", action="append", default=[], help="only this table (repeatable)"
    )
    redrive.add_argument("--since", type=timestamp, help="error_time at or after (ISO-8601)")
    redrive.add_argument("--until", type=timestamp, help="error_time before (ISO-8601)")
    redrive.add_argument("--dry-run", action="store_true", help="check the rows, send nothing")
    redrive.add_argument("--json", action="store_true", help="print the result as JSON")
    redrive.set_defaults(func=_cmd_redrive)

    replay = sub.add_parser(
        "replay",
        help="re-read a table's topic and write it to BigQuery again (backfill, repair)",
        description="Re-read a table's deduped (or raw) topic on every partition from a time "
        "or an offset, up to the end as of now (or --until), and write the events through "
        "the sink's checks: validation, insertId = unique id, retries, bad rows to "
        "_error_records. Events are de-duplicated by unique id within the replay, so "
        "replaying twice repeats no key in the latest-state view. --to-table builds a "
        "backfill table (with its _latest view and _at function) instead of writing to the "
        "table's own. Exit status 1 when any row was parked as an error.",
    )
    replay.add_argument("--config", "-c", required=True, help="TOML config file")
    replay.add_argument("--table", "-t", required=True, help="a table of source.tables")
    start = replay.add_mutually_exclusive_group(required=True)
    start.add_argument("--since", type=timestamp, help="from this time (ISO-8601)")
    start.add_argument("--from-offset", type=int, help="from this offset on every partition")
    replay.add_argument("--until", type=timestamp, help="up to (not including) this time")
    replay.add_argument(
        "--topic", choices=["raw", "deduped"], default="deduped", help="default: deduped"
    )
    replay.add_argument("--to-table", help="write into this BigQuery table instead")
    replay.add_argument(
        "--skip-dedup", action="store_true", help="keep repeated unique ids (not advised)"
    )
    replay.add_argument("--dry-run", action="store_true", help="read and check, write nothing")
    replay.add_argument("--json", action="store_true", help="print the result as JSON")
    replay.set_defaults(func=_cmd_replay)

    status = sub.add_parser(
        "status",
        help="the pipeline's state per table: versions, lag, error rows, snapshots",
        description="Per table: the saved Change Tracking version (from Kafka), the "
        "source's current version and the lag between them, the consumer group's lag on "
        "the raw and deduped topics, error rows and the last snapshot (from BigQuery). "
        "With --worker URL (repeatable, e.g. http://127.0.0.1:6066) the live counters of "
        "running workers are added up as well.",
    )
    status.add_argument("--config", "-c", required=True, help="TOML config file")
    status.add_argument(
        "--worker", action="append", default=[], help="a worker's web address (repeatable)"
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=_cmd_status)

    doctor = sub.add_parser(
        "doctor",
        help="check the source's change tracking health and how far ctstream lags",
        description="Check: change tracking and snapshot isolation on the database; every "
        "configured table tracked with a primary key; each table's saved version against "
        "its minimum valid version; the age of the oldest unpolled change against the "
        "retention; whether change tracking cleanup is behind (SQL Server: the oldest "
        "commit in sys.dm_tran_commit_table). Each finding says what to do. Exit status 1 "
        "when any finding is an error.",
    )
    doctor.add_argument("--config", "-c", required=True, help="TOML config file")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.set_defaults(func=_cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"ctstream: {exc}", file=sys.stderr)
        return 2
    except CtstreamError as exc:
        print(f"ctstream: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
