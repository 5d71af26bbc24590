"""The one typed settings model: a TOML file plus ``CTSTREAM_`` environment variables.

Every key of the file can be set by environment as ``CTSTREAM_<SECTION>__<KEY>``
(environment wins over the file). Secrets are ``SecretStr``. Settings are validated once,
at start; a bad value fails with the key's dotted name and the form it expects.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ctstream.errors import ConfigError

SnapshotMode = Literal["initial", "never", "when_needed"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """``"500ms"``, ``"1s"``, ``"10m"``, ``"2h"``, ``"7d"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '500ms', '1s', '10m', '2h' or '7d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("expected a duration such as '500ms', '1s', '10m', '2h' or '7d'")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("expected a finite duration greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

_DSN_PAIR = re.compile(r"^\s*[A-Za-z][A-Za-z0-9 _-]*\s*=\s*(\{[^}]*\}|[^;]*)\s*$")
# SQLite: a bare name; SQL Server: schema.table. Quotes/brackets are never needed here —
# names are looked up in the catalog and quoted by the reader.
_TABLE_NAME = re.compile(r"^[^\x00-\x1f.]+(\.[^\x00-\x1f.]+)?$")


def dsn_pairs(dsn: str) -> dict[str, str]:
    """Split an ODBC connection string into ``{lower-case key: value}``; raise if malformed."""
    pairs: dict[str, str] = {}
    # Split on ';' outside braces: ODBC lets a value hold ';' as in PWD={a;b}.
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in dsn:
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(0, depth - 1)
        if char == ";" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    for part in parts:
        if not part.strip():
            continue
        if not _DSN_PAIR.match(part):
            raise ValueError(
                "expected an ODBC connection string of Key=Value pairs separated by ';', "
                "e.g. 'Driver=SQLite3;Database=./demo.db'"
            )
        key, _, value = part.partition("=")
        pairs[key.strip().lower()] = value.strip()
    return pairs


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSettings(_Section):
    dialect: Literal["sqlite", "mssql"] = "sqlite"
    dsn: SecretStr = Field(description="ODBC connection string (may hold a password)")
    tables: list[str] = Field(min_length=1)
    poll_interval: Duration = 1.0
    fetch_size: int = Field(default=5000, ge=1, le=1_000_000)
    # How long one poll may take before it is abandoned and retried.
    poll_timeout: Duration = 300.0
    # When a table is read whole (Debezium's names): "initial" — when ctstream has no
    # saved version for it; "when_needed" — also when the saved version fell below the
    # minimum valid version; "never" — never on its own (`ctstream snapshot` still works).
    snapshot_mode: SnapshotMode = "initial"
    table_snapshot_mode: dict[str, SnapshotMode] = Field(default_factory=dict)
    # SQL Server: how long a poll waits for a lock before failing (SET LOCK_TIMEOUT).
    lock_timeout: Duration = 10.0

    def snapshot_mode_of(self, table: str) -> SnapshotMode:
        return self.table_snapshot_mode.get(table, self.snapshot_mode)

    @field_validator("dsn")
    @classmethod
    def _dsn_well_formed(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        pairs = dsn_pairs(value.get_secret_value())
        if not ({"driver", "dsn"} & pairs.keys()):
            raise ValueError(
                "expected an ODBC connection string naming a Driver= or DSN=, "
                "e.g. 'Driver=SQLite3;Database=./demo.db'"
            )
        if info.data.get("dialect") == "sqlite" and "database" not in pairs:
            raise ValueError("a sqlite DSN needs Database=<path to the .db file>")
        return value

    @field_validator("tables")
    @classmethod
    def _table_names(cls, tables: list[str], info: ValidationInfo) -> list[str]:
        for name in tables:
            if not _TABLE_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a table name: expected 'table' (sqlite) or "
                    "'schema.table' (mssql), without control characters"
                )
        if len(set(tables)) != len(tables):
            raise ValueError("a table is listed twice")
        if info.data.get("dialect") == "mssql":
            for name in tables:
                if "." not in name:
                    raise ValueError(f"{name!r} needs its schema for mssql, e.g. 'dbo.{name}'")
        return tables

    @field_validator("table_snapshot_mode")
    @classmethod
    def _known_tables(cls, modes: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        unknown = sorted(set(modes) - set(info.data.get("tables") or ()))
        if unknown:
            raise ValueError(f"names tables not in source.tables: {', '.join(map(repr, unknown))}")
        return modes


class TopicRetention(_Section):
    """How long each kind of topic keeps messages (``retention.ms``, set at creation).

    The seed system kept 7 days so that a new consumer, or `ctstream replay`, could re-read.
    """

    raw: Duration = 7 * 86400.0
    deduped: Duration = 7 * 86400.0
    errors: Duration = 30 * 86400.0
    poll_ticks: Duration = 86400.0


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="ctstream", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    retention: TopicRetention = TopicRetention()

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("expected host:port[,host:port...], e.g. '127.0.0.1:9092'")
        return value


class DedupSettings(_Section):
    window: Duration = 600.0


class SinkSettings(_Section):
    batch_rows: int = Field(default=1000, ge=1, le=50_000)
    batch_wait: Duration = 0.5
    retry_initial: Duration = 0.2
    retry_max: Duration = 30.0
    request_timeout: Duration = 60.0
    # insertAll requests are cut to this size (BigQuery refuses requests over 10 MB); a
    # request BigQuery still finds too large is split in halves, down to one row.
    max_request_bytes: int = Field(default=9_000_000, ge=1_000, le=10_485_760)
    # Batches written at once; while this many are unfinished the sink reads no more.
    max_in_flight: int = Field(default=2, ge=1, le=32)


class BigQueryTableOptions(_Section):
    """How one source table's BigQuery table is laid out (applied when it is created)."""

    # A source column or a metadata column (e.g. changetrack_start_time) of type DATE,
    # DATETIME or TIMESTAMP; None: not partitioned.
    partition_column: str | None = None
    partition_granularity: Literal["HOUR", "DAY", "MONTH", "YEAR"] = "DAY"
    partition_expiration: Duration | None = None
    # Up to four columns; None: the primary key (those of its columns BigQuery can cluster).
    cluster_by: list[str] | None = Field(default=None, min_length=1, max_length=4)


class BigQuerySettings(_Section):
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    dataset: str = Field(pattern=r"^[A-Za-z0-9_]{1,1024}$")
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    location: str | None = None
    # Path to a service-account key file; never the key itself. None: Application
    # Default Credentials, or anonymous when an emulator endpoint is set.
    credentials_file: Path | None = None
    # How rows are written: insertAll (with insertIds) or the Storage Write API's
    # default stream (at-least-once; duplicates are left to the latest-state views).
    write_api: Literal["insert_all", "storage_write"] = "insert_all"
    # host:port of a Storage Write API emulator (plaintext gRPC); None: Google's endpoint.
    storage_endpoint: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-]+:\d{1,5}$")
    # Per source table (as named in source.tables): partitioning and clustering.
    tables: dict[str, BigQueryTableOptions] = Field(default_factory=dict)

    def options_for(self, table: str) -> BigQueryTableOptions:
        return self.tables.get(table) or BigQueryTableOptions()


_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=6066, ge=1, le=65535)
    enabled: bool = True
    # Required when host is not a loopback address: every request then needs
    # "Authorization: Bearer <token>" (or ?token=<token> in a browser's address bar).
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _token_off_localhost(self) -> WebSettings:
        if self.enabled and self.host not in _LOOPBACK_HOSTS and self.token is None:
            raise ValueError(
                f"web.token is required when web.host is {self.host!r} (not a loopback "
                "address); set CTSTREAM_WEB__TOKEN to a long random string"
            )
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError("web.token must be at least 16 characters")
        return self


Role = Literal["poll", "dedup", "sink"]
ALL_ROLES: tuple[Role, ...] = ("poll", "dedup", "sink")


class AppSettings(_Section):
    id: str = Field(default="ctstream", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    # Which stages this app's workers run. A redundant poller (the seed system ran two
    # collectors) is a second app — another id, the same kafka.topic_prefix — with
    # roles = ["poll"]: it keeps its own versions, and dedup drops its copies.
    roles: list[Role] = Field(default_factory=lambda: list(ALL_ROLES), min_length=1)
    data_dir: Path = Path(".ctstream/data")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["plain", "json"] = "plain"

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, roles: list[str]) -> list[str]:
        if len(set(roles)) != len(roles):
            raise ValueError("a role is listed twice")
        return roles


class Settings(BaseSettings):
    """All of ctstream's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="CTSTREAM_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    app: AppSettings = AppSettings()
    source: SourceSettings
    kafka: KafkaSettings = KafkaSettings()
    dedup: DedupSettings = DedupSettings()
    sink: SinkSettings = SinkSettings()
    bigquery: BigQuerySettings
    web: WebSettings = WebSettings()

    @model_validator(mode="after")
    def _bigquery_tables_are_source_tables(self) -> Settings:
        unknown = sorted(set(self.bigquery.tables) - set(self.source.tables))
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ValueError(f"bigquery.tables names tables not in source.tables: {names}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        return f"{key}: required, not set"
    if kind == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; see README 'Configuration')"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{key}: {message} (got {error.get('input')!r})"
    return f"{key}: {message}"


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), apply environment and ``overrides``; validate.

    Raises ConfigError naming every bad key and the form it expects. Secrets are never
    echoed: pydantic's input values are left out of the message.
    """
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(dict(e)) for e in exc.errors())
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid configuration{where}:\n  {problems}") from None
