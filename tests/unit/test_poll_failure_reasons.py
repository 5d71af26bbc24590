"""Failed polls are counted by a reason named from the exception's class, and the source
lag is measured after a poll unless the source just could not be reached; a failed
measure never escapes the poll agent."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import aiokafka.errors
import pytest

from ctstream.agents.poll import TablePoller
from ctstream.agents.stats import POLL_FAILURE_REASONS, PollStats, failure_reason
from ctstream.devstack.crash_points import CrashPoints
from ctstream.errors import (
    ConfigError,
    KafkaSendFailed,
    RequestTooLarge,
    SchemaChanged,
    SourceError,
    SourcePermissionDenied,
    SourceUnavailable,
    VersionTooOld,
)
from ctstream.models import SourceState, TableSpec
from ctstream.source.catalog import SERVER_STATE_GRANT, TableHealth


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (SourceUnavailable("database is locked"), "source_unavailable"),
        (SourcePermissionDenied("refused", "GRANT SELECT"), "permission_denied"),
        (SchemaChanged("changed again", None), "schema_changed"),
        (SourceError("table vanished"), "source_error"),
        (VersionTooOld("cleaned up"), "source_error"),
        (KafkaSendFailed("not acknowledged"), "kafka"),
        (aiokafka.errors.KafkaTimeoutError(), "kafka"),
        (aiokafka.errors.NotLeaderForPartitionError(), "kafka"),
        (RequestTooLarge("413"), "bigquery"),
        (TimeoutError(), "timeout"),
        (ConfigError("a bug's symptom"), "unexpected"),
        (RuntimeError("a bug"), "unexpected"),
    ],
)
def test_the_reason_is_named_from_the_exception_class(exc: BaseException, reason: str) -> None:
    assert failure_reason(exc) == reason
    assert reason in POLL_FAILURE_REASONS


class _Reader:
    """A source that answers the health query, or fails it."""

    def __init__(self, health: TableHealth | Exception) -> None:
        self.health = health
        self.calls = 0

    async def table_health(self, spec: TableSpec, saved_version: int | None) -> TableHealth:
        self.calls += 1
        if isinstance(self.health, Exception):
            raise self.health
        return self.health


def _poller(reader: _Reader, failure: Exception) -> TablePoller:
    spec = TableSpec("accounts", None, "accounts", ())
    registry: Any = SimpleNamespace(specs={"accounts": spec})
    topics: Any = SimpleNamespace(versions={"accounts": SourceState(version=40).to_value()})
    none: Any = None
    poller = TablePoller(
        SimpleNamespace(should_stop=False),  # type: ignore[arg-type]
        none,
        registry,
        topics,
        reader,  # type: ignore[arg-type]
        none,
        PollStats(),
        CrashPoints(),
    )

    async def failing(_spec: TableSpec) -> None:
        raise failure

    poller._run = failing  # type: ignore[method-assign, assignment]
    return poller


def _health(age: float | None, denied: bool = False) -> TableHealth:
    return TableHealth(
        min_valid_version=1,
        current_version=52,
        retention_seconds=7200.0,
        oldest_unpolled_change_age_s=age,
        age_denied=SourcePermissionDenied("denied", SERVER_STATE_GRANT) if denied else None,
    )


async def test_kafka_failures_are_counted_and_the_lag_measured() -> None:
    reader = _Reader(_health(12.5))
    poller = _poller(reader, KafkaSendFailed("not acknowledged"))
    await poller.run("accounts")
    await poller.run("accounts")  # measured once per LAG_CHECK_INTERVAL
    stats = poller.stats
    assert stats.failures["accounts"] == {"kafka": 2}
    assert reader.calls == 1
    assert stats.version_lag["accounts"] == 12  # current 52 - saved 40
    assert stats.unsent_age["accounts"] == 12.5
    assert stats.retention["accounts"] == 7200.0
    assert "accounts" in stats.lag_checked_at


async def test_no_unsent_change_is_an_age_of_zero() -> None:
    poller = _poller(_Reader(_health(None)), KafkaSendFailed("not acknowledged"))
    await poller.run("accounts")
    assert poller.stats.unsent_age["accounts"] == 0.0


async def test_an_unreachable_source_is_not_asked_for_its_lag() -> None:
    reader = _Reader(_health(1.0))
    poller = _poller(reader, SourceUnavailable("database is locked"))
    await poller.run("accounts")
    assert poller.stats.failures["accounts"] == {"source_unavailable": 1}
    assert reader.calls == 0 and not poller.stats.lag_checked_at


async def test_a_failed_measure_never_escapes(caplog: pytest.LogCaptureFixture) -> None:
    poller = _poller(_Reader(SourceUnavailable("gone")), RuntimeError("a bug"))
    with caplog.at_level(logging.WARNING, logger="ctstream.poll.lag"):
        await poller.run("accounts")  # never raises
    assert poller.stats.failures["accounts"] == {"unexpected": 1}
    assert not poller.stats.lag_checked_at
    assert any("could not measure" in r.getMessage() for r in caplog.records)


async def test_an_age_the_login_may_not_read_is_left_out_and_warned_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctstream.agents.poll as poll_module

    monkeypatch.setattr(poll_module, "LAG_CHECK_INTERVAL", 0.0)
    reader = _Reader(_health(None, denied=True))
    poller = _poller(reader, KafkaSendFailed("not acknowledged"))
    poller.stats.unsent_age["accounts"] = 3.0  # from before the permission was taken
    with caplog.at_level(logging.WARNING, logger="ctstream.poll.lag"):
        for _ in range(3):
            await poller.run("accounts")
    assert reader.calls == 3
    assert "accounts" not in poller.stats.unsent_age
    assert poller.stats.version_lag["accounts"] == 12
    warnings = [r for r in caplog.records if r.name == "ctstream.poll.lag"]
    assert len(warnings) == 1 and "GRANT VIEW SERVER STATE" in warnings[0].getMessage()
