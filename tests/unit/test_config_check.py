"""``ctstream config check``: every problem with its key, the effective settings with every
secret masked, exit status 0 or 2, text and JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ctstream.cli import main
from ctstream.settings import load_settings

VALID = """\
[source]
dialect = "mssql"
dsn = "Driver={ODBC Driver 18 for SQL Server};Server=db,1433;UID=ct;PWD={pw-in-file}"
tables = ["dbo.items"]
poll_interval = "250ms"

[bigquery]
project = "local"
dataset = "cdc"
"""

# Distinctive secrets: none of them may appear anywhere in any output.
SECRETS = {
    "dsn": "Zq7-dsn-pw-81x{",
    "dsn_file": "Kf3-file-pw-27y",
    "mask_key": "Mk5-mask-key-4455aa",
    "sasl": "Sa9-sasl-pw-1209bb",
    "token": "Tk2-web-token-7788cc",
    "token_file": "Tf4-web-token-6655dd",
}

ALL_SECRETS_FILE = f"""\
[source]
dialect = "mssql"
dsn = "Driver={{ODBC Driver 18 for SQL Server}};Server=db;UID=ct;Password={SECRETS["dsn_file"]}"
tables = ["dbo.items"]
mask = {{ "dbo.items" = {{ email = "hash" }} }}
mask_key = "{SECRETS["mask_key"]}"

[kafka]
security_protocol = "SASL_PLAINTEXT"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "ctstream"
sasl_password = "{SECRETS["sasl"]}"

[bigquery]
project = "local"
dataset = "cdc"

[web]
host = "0.0.0.0"
token = "{SECRETS["token_file"]}"
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CTSTREAM_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ctstream.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["config", "check", *args])
    out, err = capsys.readouterr()
    return code, out, err


def check_json(capsys: pytest.CaptureFixture[str], path: str) -> tuple[int, dict[str, Any]]:
    code, out, err = check(capsys, "--config", path, "--json")
    assert err == ""
    result = json.loads(out)
    assert isinstance(result, dict)
    return code, result


def problem_lines(err: str) -> list[str]:
    return [line.strip() for line in err.splitlines() if line.startswith("  ")]


# --- valid -----------------------------------------------------------------------------


def test_valid_file_prints_effective_settings_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, VALID)
    code, out, err = check(capsys, "--config", path)
    assert code == 0
    assert err == ""
    assert f"config {path} is valid" in out
    assert "[source]" in out and "[kafka]" in out and "[web]" in out
    assert 'dialect = "mssql"' in out
    assert "poll_interval = 0.25" in out  # durations in seconds
    assert 'bootstrap_servers = "127.0.0.1:9092"' in out  # defaults shown too
    assert "environment: no CTSTREAM_ variables set" in out
    # The DSN stays readable, its password does not.
    assert "Server=db,1433;UID=ct;PWD=**********" in out
    assert "pw-in-file" not in out


def test_json_when_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = check_json(capsys, write(tmp_path, VALID))
    assert code == 0
    assert result["valid"] is True
    assert result["problems"] == []
    settings = result["settings"]
    assert settings["source"]["tables"] == ["dbo.items"]
    assert settings["source"]["poll_interval"] == 0.25
    assert settings["source"]["dsn"].endswith("PWD=**********")
    assert settings["web"]["token"] is None
    assert settings["kafka"]["retention"]["raw"] == 7 * 86400.0


def test_environment_overrides_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTSTREAM_SOURCE__POLL_INTERVAL", "2s")
    monkeypatch.setenv("CTSTREAM_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092")
    path = write(tmp_path, VALID)
    code, result = check_json(capsys, path)
    assert code == 0
    assert result["settings"]["source"]["poll_interval"] == 2.0
    assert result["settings"]["kafka"]["bootstrap_servers"] == "kafka:9092"
    assert result["environment"] == [
        "CTSTREAM_KAFKA__BOOTSTRAP_SERVERS",
        "CTSTREAM_SOURCE__POLL_INTERVAL",
    ]
    code, out, _ = check(capsys, "--config", path)
    assert code == 0
    assert 'bootstrap_servers = "kafka:9092"' in out
    assert "CTSTREAM_KAFKA__BOOTSTRAP_SERVERS, CTSTREAM_SOURCE__POLL_INTERVAL" in out


def test_environment_alone_can_complete_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTSTREAM_SOURCE__DSN", f"Driver=X;Server=db;PWD={SECRETS['dsn']}")
    without_dsn = "\n".join(x for x in VALID.splitlines() if not x.startswith("dsn ="))
    path = write(tmp_path, without_dsn)
    code, out, err = check(capsys, "--config", path)
    assert code == 0, err
    assert "Driver=X;Server=db;PWD=**********" in out
    assert SECRETS["dsn"] not in out


def test_tables_keyed_by_column_keep_their_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only settings are masked by name, not columns that happen to be called *_token."""
    monkeypatch.setenv("CTSTREAM_SOURCE__MASK_KEY", SECRETS["mask_key"])
    text = VALID.replace(
        'poll_interval = "250ms"', 'mask = { "dbo.items" = { reset_token = "hash" } }'
    )
    code, result = check_json(capsys, write(tmp_path, text))
    assert code == 0, result["problems"]
    assert result["settings"]["source"]["mask"] == {"dbo.items": {"reset_token": "hash"}}
    assert result["settings"]["source"]["mask_key"] == "**********"
    assert_no_secret(json.dumps(result))


# --- invalid ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "nope.toml")
    code, out, err = check(capsys, "--config", path)
    assert code == 2
    assert out == ""
    assert f"{path}: does not exist (expected the path of a TOML config file)" in err
    code, result = check_json(capsys, path)
    assert code == 2
    assert result["valid"] is False and result["settings"] is None
    assert result["problems"] == [
        {"key": path, "message": "does not exist (expected the path of a TOML config file)"}
    ]


def test_toml_syntax_error_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, VALID.replace('dataset = "cdc"', "dataset = "))
    code, _, err = check(capsys, "--config", path)
    assert code == 2
    [line] = problem_lines(err)
    assert line.startswith(f"{path}: not valid TOML:")
    assert "at line 9," in line


def test_unknown_key_suggests_the_close_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, VALID.replace("poll_interval", "poll_intervall"))
    code, _, err = check(capsys, "--config", path)
    assert code == 2
    assert problem_lines(err) == [
        "source.poll_intervall: unknown key (did you mean 'poll_interval'?); "
        "see docs/configuration.md"
    ]


def test_bad_duration_and_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = VALID.replace('"250ms"', '"soon"') + '[sink]\nbatch_rows = "many"\n'
    code, result = check_json(capsys, write(tmp_path, text))
    assert code == 2
    problems = {p["key"]: p["message"] for p in result["problems"]}
    assert "expected a duration such as '500ms'" in problems["source.poll_interval"]
    assert "(expected a whole number)" in problems["sink.batch_rows"]


def test_bad_environment_value_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTSTREAM_DEDUP__WINDOW", "-1s")
    monkeypatch.setenv("CTSTREAM_SOURCE__TABLES", "[dbo.items")  # not JSON
    code, out, err = check(capsys, "--config", write(tmp_path, VALID))
    assert code == 2
    assert out == ""
    assert "CTSTREAM_SOURCE__TABLES" in err and "not valid JSON" in err
    monkeypatch.delenv("CTSTREAM_SOURCE__TABLES")
    code, _, err = check(capsys, "--config", write(tmp_path, VALID))
    assert code == 2
    [line] = problem_lines(err)
    assert line.startswith("dedup.window: expected a duration")


def test_every_problem_is_reported_one_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = """\
[app]
log_level = "loud"
[source]
dialect = "oracle"
tables = ["items"]
fetch_size = 0
[dedup]
window = "ten minutes"
[bigquery]
project = "Local"
[web]
porte = 80
"""
    path = write(tmp_path, text)
    code, _, err = check(capsys, "--config", path)
    assert code == 2
    assert f"config {path} is invalid (8 problems):" in err
    lines = problem_lines(err)
    assert sorted(line.split(":", 1)[0] for line in lines) == [
        "app.log_level",
        "bigquery.dataset",
        "bigquery.project",
        "dedup.window",
        "source.dialect",
        "source.dsn",
        "source.fetch_size",
        "web.porte",
    ]
    by_key = dict(line.split(": ", 1) for line in lines)
    assert by_key["source.dialect"] == "expected 'sqlite' or 'mssql' (got 'oracle')"
    assert (
        by_key["source.dsn"]
        == "required, not set (expected in the file or as CTSTREAM_SOURCE__DSN)"
    )
    assert "greater than or equal to 1" in by_key["source.fetch_size"]
    # The JSON form lists the same problems.
    _, result = check_json(capsys, path)
    assert [f"{p['key']}: {p['message']}" for p in result["problems"]] == lines


def test_model_level_problem_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = check(capsys, "--config", write(tmp_path, VALID + '[web]\nhost = "0.0.0.0"\n'))
    assert code == 2
    [line] = problem_lines(err)
    assert line.startswith("web.token: required when web.host is '0.0.0.0'")
    assert "CTSTREAM_WEB__TOKEN" in line


def test_load_settings_message_is_unchanged(tmp_path: Path) -> None:
    from ctstream.errors import ConfigError

    path = write(tmp_path, VALID + '[web]\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == (
        f"invalid configuration in {path}:\n  web: web.token is required when web.host is "
        "'0.0.0.0' (not a loopback address); set CTSTREAM_WEB__TOKEN to a long random string"
    )


# --- secrets ---------------------------------------------------------------------------


def assert_no_secret(*outputs: str) -> None:
    for output in outputs:
        for name, secret in SECRETS.items():
            assert secret not in output, f"the {name} secret was printed"
            assert secret.strip("{") not in output, f"the {name} secret was printed"


def test_no_secret_is_printed_when_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, ALL_SECRETS_FILE)
    # The file's secrets, then the same keys from the environment over the file.
    code, out, err = check(capsys, "--config", path)
    assert code == 0, err
    code, result = check_json(capsys, path)
    assert code == 0
    assert result["settings"]["web"]["token"] == "**********"
    assert result["settings"]["kafka"]["sasl_password"] == "**********"
    assert result["settings"]["source"]["mask_key"] == "**********"
    assert "Password=**********" in result["settings"]["source"]["dsn"]
    outputs = [out, err, json.dumps(result)]

    monkeypatch.setenv("CTSTREAM_SOURCE__DSN", f"Driver=X;Server=db;PWD={{{SECRETS['dsn']}}}")
    monkeypatch.setenv("CTSTREAM_SOURCE__MASK_KEY", SECRETS["mask_key"] + "-env")
    monkeypatch.setenv("CTSTREAM_KAFKA__SASL_PASSWORD", SECRETS["sasl"] + "-env")
    monkeypatch.setenv("CTSTREAM_WEB__TOKEN", SECRETS["token"])
    code, out, err = check(capsys, "--config", path)
    assert code == 0, err
    assert "Driver=X;Server=db;PWD=**********" in out
    code, result = check_json(capsys, path)
    assert code == 0
    assert_no_secret(*outputs, out, err, json.dumps(result))


def test_no_secret_is_printed_when_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        ALL_SECRETS_FILE.replace("sasl_password", "sasl_pasword")  # misspelt: unknown key
        .replace('dialect = "mssql"', f'dialect = "mssql"\nsecret = "{SECRETS["dsn_file"]}"')
        .replace("[bigquery]", f'[bigquery]\nendpoint = "{SECRETS["token_file"]} x"')
    )
    monkeypatch.setenv("CTSTREAM_SOURCE__DSN", f"Driver=X;PWD={SECRETS['dsn']};garbage")
    monkeypatch.setenv("CTSTREAM_WEB__TOKEN", SECRETS["token"][:10])  # too short
    monkeypatch.setenv("CTSTREAM_SOURCE__MASK_KEY", SECRETS["mask_key"][:8])  # too short
    path = write(tmp_path, text)
    code, out, err = check(capsys, "--config", path)
    assert code == 2
    assert len(problem_lines(err)) >= 5
    code_json, result = check_json(capsys, path)
    assert code_json == 2
    assert result["settings"] is None
    assert_no_secret(out, err, json.dumps(result))
    assert SECRETS["token"][:10] not in err and SECRETS["mask_key"][:8] not in err


def test_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "check", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--json" in out and "masked" in out
    with pytest.raises(SystemExit) as info:
        main(["config"])
    assert info.value.code == 2
