"""``ctstream sqlite track|untrack|cleanup``: the SQLite Change Tracking stand-in.

Each subcommand works on one database file and prints one line per table it touched;
each exits 0 (a failure raises, and the CLI reports it).
"""

from __future__ import annotations

import argparse

from ctstream.source.sqlite_tracking import cleanup_database, track_database, untrack_database


def track(args: argparse.Namespace) -> int:
    """``ctstream sqlite track DB TABLE… [--retention D]``: turn change tracking on."""
    tracked = track_database(args.db, args.tables, retention_seconds=args.retention)
    for t in tracked:
        print(
            f"tracking {t.table_name!r}: key ({', '.join(t.key_columns)}), "
            f"changes in {t.change_table!r}, min valid version {t.min_valid_version}"
        )
    return 0


def untrack(args: argparse.Namespace) -> int:
    """``ctstream sqlite untrack DB TABLE…``: turn change tracking off."""
    for table, was in untrack_database(args.db, args.tables).items():
        print(f"{table!r}: change tracking {'turned off' if was else 'was not on'}")
    return 0


def cleanup(args: argparse.Namespace) -> int:
    """``ctstream sqlite cleanup DB``: drop change rows past retention."""
    removed = cleanup_database(args.db)
    for table, count in removed.items():
        print(f"{table!r}: {count} change rows past retention removed")
    return 0
