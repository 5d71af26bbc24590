"""The one typed settings model: a TOML file plus ``CTSTREAM_`` environment variables.

Every key of the file can be set by environment as ``CTSTREAM_<SECTION>__<KEY>``
(environment wins over the file). Secrets are ``SecretStr``. Settings are validated once,
at start; a bad value fails with the key's dotted name and the form it expects.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
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
from ctstream.models.masking import check_rule
from ctstream.models.table_selection import TableSelection

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
MaskRule = Annotated[str, AfterValidator(check_rule)]

_DSN_PAIR = re.compile(r"^\s*[A-Za-z][A-Za-z0-9 _-]*\s*=\s*(\{[^}]*\}|[^;]*)\s*$")
# SQLite: a bare name; SQL Server: schema.table. Quotes/brackets are never needed here —
# names are looked up in the catalog and quoted by the reader.
_POLICY_TAG = r"^projects/[^/]+/locations/[^/]+/taxonomies/[^/]+/policyTags/[^/]+$"
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
    # Whether, and how often, the source catalog is read again while running for tables
    # that started or stopped being tracked (and that source.tables selects).
    discover: bool = True
    discover_interval: Duration = 30.0
    # Personal data, protected before anything is produced (models/masking.py):
    # table → column → 'hash' | 'null' | 'drop' | 'truncate:N'.
    mask: dict[str, dict[str, MaskRule]] = Field(default_factory=dict)
    # The HMAC key of 'hash' (at least 16 characters); a secret: CTSTREAM_SOURCE__MASK_KEY.
    mask_key: SecretStr | None = None
    # A restricted copy (topics <prefix>.<t>.restricted, BigQuery <t>_restricted) with
    # these columns NULL, for consumers that may not see them: table → columns.
    restricted: dict[str, Annotated[list[str], Field(min_length=1)]] = Field(default_factory=dict)

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
        for entry in tables:
            name = entry.removeprefix("!")
            if not _TABLE_NAME.match(name):
                raise ValueError(
                    f"{entry!r} is not a table name or pattern: expected 'table' (sqlite) or "
                    "'schema.table' (mssql), with * ? [..] wildcards and a leading ! to "
                    "exclude, without control characters"
                )
        if len(set(tables)) != len(tables):
            raise ValueError("a table is listed twice")
        if info.data.get("dialect") == "mssql":
            for entry in tables:
                if "." not in entry:
                    raise ValueError(
                        f"{entry!r} needs its schema for mssql, e.g. 'dbo.{entry.lstrip('!')}'"
                        " (patterns too: 'dbo.*')"
                    )
        TableSelection.parse(tables)  # raises on contradictions
        return tables

    @property
    def selection(self) -> TableSelection:
        return TableSelection.parse(self.tables)

    @field_validator("mask_key")
    @classmethod
    def _mask_key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("expected at least 16 characters (a random secret)")
        return value

    @model_validator(mode="after")
    def _masking_consistent(self) -> SourceSettings:
        selection = self.selection
        for key in ("mask", "restricted"):
            for table in getattr(self, key):
                if not selection.selects(table):
                    raise ValueError(
                        f"source.{key}: names {table!r}, which source.tables does not select"
                    )
        hashes = [
            f"{t}.{c}" for t, cols in self.mask.items() for c, r in cols.items() if r == "hash"
        ]
        if hashes and self.mask_key is None:
            raise ValueError(
                f"source.mask_key: required to hash {', '.join(hashes)}; set a random secret of "
                "at least 16 characters, e.g. by CTSTREAM_SOURCE__MASK_KEY"
            )
        for table, columns in self.restricted.items():
            dropped = [c for c in columns if self.mask.get(table, {}).get(c) == "drop"]
            if dropped:
                raise ValueError(
                    f"source.restricted.{table}: {', '.join(dropped)} dropped by source.mask "
                    "is not carried at all; leave it out of the restricted copy"
                )
        return self

    @field_validator("table_snapshot_mode")
    @classmethod
    def _known_tables(cls, modes: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        tables = info.data.get("tables")
        if tables is None:
            return modes  # tables itself was refused
        selection = TableSelection.parse(tables)
        unknown = sorted(t for t in modes if not selection.selects(t))
        if unknown:
            raise ValueError(
                f"names tables that source.tables does not select: {', '.join(map(repr, unknown))}"
            )
        return modes


class TopicRetention(_Section):
    """How long each kind of topic keeps messages (``retention.ms``, set at creation).

    The seed system kept 7 days so that a new consumer, or `ctstream replay`, could re-read.
    """

    raw: Duration = 7 * 86400.0
    deduped: Duration = 7 * 86400.0
    errors: Duration = 30 * 86400.0
    poll_ticks: Duration = 86400.0


_log = logging.getLogger(__name__)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
_SASL_KEYS = ("sasl_mechanism", "sasl_username", "sasl_password")
_TLS_FILE_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")


def _no_key_password() -> bytes:
    # load_cert_chain would otherwise prompt on the terminal for an encrypted key.
    raise ValueError("encrypted private keys are not supported")


class KafkaSettings(_Section):
    # Errors never quote the input: it may hold sasl_password.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="ctstream", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    retention: TopicRetention = TopicRetention()
    # Transport security, as Kafka names it: SSL is TLS; SASL_* authenticate with
    # sasl_username/sasl_password (set the password by CTSTREAM_KAFKA__SASL_PASSWORD).
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = Field(default=None, min_length=1)
    sasl_password: SecretStr | None = None
    # PEM files. ssl_cafile: the CA that signed the brokers' certificates (None: the
    # system's CAs); ssl_certfile/ssl_keyfile: a client certificate, when the broker
    # asks for one (the key unencrypted; certfile alone may hold both).
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("expected host:port[,host:port...], e.g. '127.0.0.1:9092'")
        return value

    @field_validator(*_TLS_FILE_KEYS)
    @classmethod
    def _pem_file_exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"file {str(path)!r} does not exist; expected the path of a PEM file")
        return path

    @model_validator(mode="after")
    def _transport_security(self) -> KafkaSettings:
        protocol = self.security_protocol
        if protocol.startswith("SASL_"):
            for key in _SASL_KEYS:
                if getattr(self, key) is None:
                    raise ValueError(
                        f"kafka.{key} is required when kafka.security_protocol is "
                        f"{protocol!r}" + _SASL_EXAMPLE[key]
                    )
            if self.sasl_password is not None and not self.sasl_password.get_secret_value():
                raise ValueError("kafka.sasl_password must not be empty")
        else:
            for key in _SASL_KEYS:
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"kafka.{key} is set but kafka.security_protocol is {protocol!r}, "
                        "which does not authenticate; expected 'SASL_SSL' (or "
                        "'SASL_PLAINTEXT') with kafka.sasl_*, or no kafka.sasl_* keys"
                    )
        if protocol.endswith("SSL"):
            self._load_tls_files()
        else:
            tls_keys = [k for k in _TLS_FILE_KEYS if getattr(self, k) is not None]
            if not self.ssl_check_hostname:
                tls_keys.append("ssl_check_hostname")
            if tls_keys:
                raise ValueError(
                    f"kafka.{tls_keys[0]} is set but kafka.security_protocol is "
                    f"{protocol!r}, which does not use TLS; expected 'SSL' or 'SASL_SSL'"
                )
            if protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
                _log.warning(
                    "kafka.sasl_mechanism 'PLAIN' over kafka.security_protocol "
                    "'SASL_PLAINTEXT' sends the Kafka password unencrypted; use 'SASL_SSL'"
                )
        if protocol.endswith("SSL") and not self.ssl_check_hostname:
            _log.warning(
                "kafka.ssl_check_hostname is false: the brokers' certificates are not "
                "matched to their host names, so anyone with a certificate from the same "
                "CA can pose as the broker; set it to true outside of tests"
            )
        return self

    def _load_tls_files(self) -> None:
        """Fail at start, naming the key, when a PEM file is not what it should be."""
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("kafka.ssl_keyfile needs kafka.ssl_certfile (the client certificate)")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.ssl_cafile is not None:
            try:
                context.load_verify_locations(cafile=self.ssl_cafile)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(
                    f"kafka.ssl_cafile {str(self.ssl_cafile)!r} holds no readable CA "
                    f"certificate ({type(exc).__name__}); expected a PEM file with "
                    "'-----BEGIN CERTIFICATE-----'"
                ) from None
        if self.ssl_certfile is not None:
            try:
                context.load_cert_chain(
                    self.ssl_certfile, self.ssl_keyfile, password=_no_key_password
                )
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(
                    f"kafka.ssl_certfile/kafka.ssl_keyfile: cannot load the client "
                    f"certificate and its key ({type(exc).__name__}); expected PEM files, "
                    "the key unencrypted"
                ) from None


_SASL_EXAMPLE = {
    "sasl_mechanism": ": one of 'PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'",
    "sasl_username": ', e.g. sasl_username = "ctstream"',
    "sasl_password": " (best set by CTSTREAM_KAFKA__SASL_PASSWORD rather than in the file)",
}


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
    # Source column → BigQuery policy tag (column-level access control), applied when the
    # table is created or evolved, and to existing columns at start.
    policy_tags: dict[str, Annotated[str, Field(pattern=_POLICY_TAG)]] = Field(default_factory=dict)


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
LogLevel = Literal["debug", "info", "warning", "error"]
_LOGGER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*")


def _logger_name(name: str) -> str:
    if not _LOGGER_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a logger's name: dotted words as Python's logging names them, "
            "e.g. aiokafka.consumer.group_coordinator"
        )
    return name


class AppSettings(_Section):
    id: str = Field(default="ctstream", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    # Which stages this app's workers run. A redundant poller (the seed system ran two
    # collectors) is a second app — another id, the same kafka.topic_prefix — with
    # roles = ["poll"]: it keeps its own versions, and dedup drops its copies.
    roles: list[Role] = Field(default_factory=lambda: list(ALL_ROLES), min_length=1)
    data_dir: Path = Path(".ctstream/data")
    log_level: LogLevel = "info"
    # Levels of single loggers over log_level, e.g. {"aiokafka.consumer.group_coordinator"
    # = "debug"} to see a consumer group's joins and syncs without every debug line.
    log_levels: dict[Annotated[str, AfterValidator(_logger_name)], LogLevel] = Field(
        default_factory=dict
    )
    log_format: Literal["plain", "json"] = "plain"

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, roles: list[str]) -> list[str]:
        if len(set(roles)) != len(roles):
            raise ValueError("a role is listed twice")
        return roles


CrashPoint = Literal["poll.acked", "snapshot.acked", "dedup.forwarded", "sink.written"]


class FaultSettings(_Section):
    """For fault tests only (tests/faults): leave empty in production."""

    # point → probability of a SIGKILL each time a worker passes it (devstack/crash_points.py)
    crash_points: dict[CrashPoint, Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=dict
    )


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
    faults: FaultSettings = FaultSettings()

    @model_validator(mode="after")
    def _bigquery_tables_are_source_tables(self) -> Settings:
        selection = self.source.selection
        unknown = sorted(t for t in self.bigquery.tables if not selection.selects(t))
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ValueError(
                f"bigquery.tables names tables that source.tables does not select: {names}"
            )
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
