"""``ctstream doctor``: is the source healthy for Change Tracking, and is ctstream keeping up?

Each finding has a level (ok, warn, error), the table it is about (or none), what was
seen, and what to do. Checks: the ODBC driver, change tracking and snapshot isolation on
the database, every configured table tracked with a primary key, the saved version
against the minimum valid version, the age of the oldest change not yet polled against
the retention, and whether Change Tracking's own cleanup is falling behind. A check that
cannot run is a finding; the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from aiokafka.errors import KafkaError

from ctstream.commands.saved_state import saved_states
from ctstream.errors import CtstreamError, SourcePermissionDenied
from ctstream.models import SourceState, TableSpec
from ctstream.settings import Settings, load_settings
from ctstream.source.catalog import DatabaseInfo, TableHealth, enable_tracking_advice
from ctstream.source.odbc_driver import describe_driver, resolve_driver
from ctstream.source.reader import SourceReader, selected_tables


def run(args: argparse.Namespace) -> int:
    """``ctstream doctor --config FILE [--json]``: print the findings; 1 when any is an
    error, else 0."""
    settings = load_settings(args.config)
    findings = asyncio.run(run_doctor(settings))
    if args.json:
        print(json.dumps(as_json(findings)))
    else:
        print(render(findings))
    return 1 if any(f.level == "error" for f in findings) else 0


Level = Literal["ok", "warn", "error"]
# Cleanup may lag retention by this much before it counts as behind (it runs in the
# background, every 30 minutes on SQL Server).
CLEANUP_MARGIN_S = 6 * 3600.0
LAG_WARN_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: its level, the table (None: the database), what was seen and
    what to do about it."""

    level: Level
    check: str
    table: str | None
    detail: str
    advice: str = ""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def database_findings(dialect: str, info: DatabaseInfo) -> list[Finding]:
    found = []
    if info.change_tracking_on:
        found.append(Finding("ok", "change_tracking", None, "change tracking is on"))
    else:
        found.append(
            Finding(
                "error",
                "change_tracking",
                None,
                "change tracking is off for the database",
                enable_tracking_advice(dialect),
            )
        )
    if info.snapshot_isolation_on is not None:
        if info.snapshot_isolation_on:
            found.append(Finding("ok", "snapshot_isolation", None, "snapshot isolation is on"))
        else:
            found.append(
                Finding(
                    "error",
                    "snapshot_isolation",
                    None,
                    "snapshot isolation is off: polls cannot read one consistent version",
                    "ALTER DATABASE <db> SET ALLOW_SNAPSHOT_ISOLATION ON",
                )
            )
    if info.auto_cleanup_on is False:
        found.append(
            Finding(
                "warn",
                "auto_cleanup",
                None,
                "change tracking auto cleanup is off: side tables and syscommittab grow "
                "without bound and can slow writers",
                "ALTER DATABASE <db> SET CHANGE_TRACKING (AUTO_CLEANUP = ON)",
            )
        )
    if info.retention_seconds is not None:
        found.append(
            Finding("ok", "retention", None, f"retention is {_duration(info.retention_seconds)}")
        )
    return found


def table_findings(
    spec: TableSpec,
    state: SourceState | None,
    health: TableHealth,
    retention_s: float | None,
    mode: str,
) -> list[Finding]:
    name = spec.name
    found: list[Finding] = []
    saved = state.version if state else None
    if health.min_valid_version is None:
        return [
            Finding(
                "error",
                "tracked",
                name,
                "the table is no longer change-tracked",
                f"ALTER TABLE {name} ENABLE CHANGE_TRACKING, then ctstream snapshot --table {name}",
            )
        ]
    if state is not None and state.snapshot_requested:
        found.append(
            Finding(
                "warn",
                "snapshot",
                name,
                f"a snapshot is requested and not finished: {state.snapshot_requested}",
                "it runs on the worker that polls this table; watch `/api/status/`",
            )
        )
    if saved is None:
        what = "it will be snapshotted" if mode != "never" else "it starts at min valid"
        found.append(
            Finding("ok", "saved_version", name, f"not polled yet; {what} (snapshot_mode {mode})")
        )
    elif saved < health.min_valid_version:
        advice = (
            "the worker re-snapshots it automatically (snapshot_mode when_needed)"
            if mode == "when_needed"
            else f"run `ctstream snapshot --config FILE --table {name}`"
        )
        found.append(
            Finding(
                "error",
                "saved_version",
                name,
                f"saved version {saved} is below the minimum valid version "
                f"{health.min_valid_version}: changes were cleaned up before ctstream read them",
                advice,
            )
        )
    else:
        found.append(
            Finding(
                "ok",
                "saved_version",
                name,
                f"saved version {saved} ≥ minimum valid version {health.min_valid_version} "
                f"(current {health.current_version})",
            )
        )
    retention = health.retention_seconds or retention_s
    age = health.oldest_unpolled_change_age_s
    if saved is not None and age is not None and retention:
        level: Level = "ok"
        advice = ""
        if age >= retention:
            level, advice = "error", "changes are being cleaned up before they are read"
        elif age >= retention * LAG_WARN_FRACTION:
            level = "warn"
            advice = "polling is far behind: check the workers (`/api/status/`) and their logs"
        found.append(
            Finding(
                level,
                "poll_lag",
                name,
                f"oldest change not yet polled is {_duration(age)} old; "
                f"retention is {_duration(retention)}",
                advice,
            )
        )
    elif saved is not None:
        found.append(Finding("ok", "poll_lag", name, "no change waits to be polled"))
    return found


def cleanup_finding(backlog_s: float | None, retention_s: float | None) -> Finding | None:
    if backlog_s is None or retention_s is None:
        return None
    limit = retention_s + CLEANUP_MARGIN_S
    if backlog_s <= limit:
        return Finding(
            "ok",
            "cleanup_backlog",
            None,
            f"oldest commit kept by change tracking is {_duration(backlog_s)} old",
        )
    return Finding(
        "error",
        "cleanup_backlog",
        None,
        f"change tracking cleanup is behind: the oldest commit it keeps is "
        f"{_duration(backlog_s)} old, retention is {_duration(retention_s)}; a growing "
        "syscommittab and side tables slow down and can block writers",
        "check that auto cleanup runs (sys.dm_tran_commit_table, the error log); run "
        "EXEC sys.sp_flush_CT_internal_table_on_demand for the largest side tables",
    )


async def run_doctor(settings: Settings, reader: SourceReader | None = None) -> list[Finding]:
    """Every check that can run: the source, Kafka's saved versions, each table, cleanup.

    A check that cannot run is a finding, and the others still run: an unreachable source
    still leaves the Kafka check, a missing permission (a warning with the GRANT that gives
    it) still leaves the other checks.
    """
    reader = reader or SourceReader(settings.source)
    try:
        found, info = await _database_checks(settings, reader)
        states = await _saved_states(settings, found)
        # Without change tracking no table can be tracked: its finding says what to run.
        if info is not None and info.change_tracking_on:
            found += await _table_checks(settings, reader, info, states)
    finally:
        await reader.close()
    return found


def driver_finding(dialect: str, dsn: str) -> Finding:
    """Which ODBC driver opens ``dsn`` (never the DSN itself: it may hold a password)."""
    try:
        if dialect == "mssql":
            resolve_driver(dsn)
    except CtstreamError as exc:
        return Finding("error", "odbc_driver", None, str(exc))
    return Finding("ok", "odbc_driver", None, f"driver: {describe_driver(dsn)}")


async def _database_checks(
    settings: Settings, reader: SourceReader
) -> tuple[list[Finding], DatabaseInfo | None]:
    dialect = settings.source.dialect
    found = [driver_finding(dialect, settings.source.dsn.get_secret_value())]
    try:
        info = await reader.database_info()
    except SourcePermissionDenied as exc:
        return [*found, Finding("error", "permission", None, str(exc), exc.grant)], None
    except CtstreamError as exc:
        return [*found, Finding("error", "connect", None, str(exc), "check source.dsn")], None
    return [*found, *database_findings(dialect, info)], info


async def _saved_states(settings: Settings, found: list[Finding]) -> dict[str, SourceState] | None:
    try:
        return await saved_states(settings)
    except (TimeoutError, KafkaError, OSError) as exc:
        found.append(
            Finding(
                "warn",
                "saved_versions",
                None,
                f"cannot read the saved versions from Kafka at "
                f"{settings.kafka.bootstrap_servers} ({type(exc).__name__})",
                "check kafka.bootstrap_servers and that the brokers are up; lag checks are skipped",
            )
        )
        return None


async def _table_checks(
    settings: Settings,
    reader: SourceReader,
    info: DatabaseInfo,
    states: dict[str, SourceState] | None,
) -> list[Finding]:
    found: list[Finding] = []
    try:
        names = await selected_tables(settings.source, reader)
    except CtstreamError as exc:
        found.append(Finding("error", "tables", None, str(exc), "check source.tables"))
        names = []
    denied: SourcePermissionDenied | None = None
    for name in names:
        try:
            spec = await reader.describe(name)
        except SourcePermissionDenied as exc:
            found.append(Finding("error", "permission", name, str(exc), exc.grant))
            continue
        except CtstreamError as exc:
            found.append(Finding("error", "tracked", name, str(exc)))
            continue
        found.append(Finding("ok", "tracked", name, "change-tracked, with a primary key"))
        state = None if states is None else states.get(name)
        try:
            health = await reader.table_health(spec, state.version if state else None)
        except CtstreamError as exc:
            found.append(Finding("error", "health", name, str(exc)))
            continue
        denied = denied or health.age_denied
        mode = settings.source.snapshot_mode_of(name)
        found += table_findings(spec, state, health, info.retention_seconds, mode)
    try:
        backlog = await reader.cleanup_backlog_s()
    except SourcePermissionDenied as exc:
        denied = denied or exc
    except CtstreamError as exc:
        found.append(Finding("error", "cleanup_backlog", None, str(exc)))
    else:
        cleanup = cleanup_finding(backlog, info.retention_seconds)
        if cleanup is not None:
            found.append(cleanup)
    if denied is not None:
        found.append(
            Finding(
                "warn",
                "permission",
                None,
                "the login may not read sys.dm_tran_commit_table, so the age of the oldest "
                "change not yet polled and the cleanup backlog are not checked "
                "(workers do not need it)",
                denied.grant,
            )
        )
    return found


def render(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        where = f" [{f.table}]" if f.table else ""
        lines.append(f"{f.level.upper():<5} {f.check}{where}: {f.detail}")
        if f.advice:
            lines.append(f"      → {f.advice}")
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warn" for f in findings)
    lines.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)


def as_json(findings: list[Finding]) -> dict[str, Any]:
    return {
        "ok": not any(f.level == "error" for f in findings),
        "findings": [asdict(f) for f in findings],
    }
