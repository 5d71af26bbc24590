"""The poller's saved state per table, poll ticks, and doctor's findings from them."""

from __future__ import annotations

import orjson
import pytest

from ctstream.commands.doctor import cleanup_finding, table_findings
from ctstream.models import ColumnSpec, PollTick, SourceState, TableSpec
from ctstream.models.source_state import SnapshotProgress
from ctstream.source.reader import TableHealth

SPEC = TableSpec("items", None, "items", (ColumnSpec("id", "INTEGER", False, 1),))


def test_state_round_trip_and_transitions() -> None:
    state = SourceState(version=7).requesting("because", "r12")
    assert SourceState.from_value(state.to_value()) == state
    progress = SnapshotProgress("r12", "because", 40, (9, "z"), 1000.5)
    started = state.snapshot_started(progress, 7)
    assert started == SourceState(version=7, snapshot=progress)  # the request taken up
    assert SourceState.from_value(started.to_value()) == started
    progress = progress.chunk_sent((3, "a"), 5, done=False).chunk_sent((9, "z"), 2, done=True)
    assert (progress.after, progress.chunks, progress.rows, progress.read) == ((9, "z"), 2, 7, True)
    running = started.advanced(45).with_progress(progress)
    assert SourceState.from_value(running.to_value()) == running
    done = running.snapshot_done(40)
    assert done == SourceState(version=45, snapshot_version=40)
    assert done.advanced(50) == SourceState(version=50, snapshot_version=40)
    assert state.requesting(None) == SourceState(version=7)


def test_progress_survives_json_with_every_key_type() -> None:
    """Keys as read (JSON values, wrapped SQLite odd values too) come back equal."""
    key = (1, -0.5, "x", None, True, {"sqlite_text": "1_0"})
    progress = SnapshotProgress(
        "v3.1", "r", 3, key, 1.0, after=key, paused=True, keys_withheld=True
    )
    value = orjson.loads(orjson.dumps(SourceState(snapshot=progress).to_value()))
    assert SourceState.from_value(value).snapshot == progress


@pytest.mark.parametrize(
    "value",
    [
        None,
        3,
        {"id": 1},
        {"id": "x", "reason": "r"},
        {"id": "x", "reason": "r", "start_version": "1"},
    ],
)
def test_damaged_progress_is_none(value: object) -> None:
    assert SnapshotProgress.from_value(value) is None


@pytest.mark.parametrize(
    ("value", "state"),
    [
        (None, SourceState()),
        (17, SourceState(version=17)),  # written before snapshots existed
        ({"version": 3, "snapshot_version": None}, SourceState(version=3)),
        ({"version": "x", "snapshot_requested": 5}, SourceState()),
    ],
)
def test_state_from_saved_values(value: object, state: SourceState) -> None:
    assert SourceState.from_value(value) == state


@pytest.mark.parametrize("value", [True, "12", [1]])
def test_state_refuses_other_values(value: object) -> None:
    with pytest.raises(ValueError, match="not a source state"):
        SourceState.from_value(value)


def test_poll_tick_round_trip() -> None:
    tick = PollTick("dbo.items", 12.5, snapshot="requested")
    assert PollTick.from_bytes(tick.to_bytes()) == tick
    assert PollTick.from_bytes(b'{"table": "t"}') == PollTick("t", 0.0)
    for control in ("pause", "resume", "cancel"):
        tick = PollTick("t", 1.0, control=control)  # type: ignore[arg-type]
        assert PollTick.from_bytes(tick.to_bytes()) == tick
    with pytest.raises(ValueError, match="control 'stop' is none of pause, resume, cancel"):
        PollTick.from_bytes(b'{"table": "t", "control": "stop"}')


def test_a_request_is_identified_by_its_time_alike_for_every_reader() -> None:
    tick = PollTick.from_bytes(PollTick("t", 1733581699.123456, snapshot="x").to_bytes())
    assert tick.request_id == "r1733581699123456"
    assert PollTick("t", 1733581699.123457, snapshot="x").request_id != tick.request_id


@pytest.mark.parametrize("data", [b"", b"[]", b'{"table": 3}', b"\xff", None])
def test_poll_tick_refuses_garbage(data: bytes | None) -> None:
    with pytest.raises(ValueError):
        PollTick.from_bytes(data)


def health(min_valid: int | None = 10, age: float | None = None) -> TableHealth:
    return TableHealth(min_valid, 100, 3600.0, age)


def by_check(findings: list) -> dict:  # type: ignore[type-arg]
    return {f.check: f for f in findings}


def test_saved_version_below_min_valid_is_an_error_with_the_command_to_run() -> None:
    found = by_check(table_findings(SPEC, SourceState(version=5), health(), None, "initial"))
    assert found["saved_version"].level == "error"
    assert "ctstream snapshot --config FILE --table items" in found["saved_version"].advice
    found = by_check(table_findings(SPEC, SourceState(version=5), health(), None, "when_needed"))
    assert "automatically" in found["saved_version"].advice


@pytest.mark.parametrize(
    ("age", "level"), [(None, "ok"), (60.0, "ok"), (2000.0, "warn"), (4000.0, "error")]
)
def test_poll_lag_against_retention(age: float | None, level: str) -> None:
    found = by_check(
        table_findings(SPEC, SourceState(version=50), health(age=age), None, "initial")
    )
    assert found["saved_version"].level == "ok"
    assert found["poll_lag"].level == level


def test_untracked_and_unpolled_tables() -> None:
    [gone] = table_findings(SPEC, None, health(min_valid=None), None, "initial")
    assert gone.level == "error" and "ENABLE CHANGE_TRACKING" in gone.advice
    found = by_check(table_findings(SPEC, None, health(), None, "never"))
    assert found["saved_version"].level == "ok"
    assert "not polled yet" in found["saved_version"].detail


def test_cleanup_backlog() -> None:
    assert cleanup_finding(None, 86400.0) is None
    ok = cleanup_finding(86400.0, 86400.0)
    assert ok is not None and ok.level == "ok"
    behind = cleanup_finding(30 * 86400.0, 2 * 86400.0)
    assert behind is not None and behind.level == "error"
    assert "sp_flush_CT_internal_table_on_demand" in behind.advice
