"""Run ctstream's BigQuery emulator entry point bound to all interfaces (docker compose).

``python -m ctstream.devstack.emulator_main`` binds 127.0.0.1 only: it is made for the
embedded local stack, which nothing but the same machine may reach. In docker compose the
workers reach the emulator from other containers, so this wrapper replaces the bind address
(``CTSTREAM_EMULATOR_HOST``, default ``0.0.0.0``) and passes every argument on unchanged::

    python bigquery_emulator.py --rest-port 9050 --grpc-port 9060 --project local

Only use it inside a container network: the emulator has no authentication.
"""

from __future__ import annotations

import os
import sys

from ctstream.devstack import emulator_main
emulator_main.HOST = os.environ.get("CTSTREAM_EMULATOR_HOST", "0.0.0.0")  # noqa: S104

if __name__ == "__main__":
    sys.exit(emulator_main.main())
