"""``ctstream worker``: run one pipeline worker until it is stopped.

The worker's process keeps pyarrow, numpy and pandas out: google-cloud-bigquery (and its
storage client) import them whenever they are installed (the local emulator needs them),
for DataFrame reads a worker never makes, about 36 MB of a worker's RSS. Marked missing
before any BigQuery module is imported, the clients take their no-pyarrow paths.
"""

from __future__ import annotations

import argparse
import sys

UNUSED_IN_A_WORKER = ("pyarrow", "numpy", "pandas")


def skip_dataframe_libraries() -> None:
    """Mark the :data:`UNUSED_IN_A_WORKER` libraries as missing in this process (those not
    imported yet); call it before anything imports google-cloud-bigquery."""
    for name in UNUSED_IN_A_WORKER:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    """``ctstream worker --config FILE [--loglevel L]``; returns the worker's exit status."""
    skip_dataframe_libraries()
    from ctstream.settings import load_settings
    from ctstream.worker import run_worker

    settings = load_settings(args.config)
    return run_worker(settings, loglevel=args.loglevel)
