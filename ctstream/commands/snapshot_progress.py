"""``ctstream snapshot --wait``: follow requested snapshots until each is recorded.

Reads the pollers' saved state (the ``ct-versions`` changelog) every ``interval``
seconds and prints each snapshot's progress — rewritten in place on a terminal, a line
per change otherwise — until every one is done (recorded in BigQuery) or was replaced or
cancelled. Interrupting the wait does not stop the snapshots.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from typing import TextIO

from ctstream.commands.saved_state import saved_states
from ctstream.models import SourceState
from ctstream.settings import Settings


def progress_line(table: str, request_id: str, state: SourceState | None) -> tuple[str, bool]:
    """(what to show for ``table``'s snapshot ``request_id``, whether it has ended).

    It has ended when the state names it as the last completed snapshot; a state that
    no longer shows the request nor its progress after showing one of them (cancelled
    or replaced) is the caller's to notice.
    """
    if state is None or state.snapshot_request_id == request_id:
        return f"{table}: requested, waiting for the worker that polls it", False
    progress = state.snapshot
    if progress is not None and progress.id == request_id:
        line = f"{table}: {progress.phase}, {progress.chunks} chunks, {progress.rows} rows"
        if progress.estimate:
            line += f" of ~{progress.estimate}"
        line += f", {progress.rows_per_second(time.time()):,.0f} rows/s"
        if progress.read:
            line += ", waiting for BigQuery to hold every row"
        return line, False
    if state.snapshot_id == request_id:
        return f"{table}: done, recorded with start version {state.snapshot_version}", True
    return f"{table}: requested, waiting for the worker that polls it", False


async def follow_snapshots(
    settings: Settings,
    requests: Mapping[str, str],
    out: TextIO = sys.stdout,
    interval: float = 1.0,
) -> None:
    """Print the progress of the snapshots ``requests`` (table → request id) until each
    has ended."""
    pending = dict(requests)
    terminal = out.isatty() and len(pending) == 1
    shown: dict[str, str] = {}
    seen: set[str] = set()  # tables whose request or progress was seen
    while pending:
        states = await saved_states(settings)
        for table, request_id in list(pending.items()):
            line, ended = progress_line(table, request_id, states.get(table))
            if not ended and not line.endswith("waiting for the worker that polls it"):
                seen.add(table)
            elif not ended and table in seen:  # its progress is gone: done or cancelled
                line, ended = f"{table}: ended without completing (cancelled or replaced)", True
            if ended:
                del pending[table]
            if shown.get(table) != line:
                shown[table] = line
                if terminal:
                    out.write("\r\x1b[2K" + line + ("\n" if ended else ""))
                else:
                    out.write(line + "\n")
                out.flush()
        if pending:
            await asyncio.sleep(interval)
