"""The start-up check of faust, mode and aiokafka versions (faust_compat/versions.py)."""

from __future__ import annotations

import logging
import logging.config
import tomllib
from pathlib import Path

import pytest

import ctstream
from ctstream.errors import ConfigError, UnverifiedDependency
from ctstream.settings import load_settings
from ctstream.streams.faust_compat import check_versions, versions
from ctstream.streams.faust_compat.versions import ALLOW_UNVERIFIED_VARIABLE, VERIFIED

PYPROJECT = Path(ctstream.__file__).parent.parent / "pyproject.toml"


def newer_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {**VERIFIED, "faust-streaming": "0.16.0"}
    monkeypatch.setattr(versions, "installed_versions", lambda: installed)


def test_the_installed_versions_are_the_verified_ones() -> None:
    assert versions.installed_versions() == dict(VERIFIED)
    check_versions(allow_unverified=False)  # no error


def test_another_version_stops_the_worker_with_both_versions_and_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    newer_faust(monkeypatch)
    with pytest.raises(UnverifiedDependency) as raised:
        check_versions(allow_unverified=False)
    message = str(raised.value)
    assert "faust-streaming 0.16.0 is installed" in message
    assert "verified with faust-streaming 0.15.3" in message
    assert f"{ALLOW_UNVERIFIED_VARIABLE}=true" in message
    assert "mode-streaming" not in message and "aiokafka" not in message  # those match
    assert isinstance(raised.value, ConfigError)  # the CLI exits with status 2


def test_a_missing_distribution_is_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "installed_versions", lambda: {**VERIFIED, "aiokafka": None})
    with pytest.raises(UnverifiedDependency, match=r"aiokafka \(not installed\) is installed"):
        check_versions(allow_unverified=False)


def test_a_trial_run_warns_instead(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    newer_faust(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="ctstream.faust"):
        check_versions(allow_unverified=True)
    (record,) = caplog.records
    assert "TRIAL RUN" in record.getMessage() and "0.16.0" in record.getMessage()


def test_the_variable_named_is_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def settings() -> bool:
        loaded = load_settings(
            None,
            app={"data_dir": str(tmp_path)},
            source={"dsn": "Driver=SQLite3;Database=./demo.db", "tables": ["items"]},
            bigquery={"project": "local", "dataset": "cdc"},
        )
        return loaded.app.allow_unverified_versions

    assert settings() is False
    monkeypatch.setenv(ALLOW_UNVERIFIED_VARIABLE, "true")
    assert settings() is True


def test_pyproject_pins_the_verified_versions() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = {d.split("==")[0].strip(): d.split("==")[1].strip() for d in dependencies if "==" in d}
    for distribution, version in VERIFIED.items():
        assert pins.get(distribution) == version, distribution


def test_a_worker_checks_before_it_builds_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ctstream import worker

    newer_faust(monkeypatch)
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)  # leave pytest's

    def built(*args: object, **kwargs: object) -> None:
        raise AssertionError("built before the version check")

    monkeypatch.setattr(worker, "BigQueryWriter", built)
    settings = load_settings(
        None,
        app={"data_dir": str(tmp_path)},
        source={"dsn": "Driver=SQLite3;Database=./demo.db", "tables": ["items"]},
        bigquery={"project": "local", "dataset": "cdc"},
    )
    with pytest.raises(UnverifiedDependency, match=r"faust-streaming 0\.16\.0"):
        worker.run_worker(settings)
