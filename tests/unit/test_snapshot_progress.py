"""``ctstream snapshot --wait``: what it shows for each state of a requested snapshot."""

from __future__ import annotations

import time

from ctstream.commands.snapshot_progress import progress_line
from ctstream.models import SourceState
from ctstream.models.source_state import SnapshotProgress

BEFORE = SourceState(version=10, snapshot_version=3)


def test_each_phase_of_a_requested_snapshot() -> None:
    requested = BEFORE.requesting("r", "r17")
    assert progress_line("t", "r17", requested) == (
        "t: requested, waiting for the worker that polls it",
        False,
    )
    assert progress_line("t", "r17", BEFORE)[1] is False  # not taken up yet
    progress = SnapshotProgress("r17", "r", 12, (99,), time.time() - 10, estimate=1000)
    progress = progress.chunk_sent((40,), 400, done=False)
    line, ended = progress_line("t", "r17", BEFORE.snapshot_started(progress, 10))
    assert not ended and line.startswith("t: reading, 1 chunks, 400 rows of ~1000, ")
    read = progress.chunk_sent((99,), 600, done=True)
    line, ended = progress_line("t", "r17", BEFORE.snapshot_started(read, 10))
    assert not ended and "verifying" in line and "waiting for BigQuery" in line
    done = BEFORE.snapshot_started(read, 10).snapshot_done(12, "r17")
    assert progress_line("t", "r17", done) == ("t: done, recorded with start version 12", True)
    other = BEFORE.snapshot_started(read, 10).snapshot_done(12, "r18")
    assert progress_line("t", "r17", other)[1] is False
