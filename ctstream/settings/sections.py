"""The other sections: ``[dedup]``, ``[sink]``, ``[bigquery]``, ``[web]``, ``[app]``,
``[faults]``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from ctstream.settings.fields import Duration, Section

_POLICY_TAG = r"^projects/[^/]+/locations/[^/]+/taxonomies/[^/]+/policyTags/[^/]+$"


class DedupSettings(Section):
    window: Duration = 600.0


class SinkSettings(Section):
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
    # The tables of one batch written at once (each table is its own BigQuery request):
    # with many tables changing a little each, one request after another would add up.
    tables_at_once: int = Field(default=16, ge=1, le=64)


class BigQueryTableOptions(Section):
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


class BigQuerySettings(Section):
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    dataset: str = Field(pattern=r"^[A-Za-z0-9_]{1,1024}$")
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    location: str | None = None
    # Path to a service-account key file; never the key itself. None: Application
    # Default Credentials, or anonymous when an emulator endpoint is set.
    credentials_file: Path | None = None
    # How rows are written: insertAll (with insertIds) or the Storage Write API's
    # default stream (both at-least-once; duplicates are left to the latest-state views),
    # or committed-type streams with offsets: each change once (docs/bigquery.md).
    write_api: Literal["insert_all", "storage_write", "storage_write_committed"] = "insert_all"
    # host:port of a Storage Write API emulator (plaintext gRPC); None: Google's endpoint.
    storage_endpoint: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-]+:\d{1,5}$")
    # Per source table (as named in source.tables): partitioning and clustering.
    tables: dict[str, BigQueryTableOptions] = Field(default_factory=dict)
    # The leader merges each change table into <table>_current this often; the
    # latest-state views read <table>_current plus the changes since (docs/bigquery.md).
    compact_interval: Duration = Field(default=300.0, ge=10.0)
    # A merge covers the rows inserted up to this long ago: a row may land in BigQuery
    # up to one request timeout after its bigquery_insert_time, and worker clocks differ
    # a little. At least twice sink.request_timeout.
    compact_settle: Duration = Field(default=150.0, ge=1.0)
    # The latest-state views read the change log's rows of this last stretch of time only
    # (a constant bound, so BigQuery prunes the older partitions); compaction further
    # behind than this makes the views fail with an error saying so.
    compact_horizon: Duration = Field(default=86_400.0, ge=3_600.0)
    # None: change tables are kept whole. Else the change tables created from now on are
    # partitioned by day of bigquery_insert_time, partitions expiring after this long.
    change_log_retention: Duration | None = None
    # With a change_log_retention: each day at 00:00 UTC the leader copies <table>_current
    # into <table>_daily (a partition per day, expiring after this long), from which
    # <table>_at(ts) answers for times the change log no longer holds.
    daily_snapshot_retention: Duration = Field(default=90 * 86_400.0, ge=86_400.0)

    @model_validator(mode="after")
    def _compaction_keeps_up(self) -> BigQuerySettings:
        if self.compact_horizon < 4 * self.compact_interval:
            raise ValueError(
                "bigquery.compact_horizon must be at least 4 times "
                f"bigquery.compact_interval ({4 * self.compact_interval:.0f} s), so a failed "
                "merge or two does not break the latest-state views"
            )
        retention = self.change_log_retention
        if retention is not None and retention < self.compact_horizon + 86_400:
            raise ValueError(
                "bigquery.change_log_retention must be at least a day longer than "
                f"bigquery.compact_horizon ({self.compact_horizon + 86_400:.0f} s): the "
                "latest-state views read the change log that far back"
            )
        if self.endpoint and self.write_api != "insert_all" and not self.storage_endpoint:
            raise ValueError(
                f"bigquery.write_api = {self.write_api!r} with bigquery.endpoint set (an "
                "emulator) needs bigquery.storage_endpoint, the emulator's gRPC host:port; "
                "without it the Storage Write API would go to Google's endpoint"
            )
        return self

    def options_for(self, table: str) -> BigQueryTableOptions:
        return self.tables.get(table) or BigQueryTableOptions()


_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


class WebSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=6066, ge=1, le=65535)
    enabled: bool = True
    # Required when host is not a loopback address: every request then needs
    # "Authorization: Bearer <token>" (or ?token=<token> in a browser's address bar).
    token: SecretStr | None = None
    # The dashboard marks a table (and counts it in the page's title) when its latency
    # p99 over the last minute, or its consumer lag, is beyond these; or when it stopped.
    alert_latency_p99_s: Duration = Field(default=5.0, gt=0)
    alert_consumer_lag: int = Field(default=10_000, ge=0)
    # The dashboard's charts: each worker samples its counters every chart_step and keeps
    # the last chart_window of samples in memory (at most 720 points, so a few hundred KB
    # with many tables); the points of all workers fall on the same multiples of chart_step.
    chart_step: Duration = Field(default=5.0, ge=1.0)
    chart_window: Duration = Field(default=900.0, ge=60.0, le=3600.0)

    @model_validator(mode="after")
    def _chart_points(self) -> WebSettings:
        if self.chart_window < self.chart_step:
            raise ValueError("web.chart_window must be at least web.chart_step")
        if self.chart_window / self.chart_step > 720:
            raise ValueError(
                "web.chart_window / web.chart_step must be at most 720 points; "
                "take a longer chart_step or a shorter chart_window"
            )
        return self

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


class AppSettings(Section):
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
    # Start even if faust-streaming, mode-streaming or aiokafka is not the version ctstream's
    # faust patches were verified with (a warning instead of an error): for a trial run.
    allow_unverified_versions: bool = False

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, roles: list[str]) -> list[str]:
        if len(set(roles)) != len(roles):
            raise ValueError("a role is listed twice")
        return roles


CrashPoint = Literal[
    "poll.acked",
    "snapshot.chunk_acked",
    "snapshot.acked",
    "dedup.forwarded",
    "sink.appended",
    "sink.written",
]


class FaultSettings(Section):
    """For fault tests only (tests/faults): leave empty in production."""

    # point → probability of a SIGKILL each time a worker passes it (devstack/crash_points.py)
    crash_points: dict[CrashPoint, Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=dict
    )
