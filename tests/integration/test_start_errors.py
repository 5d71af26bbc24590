"""A bad config or an unusable source fails at start, naming the key and the fix."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ctstream.devstack.local_stack import StackInfo
from ctstream.source.sqlite_tracking import track_database
from tests.integration.fault_proxy import FaultProxy

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


def run_command(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctstream", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's error: no traceback, no leaked client, and the last line is ours."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "Unclosed" not in output, output
    assert SECRET not in output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ctstream: "), result.stderr
    return last


def without_google_credentials(home: Path) -> dict[str, str]:
    """This process's environment with no way to find Application Default Credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_"))}
    env.update(HOME=str(home), NO_GCE_CHECK="True", GCE_METADATA_HOST="127.0.0.1:1")
    return env


def test_no_google_credentials_is_one_line_exit_2(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "google.toml"
    config.write_text(
        config_text(db).replace('endpoint = "http://127.0.0.1:1"\n', ""), encoding="utf-8"
    )
    result = run_command(
        "worker", "--config", str(config), env=without_google_credentials(tmp_path)
    )
    assert result.returncode == 2
    line = one_clear_line(result)
    assert "no Google credentials" in line and "bigquery.credentials_file" in line


def test_a_credentials_file_that_is_no_key_is_named(tmp_path: Path, db: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text('{"type": "service_account", "private_key": "' + SECRET + '"}')
    config = tmp_path / "google.toml"
    text = config_text(db).replace('endpoint = "http://127.0.0.1:1"\n', "")
    config.write_text(text + f'credentials_file = "{key}"\n', encoding="utf-8")
    result = run_command("worker", "--config", str(config))
    assert result.returncode == 2
    line = one_clear_line(result)
    assert "bigquery.credentials_file" in line and "key.json" in line


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("Driver=SQLite3;Database={missing}/no/such/dir/x.db", "cannot connect to the source"),
        ("Driver=No Such ODBC Driver;Database={db}", "No Such ODBC Driver"),
    ],
)
def test_an_unreachable_source_is_one_line(
    tmp_path: Path, db: Path, dsn: str, expected: str
) -> None:
    config = tmp_path / "source.toml"
    dsn = dsn.format(missing=tmp_path, db=db) + f";PWD={SECRET}"
    config.write_text(config_text(db, dsn=dsn), encoding="utf-8")
    result = run_command("worker", "--config", str(config))
    assert result.returncode == 1
    line = one_clear_line(result)
    assert expected in line and "source.dsn" in line


def test_a_source_without_change_tracking_says_what_to_run(tmp_path: Path, db: Path) -> None:
    plain = tmp_path / "plain.db"
    with contextlib.closing(sqlite3.connect(plain)) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.commit()
    config = tmp_path / "plain.toml"
    config.write_text(
        config_text(db, dsn=f"Driver=SQLite3;Database={plain};PWD={SECRET}"), encoding="utf-8"
    )
    for command in ("worker", "doctor"):
        result = run_command(command, "--config", str(config))
        assert result.returncode == 1, result.stdout + result.stderr
        assert "ctstream sqlite track" in result.stdout + result.stderr, command
    assert "Traceback" not in result.stdout + result.stderr


async def test_unreachable_bigquery_fails_the_start_within_the_request_timeout(
    tmp_path: Path, db: Path, stack: StackInfo
) -> None:
    config = tmp_path / "bq.toml"
    text = config_text(db, kafka=stack.kafka_bootstrap)
    config.write_text(text + '[sink]\nrequest_timeout = "3s"\n', encoding="utf-8")
    result = await asyncio.to_thread(run_command, "worker", "--config", str(config))
    assert result.returncode == 1
    line = one_clear_line(result)
    assert "BigQuery at http://127.0.0.1:1" in line and "reachable" in line


async def test_a_dataset_that_cannot_be_created_is_one_line(
    tmp_path: Path, db: Path, stack: StackInfo, bigquery_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, endpoint = bigquery_proxy
    proxy.refuse_datasets = True
    config = tmp_path / "bq.toml"
    text = config_text(db, kafka=stack.kafka_bootstrap, bigquery=endpoint)
    config.write_text(text.replace('dataset = "cdc"', 'dataset = "refused"'), encoding="utf-8")
    result = await asyncio.to_thread(run_command, "worker", "--config", str(config))
    assert result.returncode == 1
    line = one_clear_line(result)
    assert "creating dataset refused" in line and "bigquery.datasets.create" in line


def test_doctor_runs_its_source_checks_without_kafka(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "doctor.toml"
    config.write_text(config_text(db), encoding="utf-8")  # Kafka at 127.0.0.1:1
    result = run_command("doctor", "--config", str(config), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Unclosed" not in result.stderr and "Traceback" not in result.stderr
    findings = {(f["check"], f["level"]) for f in json.loads(result.stdout)["findings"]}
    assert ("saved_versions", "warn") in findings
    assert ("tracked", "ok") in findings and ("change_tracking", "ok") in findings


def test_commands_that_need_kafka_say_so_in_one_line(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "snapshot.toml"
    config.write_text(config_text(db), encoding="utf-8")  # Kafka at 127.0.0.1:1
    result = run_command("snapshot", "--config", str(config), "--all")
    assert result.returncode == 1
    line = one_clear_line(result)
    assert "Kafka at 127.0.0.1:1" in line
    assert result.stderr.strip() == line  # aiokafka's own error is not printed too


def test_status_and_redrive_before_any_worker_ran(
    tmp_path: Path, db: Path, stack: StackInfo
) -> None:
    config = tmp_path / "fresh.toml"
    text = config_text(db, bigquery=stack.bigquery_endpoint)  # Kafka at 127.0.0.1:1
    config.write_text(text.replace('dataset = "cdc"', 'dataset = "never_made"'), "utf-8")
    status = run_command("status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    assert "Unclosed" not in status.stderr and "Traceback" not in status.stderr
    assert "local.never_made._error_records does not exist" in status.stdout
    assert "saved versions: KafkaConnectionError" in status.stdout
    redrive = run_command("redrive", "--config", str(config))
    assert redrive.returncode == 1
    line = one_clear_line(redrive)
    assert "local.never_made._error_records does not exist" in line and "ctstream worker" in line
