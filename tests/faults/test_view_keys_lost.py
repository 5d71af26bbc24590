"""The view sampler's check and its bookkeeping of a snapshot (no stack needed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.faults import view_sampler
from tests.faults.invariants import ViewKey, view_keys_lost
from tests.faults.view_sampler import _START, Sample, ViewSampler
from tests.faults.workload import key_text

BEFORE: dict[ViewKey, int] = {("1",): 10, ("2",): 11, ("3",): 12, ("4",): 13}


def test_a_key_the_source_kept_must_stay_in_the_view() -> None:
    now: dict[ViewKey, int] = {("1",): 10, ("3",): 20}
    loss = view_keys_lost(BEFORE, now, {("1",), ("2",), ("3",), ("4",)}, {}, 0, {}, {}, 0)
    assert sorted(loss.missing) == [("2",), ("4",)]
    assert loss.older == [] and loss.excused == []


def test_a_key_the_source_lacked_before_or_after_the_view_read_is_not_counted() -> None:
    now: dict[ViewKey, int] = {("1",): 10}
    loss = view_keys_lost(BEFORE, now, {("1",), ("3",)}, {}, 0, {}, {}, 0)
    assert loss.missing == [("3",)]


def test_a_key_whose_delete_landed_and_re_insert_not_yet_is_excused() -> None:
    # ("2",): BigQuery's newest change is a delete at 15 > 11, logged at the source at
    # 15: excused. ("3",): newest change a delete at 5, older than the view's 12: not
    # excused. ("4",): a delete at 30 in BigQuery, but the source had logged none at 30
    # when it was read: not excused. ("1",): a delete logged, none in BigQuery, nothing
    # hides it: not excused.
    gone: dict[ViewKey, tuple[int, bool]] = {("2",): (15, True), ("3",): (5, True)}
    gone[("4",)] = (30, True)
    deletes: dict[ViewKey, list[tuple[int, int]]] = {
        ("1",): [(2, 12)],
        ("2",): [(1, 9), (7, 15)],
        ("3",): [(3, 5)],
        ("4",): [(9, 30)],
    }
    loss = view_keys_lost(BEFORE, {}, set(BEFORE), gone, 0, {}, deletes, upto_seq=8)
    assert sorted(loss.missing) == [("1",), ("3",), ("4",)]
    assert loss.excused == [("2",)]


def test_a_key_the_snapshot_read_deleted_and_inserted_again_since_is_excused() -> None:
    # Snapshot 20 recorded; every key's newest change (its baseline row) is older, so it
    # hides them all. ("1",): deleted at 14 (after its 10), inserted again at 25, after the
    # snapshot began: the snapshot may have read it deleted, excused. ("2",): deleted at
    # 15, inserted again at 18, before the snapshot began: the snapshot had to read it,
    # lost. ("3",): inserted again at 25, but no delete logged after its 12: lost. ("4",):
    # never deleted: lost (a snapshot recorded before its rows landed).
    gone: dict[ViewKey, tuple[int, bool]] = {k: (v, False) for k, v in BEFORE.items()}
    created: dict[ViewKey, int] = {("1",): 25, ("2",): 18, ("3",): 25}
    deletes: dict[ViewKey, list[tuple[int, int]]] = {
        ("1",): [(1, 14)],
        ("2",): [(2, 15)],
        ("3",): [(3, 8)],
    }
    loss = view_keys_lost(BEFORE, {}, set(BEFORE), gone, 20, created, deletes, upto_seq=9)
    assert loss.read_deleted == [("1",)] and loss.excused == []
    assert sorted(loss.missing) == [("2",), ("3",), ("4",)]


def test_an_older_version_than_before_is_a_loss() -> None:
    now: dict[ViewKey, int] = {("1",): 9, ("2",): 11, ("3",): 12, ("4",): 14}
    loss = view_keys_lost(BEFORE, now, set(BEFORE), {}, 0, {}, {}, 0)
    assert loss.older == [("1",)] and loss.missing == []


def test_keys_as_the_delete_log_and_bigquery_spell_them() -> None:
    assert tuple(json.loads(key_text(("ns|1", "t,2")))) == ("ns|1", "t,2")
    assert tuple(json.loads(key_text((7, 3)))) == ("7", "3")  # CAST(INT64 AS STRING)


def test_the_snapshot_start_line_is_recognised() -> None:
    line = (
        "[2026-12-07 17:10:59,441] [10984] [INFO] ctstream.snapshot: table order_lines: "
        "snapshot v812.1796663459441 starting at version 812 (saved version too old: "
        "...) [table=order_lines]"
    )
    m = _START.match(line)
    assert m is not None and m[3] == "order_lines" and m[4] == "812"
    at = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000
    assert re.fullmatch(r"\d+\.\d+", f"{at:.3f}") and at % 1 > 0.44


class _Writer:
    def ref(self, table: str) -> str:
        return f"local.ds.{table}"


def _scripted_sampler(
    tmp_path: Path, views: list[dict[ViewKey, int]], start_at: int, record_at: int
) -> Any:
    """A sampler of one table ``a`` whose samples are ``views`` (one a second, the source
    holding keys 1-4 throughout), the cleanup before the second sample, the snapshot's
    start (version 100) logged half a second before sample ``start_at``, its record seen
    from sample ``record_at`` on."""
    db = tmp_path / "source.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE a (id INTEGER PRIMARY KEY)")
    (tmp_path / "worker-0.log").write_text("")
    h = SimpleNamespace(tables=["a"], db=db, writer=_Writer(), workdir=tmp_path)
    sampler = ViewSampler(h, epoch=time.time(), say=lambda _: None)  # type: ignore[arg-type]
    t0 = sampler._created + 1
    script = iter(range(len(views)))

    async def sample() -> Sample | None:
        i = next(script, None)
        if i is None:
            await asyncio.sleep(0.05)
            return None
        if i == 1:
            sampler.trigger()
        if i == start_at:
            at = t0 + i - 0.5
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
            with (tmp_path / "worker-0.log").open("a") as log:
                log.write(
                    f"[{stamp},{int(at % 1 * 1000):03d}] [1] [INFO] ctstream.snapshot: table a: "
                    "snapshot v100.1 starting at version 100 (saved version too old: ...)\n"
                )
        recorded = {"a": 100 if i >= record_at else 0}
        source: dict[str, set[ViewKey]] = {"a": {("1",), ("2",), ("3",), ("4",)}}
        view = {"a": views[i]}
        return Sample(i, t0 + i, t0 + i + 0.2, view, {"a": {}}, recorded, source, {"a": {}}, 0)

    sampler._sample = sample  # type: ignore[method-assign]
    return sampler


async def test_the_sampler_checks_each_sample_from_the_start_to_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(view_sampler, "INTERVAL", 0.01)
    monkeypatch.setattr(view_sampler, "PAUSE", 0.01)
    monkeypatch.setattr(view_sampler, "AFTER_RECORD", 0.0)
    full: dict[ViewKey, int] = {("1",): 1, ("2",): 2, ("3",): 3}
    views: list[dict[ViewKey, int]] = [full, full, {**full, ("4",): 4}, full, full]
    views += [{("1",): 1}, full, full]
    sampler = _scripted_sampler(tmp_path, views, start_at=3, record_at=6)
    result = await asyncio.wait_for(sampler.run(asyncio.Event(), limit=10), 10)
    # Samples 3, 4, 5 were taken during the snapshot; 6 saw its record; 7 came after it
    # and is not checked. The baseline is sample 2 (just before the start): key 4 missing
    # from sample 3 on is lost, and keys 2 and 3 missing from sample 5.
    assert result.during == {"a": 3}
    assert result.keys_lost == 3 and result.bad_samples == 4
    (problem,) = result.problems
    assert problem.startswith("a_latest lost 3 of the 4 keys it held at ")
    assert "in 4 samples from " in problem and "(during its snapshot, +0.5s from" in problem
    assert "2 back by the last sample checked" in problem
    assert "('4',) (v4, lacked " in problem
    assert result.rounds == len(views)  # and it stopped by itself once the record was seen


async def test_a_sampler_without_a_snapshot_start_checks_from_the_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(view_sampler, "INTERVAL", 0.01)
    monkeypatch.setattr(view_sampler, "PAUSE", 0.01)
    monkeypatch.setattr(view_sampler, "AFTER_RECORD", 0.0)
    full: dict[ViewKey, int] = {("1",): 1, ("2",): 2}
    views: list[dict[ViewKey, int]] = [full, full, full, {("1",): 1}, full, full]
    sampler = _scripted_sampler(tmp_path, views, start_at=-1, record_at=4)
    result = await asyncio.wait_for(sampler.run(asyncio.Event(), limit=10), 10)
    assert result.keys_lost == 1 and result.during == {}
    assert any("start never logged" in n for n in result.notes)
