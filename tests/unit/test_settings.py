"""Settings: TOML file + environment, durations, clear errors, secrets kept secret."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest

from ctstream.errors import ConfigError
from ctstream.settings import Settings, load_settings, parse_duration

SECRET = "hunter2-secret"

MINIMAL = """
[source]
dialect = "sqlite"
dsn = "Driver=SQLite3;Database=./demo.db"
tables = ["items", "order_lines"]

[bigquery]
project = "local"
dataset = "cdc"
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CTSTREAM_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "ctstream.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config(
    *,
    dialect: str = "sqlite",
    dsn: str = "Driver=SQLite3;Database=./demo.db",
    tables: str = '["items"]',
    extra_source: str = "",
    rest: str = "",
) -> str:
    return (
        "[source]\n"
        f'dialect = "{dialect}"\n'
        f"dsn = '{dsn}'\n"
        f"tables = {tables}\n"
        f"{extra_source}\n"
        '[bigquery]\nproject = "local"\ndataset = "cdc"\n'
        f"{rest}\n"
    )


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    return str(info.value)


# --- loading ---------------------------------------------------------------------------


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL))
    assert isinstance(s, Settings)
    assert s.source.dialect == "sqlite"
    assert s.source.dsn.get_secret_value() == "Driver=SQLite3;Database=./demo.db"
    assert s.source.tables == ["items", "order_lines"]
    assert s.source.poll_interval == 1.0
    assert s.dedup.window == 600.0
    assert s.kafka.partitions == 4
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.bigquery.project == "local"
    assert s.bigquery.dataset == "cdc"
    assert s.bigquery.endpoint is None
    assert s.web.port == 6066


def test_full_example_from_design_loads(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace(
            "[bigquery]",
            'poll_interval = "1s"\n[kafka]\nbootstrap_servers = "127.0.0.1:9092"\n'
            '[dedup]\nwindow = "10m"\n[bigquery]\nendpoint = "http://127.0.0.1:9050"',
        )
        + "[web]\nport = 7077\n"
    )
    s = load_settings(write(tmp_path, text))
    assert s.source.poll_interval == 1.0
    assert s.dedup.window == 600.0
    assert s.bigquery.endpoint == "http://127.0.0.1:9050"
    assert s.web.port == 7077


def test_mssql_config_loads(tmp_path: Path) -> None:
    text = config(
        dialect="mssql",
        dsn="Driver={ODBC Driver 18 for SQL Server};Server=db,1433;UID=sa;PWD=" + SECRET,
        tables='["dbo.items", "sales.order_lines"]',
    )
    s = load_settings(write(tmp_path, text))
    assert s.source.dialect == "mssql"
    assert s.source.tables == ["dbo.items", "sales.order_lines"]


def test_durations_in_file(tmp_path: Path) -> None:
    text = config(
        extra_source='poll_interval = "500ms"',
        rest='[dedup]\nwindow = "2h"\n[sink]\nbatch_wait = 0.25\nretry_max = 5',
    )
    s = load_settings(write(tmp_path, text))
    assert s.source.poll_interval == 0.5
    assert s.dedup.window == 7200.0
    assert s.sink.batch_wait == 0.25
    assert s.sink.retry_max == 5.0


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL))
    with pytest.raises(Exception, match="frozen"):
        s.kafka.partitions = 9  # type: ignore[misc]


def test_overrides_argument(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), kafka={"partitions": 2})
    assert s.kafka.partitions == 2
    assert s.source.tables == ["items", "order_lines"]


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1s", 1.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1.5s", 1.5),
        ("30", 30.0),
        (" 3 s ", 3.0),
        (5, 5.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "10 minutes", "1x", "-1s", "0", "0s", 0, -3, True, False, None, "1s2", "s", [1]],
)
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_parse_duration_rejects_non_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_bad_duration_in_file_names_the_key(tmp_path: Path) -> None:
    msg = config_error(tmp_path, config(rest='[dedup]\nwindow = "ten minutes"'))
    assert "dedup.window" in msg
    assert "'10m'" in msg


# --- environment -----------------------------------------------------------------------


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTSTREAM_KAFKA__PARTITIONS", "8")
    monkeypatch.setenv("CTSTREAM_SOURCE__POLL_INTERVAL", "250ms")
    text = config(extra_source='poll_interval = "5s"', rest="[kafka]\npartitions = 2")
    s = load_settings(write(tmp_path, text))
    assert s.kafka.partitions == 8
    assert s.source.poll_interval == 0.25
    # The rest of the file's sections are kept (deep merge, not replacement).
    assert s.source.tables == ["items"]
    assert s.source.dsn.get_secret_value() == "Driver=SQLite3;Database=./demo.db"


def test_environment_sets_keys_absent_from_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTSTREAM_KAFKA__PARTITIONS", "8")
    s = load_settings(write(tmp_path, MINIMAL))
    assert s.kafka.partitions == 8
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"


def test_bad_environment_value_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTSTREAM_KAFKA__PARTITIONS", "0")
    with pytest.raises(ConfigError, match=r"kafka\.partitions"):
        load_settings(write(tmp_path, MINIMAL))


# --- bad configs -----------------------------------------------------------------------


def test_unknown_dialect(tmp_path: Path) -> None:
    msg = config_error(tmp_path, config(dialect="oracle"))
    assert "source.dialect" in msg
    assert "sqlite" in msg
    assert "mssql" in msg
    assert "oracle" in msg


def test_missing_tables(tmp_path: Path) -> None:
    text = '[source]\ndsn = "Driver=SQLite3;Database=x.db"\n[bigquery]\nproject = "p"\n'
    text += 'dataset = "d"\n'
    msg = config_error(tmp_path, text)
    assert "source.tables" in msg
    assert "required" in msg


def test_empty_tables(tmp_path: Path) -> None:
    msg = config_error(tmp_path, config(tables="[]"))
    assert "source.tables" in msg
    assert "at least 1" in msg


def test_table_listed_twice(tmp_path: Path) -> None:
    msg = config_error(tmp_path, config(tables='["a", "a"]'))
    assert "source.tables" in msg
    assert "twice" in msg


@pytest.mark.parametrize("toml_name", ['"a.b.c"', '"bad\\nname"', '"tab\\there"', '".items"', '""'])
def test_bad_table_name(tmp_path: Path, toml_name: str) -> None:
    msg = config_error(tmp_path, config(tables=f"[{toml_name}]"))
    assert "source.tables" in msg
    assert "schema.table" in msg


def test_malformed_dsn(tmp_path: Path) -> None:
    msg = config_error(tmp_path, config(dsn="just some text"))
    assert "source.dsn" in msg
    assert "Key=Value" in msg


def test_dsn_without_driver_or_dsn(tmp_path: Path) -> None:
    msg = config_error(tmp_path, config(dsn="Database=./demo.db"))
    assert "source.dsn" in msg
    assert "Driver=" in msg
    assert "DSN=" in msg


def test_dsn_naming_a_dsn_is_accepted(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, config(dsn="DSN=demo;Database=x.db")))
    assert s.source.dsn.get_secret_value() == "DSN=demo;Database=x.db"


def test_sqlite_dsn_without_database(tmp_path: Path) -> None:
    msg = config_error(tmp_path, config(dsn="Driver=SQLite3"))
    assert "dsn" in msg
    assert "Database=" in msg


def test_mssql_table_without_schema(tmp_path: Path) -> None:
    text = config(dialect="mssql", dsn="Driver=X;Server=s", tables='["dbo.a", "items"]')
    msg = config_error(tmp_path, text)
    assert "tables" in msg
    assert "'items'" in msg
    assert "dbo.items" in msg


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (config(dsn="Driver=SQLite3"), "source.dsn"),
        (config(dialect="mssql", dsn="Driver=X", tables='["items"]'), "source.tables"),
    ],
)
def test_dialect_rule_errors_use_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    assert key in config_error(tmp_path, text)


def test_braced_dsn_value_may_contain_semicolon(tmp_path: Path) -> None:
    dsn = "Driver={ODBC Driver 18 for SQL Server};Server=db;PWD={a;b}"
    s = load_settings(write(tmp_path, config(dialect="mssql", dsn=dsn, tables='["dbo.a"]')))
    assert s.source.dsn.get_secret_value() == dsn


def test_unknown_key(tmp_path: Path) -> None:
    msg = config_error(tmp_path, config(rest='[kafka]\nbootstrap = "127.0.0.1:9092"'))
    assert "kafka.bootstrap" in msg
    assert "unknown" in msg


def test_unknown_section(tmp_path: Path) -> None:
    msg = config_error(tmp_path, config(rest="[kafak]\npartitions = 2"))
    assert "kafak" in msg
    assert "unknown" in msg


@pytest.mark.parametrize("servers", ["localhost", "host:", ":9092", "a:9092,b", "h:port"])
def test_bad_bootstrap_servers(tmp_path: Path, servers: str) -> None:
    msg = config_error(tmp_path, config(rest=f'[kafka]\nbootstrap_servers = "{servers}"'))
    assert "kafka.bootstrap_servers" in msg
    assert "host:port" in msg


def test_several_bootstrap_servers_accepted(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, config(rest='[kafka]\nbootstrap_servers = "a:1, b:2"')))
    assert s.kafka.bootstrap_servers == "a:1, b:2"


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9050", "ftp://x", "http://", "http://a b"])
def test_bad_bigquery_endpoint(tmp_path: Path, endpoint: str) -> None:
    text = config().replace('dataset = "cdc"', f'dataset = "cdc"\nendpoint = "{endpoint}"')
    msg = config_error(tmp_path, text)
    assert "bigquery.endpoint" in msg
    assert "http" in msg


def test_missing_bigquery_section(tmp_path: Path) -> None:
    text = '[source]\ndsn = "Driver=SQLite3;Database=x.db"\ntables = ["a"]\n'
    msg = config_error(tmp_path, text)
    assert "bigquery" in msg
    assert "required" in msg


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = config(dialect="oracle", rest="[kafka]\npartitions = 0\n[web]\nport = 70000")
    msg = config_error(tmp_path, text)
    assert "source.dialect" in msg
    assert "kafka.partitions" in msg
    assert "web.port" in msg


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_settings(missing)
    assert str(missing) in str(info.value)


def test_invalid_toml(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "[source\ndialect = ")
    assert "not valid TOML" in msg


def test_config_error_is_not_retriable() -> None:
    assert ConfigError.retriable is False


# --- secrets ---------------------------------------------------------------------------


def test_password_not_in_repr_str_or_json(tmp_path: Path) -> None:
    dsn = f"Driver=SQLite3;Database=x.db;UID=me;PWD={SECRET}"
    s = load_settings(write(tmp_path, config(dsn=dsn)))
    assert s.source.dsn.get_secret_value() == dsn  # still usable
    assert SECRET not in repr(s)
    assert SECRET not in str(s)
    assert SECRET not in s.model_dump_json()
    assert SECRET not in repr(s.source)
    assert SECRET not in str(s.model_dump())


def test_password_not_in_error_for_another_key(tmp_path: Path) -> None:
    dsn = f"Driver=SQLite3;Database=x.db;PWD={SECRET}"
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, config(dialect="oracle", dsn=dsn)))
    assert "source.dialect" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize(
    "dsn",
    [
        f"Driver=X;PWD={SECRET};garbage",
        f"PWD={SECRET}",  # no Driver/DSN
        f"Driver=SQLite3;PWD={SECRET}",  # sqlite without Database
    ],
)
def test_password_not_in_error_for_bad_dsn(tmp_path: Path, dsn: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, config(dsn=dsn)))
    assert "dsn" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in "".join(traceback.format_exception(info.value))


def test_password_from_environment_not_in_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTSTREAM_SOURCE__DSN", f"Driver=X;PWD={SECRET};garbage")
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, MINIMAL))
    assert "source.dsn" in str(info.value)
    assert SECRET not in str(info.value)


def test_snapshot_modes_default_and_per_table(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'tables = ["items", "order_lines"]',
        'tables = ["items", "order_lines"]\nsnapshot_mode = "when_needed"\n'
        'table_snapshot_mode = { "order_lines" = "never" }\nlock_timeout = "2s"',
    )
    source = load_settings(write(tmp_path, text)).source
    assert source.snapshot_mode_of("items") == "when_needed"
    assert source.snapshot_mode_of("order_lines") == "never"
    assert source.lock_timeout == 2.0
    assert load_settings(write(tmp_path, MINIMAL)).source.snapshot_mode_of("items") == "initial"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('snapshot_mode = "sometimes"', "source.snapshot_mode"),
        ('table_snapshot_mode = { "nope" = "never" }', "does not select"),
        ('table_snapshot_mode = { "items" = "always" }', "source.table_snapshot_mode.items"),
    ],
)
def test_bad_snapshot_modes_are_named(tmp_path: Path, line: str, expected: str) -> None:
    text = MINIMAL.replace('tables = ["items", "order_lines"]', f'tables = ["items"]\n{line}')
    with pytest.raises(ConfigError, match=expected):
        load_settings(write(tmp_path, text))


def test_roles(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, MINIMAL)).app.roles == ["poll", "dedup", "sink"]
    poller = load_settings(write(tmp_path, '[app]\nroles = ["poll"]\n' + MINIMAL))
    assert poller.app.roles == ["poll"]
    for bad, expected in (
        ('["poll", "poll"]', "listed twice"),
        ("[]", "app.roles"),
        ('["collect"]', "app.roles"),
    ):
        with pytest.raises(ConfigError, match=expected):
            load_settings(write(tmp_path, f"[app]\nroles = {bad}\n" + MINIMAL))


def test_a_web_host_off_localhost_needs_a_token(tmp_path: Path) -> None:
    text = '[web]\nhost = "0.0.0.0"\n' + MINIMAL
    with pytest.raises(ConfigError, match=r"web\.token is required"):
        load_settings(write(tmp_path, text))
    ok = load_settings(
        write(tmp_path, text.replace('"0.0.0.0"', '"0.0.0.0"\ntoken = "' + "k" * 20 + '"'))
    )
    assert ok.web.token is not None and "k" * 20 not in repr(ok)
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings(write(tmp_path, text.replace('"0.0.0.0"', '"0.0.0.0"\ntoken = "short"')))


def toml_blocks(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [block.split("```", 1)[0] for block in text.split("```toml")[1:]]


def test_the_readme_example_and_the_complete_file_of_the_docs_load(tmp_path: Path) -> None:
    root = Path(__file__).parents[2]
    (readme,) = toml_blocks(root / "README.md")
    settings = load_settings(write(tmp_path, readme))
    assert settings.source.tables == ["items", "order_lines"]
    complete = toml_blocks(root / "docs" / "configuration.md")[0]
    settings = load_settings(write(tmp_path, complete))
    assert settings.source.tables == ["items", "order_lines"]
    documented = {
        line.split("=")[0].strip().lstrip("# ")
        for line in complete.splitlines()
        if "=" in line and not line.startswith("[")
    } | {  # a sub-table such as [kafka.retention]
        line.split("]")[0].split(".")[-1] for line in complete.splitlines() if line.startswith("[")
    }
    for section in ("app", "source", "kafka", "dedup", "sink", "bigquery", "web"):
        model = type(getattr(settings, section))
        missing = set(model.model_fields) - documented
        assert not missing, f"docs/configuration.md lacks [{section}] {sorted(missing)}"


# --- log levels per logger -------------------------------------------------------------


def test_log_levels_per_logger_from_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = config(rest='[app]\nlog_levels = { "aiokafka.consumer.group_coordinator" = "debug" }')
    s = load_settings(write(tmp_path, text))
    assert s.app.log_levels == {"aiokafka.consumer.group_coordinator": "debug"}
    assert s.app.log_level == "info"
    monkeypatch.setenv("CTSTREAM_APP__LOG_LEVELS", '{"faust": "warning"}')
    assert load_settings(write(tmp_path, MINIMAL)).app.log_levels == {"faust": "warning"}


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ('"faust" = "verbose"', "app.log_levels.faust: Input should be 'debug'"),
        ('"a b" = "debug"', "'a b' is not a logger's name"),
    ],
)
def test_bad_log_levels_entry_names_the_key(tmp_path: Path, entry: str, named: str) -> None:
    msg = config_error(tmp_path, config(rest=f"[app]\nlog_levels = {{ {entry} }}"))
    assert "app.log_levels" in msg and named in msg


def test_environment_that_is_not_json_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTSTREAM_SOURCE__TABLES", "[not json")
    with pytest.raises(ConfigError, match="CTSTREAM_SOURCE__TABLES") as raised:
        load_settings(write(tmp_path, config()))
    assert "not valid JSON" in str(raised.value)


def test_a_storage_write_path_against_an_emulator_needs_its_grpc_endpoint(tmp_path: Path) -> None:
    emulator = 'dataset = "cdc"\nendpoint = "http://127.0.0.1:9050"'
    text = config().replace('dataset = "cdc"', f'{emulator}\nwrite_api = "storage_write_committed"')
    msg = config_error(tmp_path, text)
    assert "bigquery.storage_endpoint" in msg and "Google's endpoint" in msg
    fixed = text.replace(emulator, f'{emulator}\nstorage_endpoint = "127.0.0.1:9060"')
    assert load_settings(write(tmp_path, fixed)).bigquery.write_api == "storage_write_committed"
