"""Run the BigQuery emulator (bqemulator) as a process of its own.

Usage::

    python -m ctstream.devstack.emulator_main --rest-port N --grpc-port M \\
        [--ready-file PATH] [--log-level warning] [--project local] [--time-travel]

The emulator insists on DuckDB's ``spatial`` extension at start, which cannot be
downloaded on machines without internet access; this entry point replaces the loader
with a no-op (only GEOGRAPHY is lost). DuckDB's ``avro`` extension is skipped too unless
``--avro`` is given: its download attempt fails offline after about two seconds, and only
Avro load/extract jobs need it.

Time travel is off unless ``--time-travel`` is given. The emulator serves ``FOR SYSTEM_TIME
AS OF`` by copying the whole table into a snapshot after *every* write, so each insertAll
costs time and disk in proportion to the table's size, not the request's (1,000-row
inserts: 0.064 ms of CPU per row without snapshots; with them 0.15 ms per row once the
table held 50,000 rows, and rising). ctstream never queries with ``FOR SYSTEM_TIME AS
OF`` (its time-travel function reads the change rows), and BigQuery itself charges no
such cost to the writer.
Off, writes still publish the emulator's table-changed event (its query cache and
materialized views depend on it); ``FOR SYSTEM_TIME AS OF`` then reads the live table.

The Storage Write API's handlers do their DuckDB work on the event loop's thread, where
the REST handlers do theirs: DuckDB 2 refuses one connection to two threads at once.

Once both servers accept connections it writes
``{"rest_port": .., "grpc_port": .., "pid": ..}`` atomically (temp file + rename) to the
ready file, then runs until SIGTERM or SIGINT and stops cleanly. The ready file is removed
again on a clean stop.

:mod:`ctstream.devstack.local_stack` launches this module; it is not meant to be imported.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ctstream.devstack.emulator_main",
        description="Run the local BigQuery emulator on 127.0.0.1.",
    )
    parser.add_argument("--rest-port", type=int, required=True, help="REST port (0 = any free)")
    parser.add_argument("--grpc-port", type=int, required=True, help="gRPC port (0 = any free)")
    parser.add_argument("--ready-file", type=Path, default=None, help="JSON written once ready")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning")
    parser.add_argument("--project", default="local", help="default project id")
    parser.add_argument(
        "--avro",
        action="store_true",
        help="try to install DuckDB's avro extension (needs network; off by default)",
    )
    parser.add_argument(
        "--time-travel",
        action="store_true",
        help="snapshot tables after every write for FOR SYSTEM_TIME AS OF (slow: copies the "
        "whole table per write; off by default)",
    )
    return parser.parse_args(argv)


def write_ready_file(path: Path, payload: dict[str, int]) -> None:
    """Write ``payload`` as JSON to ``path`` so that readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _disable_spatial() -> None:
    from bqemulator.storage.engine import DuckDBEngine

    def _no_spatial(self: object) -> None:
        return None

    DuckDBEngine._load_spatial = _no_spatial  # type: ignore[method-assign]


def _disable_write_snapshots() -> None:
    from bqemulator.domain.events import TableDataChanged
    from bqemulator.versioning.snapshots import SnapshotManager

    def _changed_without_snapshot(
        self: SnapshotManager, project_id: str, dataset_id: str, table_id: str
    ) -> None:
        self._events.publish(TableDataChanged(project_id, dataset_id, table_id))

    SnapshotManager.record_change = _changed_without_snapshot  # type: ignore[method-assign]


# The Storage Write handler's methods that use the emulator's one DuckDB connection.
_WRITE_HANDLER_METHODS = (
    "_handle_create_write_stream",
    "_handle_get_write_stream",
    "_handle_finalize_write_stream",
    "_handle_batch_commit_write_streams",
    "_handle_flush_rows",
    "_ensure_stream_bound",
    "_perform_append",
)


def _storage_write_on_the_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Run the Storage Write handler's DuckDB work on the event loop's thread.

    The emulator serves REST on its event loop and the Storage Write API on grpc's thread
    pool, all on one DuckDB connection, which DuckDB 2 refuses to share between threads at
    once ("connection is busy with another call"): a query during an append failed with
    400. Handing that work to the loop's thread makes every use of the connection take
    turns, as the REST handlers already do.
    """
    from bqemulator.grpc_api.write_servicer import BigQueryWriteHandler

    loop_thread = threading.get_ident()

    def on_the_loop(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run_there(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == loop_thread:
                return fn(*args, **kwargs)
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()

            def call() -> None:
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # the gRPC thread re-raises it (aborts too)
                    future.set_exception(exc)

            loop.call_soon_threadsafe(call)
            return future.result()

        return run_there

    for name in _WRITE_HANDLER_METHODS:
        setattr(BigQueryWriteHandler, name, on_the_loop(getattr(BigQueryWriteHandler, name)))


async def serve(args: argparse.Namespace) -> None:
    _disable_spatial()
    _storage_write_on_the_loop(asyncio.get_running_loop())
    if not args.time_travel:
        _disable_write_snapshots()
    from bqemulator.config import Settings
    from bqemulator.server import EmulatorServer

    if args.ready_file is not None:
        # DuckDB spills query state to ".tmp" under the working directory, which is the
        # package root (see local_stack); it belongs in the stack's own directory, the
        # ready file's.
        os.chdir(args.ready_file.parent)

    settings = Settings(
        rest_host=HOST,
        grpc_host=HOST,
        rest_port=args.rest_port,
        grpc_port=args.grpc_port,
        default_project_id=args.project,
        log_level=args.log_level,
        enable_format_extensions=args.avro,
    )
    server = EmulatorServer(settings)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    ready_file: Path | None = args.ready_file
    try:
        await server.start()
        rest_port, grpc_port = int(server.rest_port), int(server.grpc_port)
        if ready_file is not None:
            write_ready_file(
                ready_file, {"rest_port": rest_port, "grpc_port": grpc_port, "pid": os.getpid()}
            )
        print(
            f"emulator ready: rest http://{HOST}:{rest_port} grpc {HOST}:{grpc_port} "
            f"pid {os.getpid()}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        print("emulator stopping", file=sys.stderr, flush=True)
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ready_file is not None:
        args.ready_file = args.ready_file.resolve()  # serve() changes the directory
    ready_file: Path | None = args.ready_file
    try:
        asyncio.run(serve(args))
    finally:
        if ready_file is not None:
            with contextlib.suppress(OSError):
                ready_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
