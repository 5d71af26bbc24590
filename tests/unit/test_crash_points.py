"""Crash points: armed by name only, unarmed by default, and killing when armed."""

from __future__ import annotations

import signal
import subprocess
import sys
import typing

import pytest

from ctstream.devstack import crash_points
from ctstream.errors import ConfigError
from ctstream.settings import CrashPoint, load_settings

BASE = {
    "source": {"dsn": "Driver=SQLite3;Database=x.db", "tables": ["t"]},
    "bigquery": {"project": "p", "dataset": "d"},
}


def test_the_settings_name_exactly_the_points_the_code_has() -> None:
    assert set(typing.get_args(CrashPoint)) == set(crash_points.CRASH_POINTS)


def test_settings_refuse_an_unknown_point_and_a_bad_probability() -> None:
    with pytest.raises(ConfigError, match=r"faults\.crash_points"):
        load_settings(**BASE, faults={"crash_points": {"poll.akced": 1.0}})
    with pytest.raises(ConfigError, match=r"faults\.crash_points\.sink\.written"):
        load_settings(**BASE, faults={"crash_points": {"sink.written": 2}})
    assert load_settings(**BASE).faults.crash_points == {}


def test_arming_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown crash point"):
        crash_points.CrashPoints({"nowhere": 1.0})


def test_an_unarmed_point_returns_and_an_armed_one_kills_the_process() -> None:
    crash_points.CrashPoints().reach("sink.written")  # still alive
    crash_points.CrashPoints({"sink.written": 0}).reach("sink.written")  # 0 disarms
    code = (
        "from ctstream.devstack.crash_points import CrashPoints\n"
        "c = CrashPoints({'sink.written': 1.0})\n"
        "c.reach('poll.acked')\n"
        "print('passed poll.acked', flush=True)\n"
        "c.reach('sink.written')\n"
        "print('not reached')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.strip() == "passed poll.acked"
    assert "crash point sink.written: killing this worker" in proc.stderr
