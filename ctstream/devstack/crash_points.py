"""Named points where a fault test can kill this worker on purpose (``faults.crash_points``).

A SIGKILL at a random moment rarely lands in the narrow windows that matter most for
at-least-once delivery; these points are those windows:

* ``poll.acked``: Kafka acknowledged every event of a poll; the version is not saved yet.
* ``snapshot.acked``: a snapshot's events are acknowledged; neither recorded nor saved.
* ``dedup.forwarded``: deduplicated copies are acknowledged; their ids are not remembered.
* ``sink.written``: BigQuery accepted a batch; its offsets are not committed yet.

Unarmed (the default, and the only sane production setting) a point costs a dict lookup.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Mapping

CRASH_POINTS = ("poll.acked", "snapshot.acked", "dedup.forwarded", "sink.written")

_armed: dict[str, float] = {}
_random = random.Random()  # noqa: S311 - chooses when to crash, not a secret


def arm(points: Mapping[str, float]) -> None:
    """Crash at each point with its probability per pass (replaces what was armed)."""
    unknown = set(points) - set(CRASH_POINTS)
    if unknown:
        raise ValueError(f"unknown crash point(s): {', '.join(sorted(unknown))}")
    _armed.clear()
    _armed.update({name: p for name, p in points.items() if p > 0})


def crash_point(name: str) -> None:
    """SIGKILL this process here, if ``name`` is armed and its dice say so."""
    probability = _armed.get(name)
    if probability is None or _random.random() >= probability:
        return
    # Straight to fd 2: a log handler might buffer, and nothing runs after SIGKILL.
    os.write(2, f"\nctstream: crash point {name}: killing this worker (fault test)\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
