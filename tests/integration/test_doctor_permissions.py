"""doctor with a login that lacks a permission: a finding with the GRANT, the rest still run.

SQLite has no permissions, so the source is the real SQLite stand-in behind a dialect
whose permission-guarded queries fail as SQL Server fails them (the driver's message says
"permission was denied"); everything else is the real dialect.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pyodbc
import pytest

from ctstream.commands.doctor import run_doctor
from ctstream.errors import SourcePermissionDenied, SourceUnavailable
from ctstream.models import TableSpec
from ctstream.settings import load_settings
from ctstream.source.catalog import SERVER_STATE_GRANT, query_error
from ctstream.source.dialects.base import Statement
from ctstream.source.dialects.sqlite import SqliteDialect
from ctstream.source.reader import SourceReader
from ctstream.source.sqlite_tracking import track_database

pytestmark = pytest.mark.integration

# SQLite answers "no such table: <name>", which carries SQL Server's words.
DENIED = Statement('SELECT * FROM "VIEW SERVER STATE permission was denied on object server"')


class NoServerState(SqliteDialect):
    """The stand-in, with the queries that need VIEW SERVER STATE on SQL Server refused."""

    def table_health(self, spec: TableSpec, saved_version: int) -> Statement:
        return DENIED

    def cleanup_backlog(self) -> Statement | None:
        return DENIED


def test_permission_errors_are_told_apart_from_outages() -> None:
    denied = query_error(
        "reading the change tracking commit table",
        pyodbc.ProgrammingError(
            "42000",
            "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]VIEW SERVER STATE "
            "permission was denied on object 'server', database 'master'. (300)",
        ),
        SERVER_STATE_GRANT,
    )
    assert isinstance(denied, SourcePermissionDenied) and not denied.retriable
    assert denied.grant == SERVER_STATE_GRANT and "GRANT VIEW SERVER STATE" in str(denied)
    down = query_error("reading", pyodbc.OperationalError("08S01", "Communication link failure"))
    assert isinstance(down, SourceUnavailable) and down.retriable


async def test_doctor_reports_a_missing_grant_and_runs_the_other_checks(tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.commit()
    track_database(db, ["items"])
    config = tmp_path / "ctstream.toml"
    config.write_text(
        f"""
[source]
dialect = "sqlite"
dsn = "Driver=SQLite3;Database={db}"
tables = ["items"]
[kafka]
bootstrap_servers = "127.0.0.1:1"
[bigquery]
project = "local"
dataset = "cdc"
endpoint = "http://127.0.0.1:1"
""",
        encoding="utf-8",
    )
    settings = load_settings(config)
    findings = await run_doctor(settings, SourceReader(settings.source, NoServerState()))
    by_check = {(f.check, f.table): f for f in findings}
    permission = by_check[("permission", None)]
    assert permission.level == "warn" and permission.advice == SERVER_STATE_GRANT
    assert by_check[("tracked", "items")].level == "ok"
    assert by_check[("saved_version", "items")].level == "ok"
    assert by_check[("change_tracking", None)].level == "ok"
    assert not [f for f in findings if f.level == "error"], findings
