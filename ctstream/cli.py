"""The ``ctstream`` command line: argument parsing only.

:func:`build_parser` defines every command, option and help text; :func:`main` parses
``argv`` and runs the command's handler from :mod:`ctstream.commands` (imported only
then). Exit status: the handler's, 2 for a :class:`ConfigError` (``ctstream: <message>``
on stderr), 1 for any other :class:`CtstreamError` (``ctstream: error: <message>``), 130
on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from ctstream import __version__
from ctstream.errors import ConfigError, CtstreamError

_DESCRIPTION = """\
ctstream moves row changes from SQL Server (Change Tracking) into BigQuery in seconds:
pollers read changes into Kafka, a Faust table drops duplicates by unique id within a
window, and sinks write batches to BigQuery, slowing down instead of dropping data.
"""


def _command(module: str, function: str = "run") -> Callable[[argparse.Namespace], int]:
    """The handler ``ctstream.commands.<module>.<function>``, imported only when the command
    runs: ``--help`` stays quick, and a worker marks the DataFrame libraries missing
    before anything imports google-cloud-bigquery."""

    def handle(args: argparse.Namespace) -> int:
        run: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(f"ctstream.commands.{module}"), function
        )
        return run(args)

    return handle


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``ctstream`` command; each sets ``func`` to its handler."""
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
    worker.set_defaults(func=_command("worker"))

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
    demo.set_defaults(func=_command("demo"))

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
    stack.set_defaults(func=_command("stack"))

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
    track.set_defaults(func=_command("sqlite", "track"))
    untrack = sqlite_sub.add_parser(
        "untrack",
        help="turn off change tracking for tables",
        description="Drop the tables' triggers and change tables (ALTER TABLE … DISABLE "
        "CHANGE_TRACKING). A running pipeline notices within source.discover_interval and "
        "stops polling them; their data in BigQuery stays.",
    )
    untrack.add_argument("db", help="SQLite database file")
    untrack.add_argument("tables", nargs="+", metavar="TABLE")
    untrack.set_defaults(func=_command("sqlite", "untrack"))
    cleanup = sqlite_sub.add_parser(
        "cleanup",
        help="drop change rows past retention (SQL Server's auto cleanup)",
        description="Remove change rows older than each table's retention and raise its "
        "minimum valid version, as SQL Server's change tracking cleanup does. A poller "
        "whose saved version falls below it must re-snapshot the table.",
    )
    cleanup.add_argument("db", help="SQLite database file")
    cleanup.set_defaults(func=_command("sqlite", "cleanup"))

    snapshot = sub.add_parser(
        "snapshot",
        help="re-read whole tables (a snapshot), then continue change tracking",
        description="Ask the running pipeline to snapshot tables: the worker that polls a "
        "table reads all its rows in key order, in chunks of source.snapshot_chunk_rows "
        "(each a short read transaction), between the table's change tracking polls, and "
        "sends them as 'S' events. Progress is saved after each chunk, so a crash or "
        "rebalance resumes at the next chunk. Once BigQuery holds every row, the snapshot "
        "is recorded (_ctstream_snapshots) and the latest view drops keys it did not see. "
        "The request goes through Kafka, so it is kept until a worker runs it (workers "
        "need not be running now). Use it after a retention overrun or TRUNCATE in "
        "snapshot_mode never/initial, or to backfill. --pause, --resume and --cancel "
        "control a snapshot under way; follow it with --wait or `ctstream status`.",
    )
    snapshot.add_argument("--config", "-c", required=True, help="TOML config file")
    snapshot.add_argument(
        "--table", "-t", action="append", default=[], help="a table of source.tables (repeatable)"
    )
    snapshot.add_argument("--all", action="store_true", help="every table of source.tables")
    snapshot.add_argument(
        "--reason", default="requested by ctstream snapshot", help="noted in logs and BigQuery"
    )
    snapshot.add_argument(
        "--wait",
        action="store_true",
        help="follow the requested snapshots (chunks, rows, rate) until each is recorded; "
        "Ctrl-C stops waiting, not the snapshots",
    )
    control = snapshot.add_mutually_exclusive_group()
    control.add_argument(
        "--pause",
        action="store_const",
        const="pause",
        dest="control",
        help="stop reading chunks of the snapshot under way (polls go on); kept across restarts",
    )
    control.add_argument(
        "--resume",
        action="store_const",
        const="resume",
        dest="control",
        help="go on reading a paused snapshot from its next chunk",
    )
    control.add_argument(
        "--cancel",
        action="store_const",
        const="cancel",
        dest="control",
        help="drop the snapshot under way (or requested): rows it wrote stay, nothing is "
        "recorded, so the latest view hides nothing for it",
    )
    snapshot.set_defaults(func=_command("snapshot"), control=None)

    redrive = sub.add_parser(
        "redrive",
        help="send rows parked in _error_records again, once the cause is fixed",
        description="Select error records of the given tables and time range (the newest "
        "per unique id and table it was parked from), read each change back from its kept "
        "payload (or from Kafka, when the payload was too large to keep), check it against "
        "the current schema of the BigQuery table it was parked from (a restricted copy's "
        "record goes to the restricted copy) and write it with insertId = its unique id. "
        "Rows that still do not fit are "
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
    redrive.set_defaults(func=_command("redrive"))

    compact = sub.add_parser(
        "compact",
        help="merge change tables into <table>_current now, or rebuild it",
        description="Merge each table's change log (and its restricted copy's) into "
        "<table>_current up to bigquery.compact_settle ago, as the workers' leader does "
        "every bigquery.compact_interval: to catch up after the workers were down longer "
        "than bigquery.compact_horizon. --rebuild empties <table>_current and merges the "
        "whole change log again (rows whose change-log partitions expired cannot come "
        "back); the latest-state view stays right meanwhile.",
    )
    compact.add_argument("--config", "-c", required=True, help="TOML config file")
    compact.add_argument(
        "--table", "-t", action="append", default=[], help="only this table (repeatable)"
    )
    compact.add_argument(
        "--rebuild", action="store_true", help="rebuild <table>_current from the change log"
    )
    compact.add_argument("--json", action="store_true", help="print the results as JSON")
    compact.set_defaults(func=_command("compact"))

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
    replay.set_defaults(func=_command("replay"))

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
    status.set_defaults(func=_command("status"))

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
    doctor.set_defaults(func=_command("doctor"))

    config = sub.add_parser(
        "config",
        help="work with config files: check one without connecting to anything",
        description="Tools for ctstream's TOML config file and its CTSTREAM_ environment "
        "(docs/configuration.md).",
    )
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = config_sub.add_parser(
        "check",
        help="validate a config file and the environment; print the effective settings",
        description="Read the config file and the CTSTREAM_ environment variables as a "
        "worker would, without connecting to anything. Valid: print the effective settings "
        "(environment over file over defaults; durations in seconds) with every secret "
        "masked, and exit 0. Invalid: print every problem, one line each as 'key: problem "
        "(expected ...)', and exit 2. Secrets (source.dsn passwords, source.mask_key, "
        "kafka.sasl_password, web.token) are never printed.",
    )
    check.add_argument("--config", "-c", required=True, help="TOML config file")
    check.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object: {"valid", "settings" (masked, or null), "problems": '
        '[{"key", "message"}], "environment" (names of the CTSTREAM_ variables set)}',
    )
    check.set_defaults(func=_command("config"))
    return parser


# Commands that set up logging of their own (a worker's log, the demo's progress).
_LOGGING_COMMANDS = frozenset({"worker", "demo", "stack"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ctstream`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in _LOGGING_COMMANDS:
        # These report a failed Kafka request themselves, in one line; aiokafka would
        # print its own error about the same connection first.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): nothing more can be printed.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
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
