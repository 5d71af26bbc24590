"""Named points where a fault test can kill this worker on purpose (``faults.crash_points``).

A SIGKILL at a random moment rarely lands in the narrow windows that matter most for
at-least-once delivery; these points are those windows:

* ``poll.acked``: Kafka acknowledged every event of a poll; the version is not saved yet.
* ``snapshot.chunk_acked``: a snapshot chunk's events are acknowledged; its progress is
  not saved yet (the chunk is read again).
* ``snapshot.acked``: every row of a snapshot is in BigQuery; it is neither recorded nor
  saved as done.
* ``dedup.forwarded``: deduplicated copies are acknowledged; their ids are not remembered.
* ``sink.appended``: the exactly-once path appended a table's rows of a partition; the
  sink's record of them is not written yet (agents/exactly_once.py).
* ``sink.written``: BigQuery accepted a batch; its offsets are not committed yet.

A worker owns one :class:`CrashPoints`, unarmed unless its settings arm it (the only sane
production setting); an unarmed point costs a dict lookup.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Mapping
from typing import get_args

from ctstream.settings import CrashPoint

# The points, in the order the module's docstring lists them (the settings' type names them).
CRASH_POINTS: tuple[str, ...] = get_args(CrashPoint)


class CrashPoints:
    """The points armed in this process, each with its probability of a SIGKILL per pass."""

    def __init__(self, armed: Mapping[str, float] | None = None, seed: int | None = None) -> None:
        """Arm ``armed`` (point → probability; 0 disarms); ValueError for an unknown name."""
        armed = dict(armed or {})
        unknown = set(armed) - set(CRASH_POINTS)
        if unknown:
            raise ValueError(f"unknown crash point(s): {', '.join(sorted(unknown))}")
        self.armed = {name: p for name, p in armed.items() if p > 0}
        self._dice = random.Random(seed)  # noqa: S311 - chooses when to crash, not a secret

    def reach(self, name: str) -> None:
        """SIGKILL this process here, if ``name`` is armed and its dice say so."""
        probability = self.armed.get(name)
        if probability is None or self._dice.random() >= probability:
            return
        # Straight to fd 2: a log handler might buffer, and nothing runs after SIGKILL.
        os.write(2, f"\nctstream: crash point {name}: killing this worker (fault test)\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
