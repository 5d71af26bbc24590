"""``ctstream stack up|down``: start or stop the detached local broker and emulator.

``up`` prints the addresses of the running stack (started now or already running);
``down`` says whether it stopped one. With ``--json`` each prints one JSON object: ``up``
with ``kafka_bootstrap``, ``bigquery_endpoint``, ``bigquery_grpc`` and
``already_running``, ``down`` with ``stopped``. Both exit 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ctstream.devstack.detached_stack import stack_down, stack_up, state_path


def run(args: argparse.Namespace) -> int:
    """``ctstream stack up|down [--json] [--dir DIR]``."""
    base = Path(args.dir)
    if args.action == "up":
        info, already = stack_up(base)
        data = {
            "kafka_bootstrap": info.kafka_bootstrap,
            "bigquery_endpoint": info.bigquery_endpoint,
            "bigquery_grpc": info.bigquery_grpc,
            "already_running": already,
        }
        if args.json:
            print(json.dumps(data))
        else:
            state = "already running" if already else "started"
            print(f"local stack {state} (state in {state_path(base)})")
            print(f"  kafka_bootstrap    {info.kafka_bootstrap}")
            print(f"  bigquery_endpoint  {info.bigquery_endpoint}")
            print(f"  bigquery_grpc      {info.bigquery_grpc}")
        return 0
    stopped = stack_down(base)
    if args.json:
        print(json.dumps({"stopped": stopped}))
    else:
        print("local stack stopped" if stopped else "no local stack was running")
    return 0
