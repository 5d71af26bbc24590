"""The long fault run, by hand: ``python -m tests.faults.soak --minutes 30``.

Starts its own local stack (broker and emulator on loopback), runs the workload for the
given time with faults scaled to it, prints progress and the summary line, and exits 1 if
any invariant failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

from ctstream.devstack.local_stack import stack_running
from tests.faults.chaos import FaultPlan, run_faults


def plan_for(minutes: float, rate: float, seed: int) -> FaultPlan:
    seconds = minutes * 60
    return FaultPlan(
        seconds=seconds,
        rate=rate,
        kills=max(20, int(seconds / 60)),  # one a minute, at least 20
        crash_rounds=max(1, int(minutes / 10)),
        rebalances=max(1, int(minutes / 10)),
        outage=min(180.0, seconds / 10),  # "minutes" of BigQuery down
        storm=min(60.0, seconds / 30),
        poison_rounds=max(1, int(minutes / 10)),
        overruns=max(1, int(minutes / 15)),
        settle=600.0,
        seed=seed,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="workload time (default 30)")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="source changes per second (default 100)"
    )
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed")
    parser.add_argument(
        "--workdir", type=Path, help="keep logs and data here (default: a temp dir)"
    )
    args = parser.parse_args()
    # The BigQuery fault proxy drops connections on purpose; aiohttp logs each one.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    plan = plan_for(args.minutes, args.rate, args.seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ctstream-soak-"))
    print(f"soak: {plan}\nlogs in {workdir}", flush=True)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {text}", flush=True)

    with stack_running(workdir / "stack") as stack:
        summary = asyncio.run(run_faults(stack, workdir / "run", plan, say))
    print(summary.line(), flush=True)
    for problem in summary.problems:
        print("PROBLEM:", problem)
    return 1 if summary.problems or summary.rows_lost else 0


if __name__ == "__main__":
    sys.exit(main())
