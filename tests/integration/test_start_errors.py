"""A bad config or an unusable source fails at start, naming the key and the fix."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ctstream.devstack.local_stack import StackInfo
from ctstream.source.sqlite_tracking import track_database

pytestmark = pytest.mark.integration

SECRET = "hunter2-secret"


def run_worker(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctstream", "worker", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def config_text(
    db: Path,
    tables: str = '["items"]',
    dialect: str = "sqlite",
    dsn: str | None = None,
    kafka: str = "127.0.0.1:1",
    bigquery: str = "http://127.0.0.1:1",
) -> str:
    dsn = dsn or f"Driver=SQLite3;Database={db};PWD={SECRET}"
    return f"""
[source]
dialect = "{dialect}"
dsn = "{dsn}"
tables = {tables}
[kafka]
bootstrap_servers = "{kafka}"
[bigquery]
project = "local"
dataset = "cdc"
endpoint = "{bigquery}"
"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "src.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE untracked (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE nokey (a INTEGER)")
        conn.commit()
    track_database(path, ["items"])
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"dialect": "oracle"}, ["source.dialect", "'sqlite'", "'mssql'"]),
        ({"dsn": "this is not a dsn"}, ["source.dsn", "Key=Value"]),
        ({"tables": "[]"}, ["source.tables"]),
        ({"dsn": "Driver=SQLite3;PWD=x"}, ["source.dsn", "Database="]),
    ],
)
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, db: Path, change: dict[str, str], expected: list[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(config_text(db, **change), encoding="utf-8")
    result = run_worker(config)
    assert result.returncode == 2, result.stderr
    for text in expected:
        assert text in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_missing_tables_key_is_named(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "bad.toml"
    text = config_text(db).replace('tables = ["items"]\n', "")
    config.write_text(text, encoding="utf-8")
    result = run_worker(config)
    assert result.returncode == 2
    assert "source.tables: required" in result.stderr


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        ('["nope"]', ["source.tables", "'nope'", "does not exist"]),
        ('["untracked"]', ["'untracked'", "not change-tracked", "ctstream sqlite track"]),
    ],
)
def test_unusable_table_fails_at_start(
    tmp_path: Path, db: Path, tables: str, expected: list[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(config_text(db, tables=tables), encoding="utf-8")
    result = run_worker(config)
    assert result.returncode == 1
    for text in expected:
        assert text in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_patterns_that_select_nothing_fail_at_start(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(config_text(db, tables='["unt*", "x?"]'), encoding="utf-8")
    result = run_worker(config)
    assert result.returncode != 0
    assert "selects none of the 1 change-tracked tables (items)" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_unreachable_kafka_is_a_clear_error(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(config_text(db), encoding="utf-8")
    result = run_worker(config)
    assert result.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in result.stderr
    assert "kafka.bootstrap_servers" in result.stderr


def test_sqlite_track_refuses_a_table_without_primary_key(db: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ctstream", "sqlite", "track", str(db), "nokey"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "nokey" in result.stderr and "primary key" in result.stderr


def test_stack_info_has_the_documented_keys(stack: StackInfo) -> None:
    assert stack.kafka_bootstrap.startswith("127.0.0.1:")
    assert stack.bigquery_endpoint.startswith("http://127.0.0.1:")
