"""``/api/status``: what this worker did, per table. No setting is ever shown here."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ctstream.agents import Pipeline


def status_snapshot(pipeline: Pipeline) -> dict[str, Any]:
    poll, dedup, sink = pipeline.poll_stats, pipeline.dedup_stats, pipeline.sink_stats
    tables = {}
    source = pipeline.settings.source
    for name in pipeline.specs:
        if name in poll.snapshotting:
            state = "snapshotting"
        elif name in poll.stopped:
            state = "stopped"
        elif name in poll.versions:
            state = "streaming"
        else:
            state = "waiting"  # not polled by this worker (yet)
        tables[name] = {
            "state": state,
            "snapshot_mode": source.snapshot_mode_of(name),
            "snapshot_reason": poll.snapshotting.get(name),
            "stopped_reason": poll.stopped.get(name),
            "last_snapshot": poll.snapshots.get(name),
            "polls": poll.polls.get(name, 0),
            "events_produced": poll.events.get(name, 0),
            "saved_version": poll.versions.get(name),
            "poll_error": poll.last_error.get(name),
            "dedup_seen": dedup.seen.get(name, 0),
            "duplicates_dropped": dedup.dropped.get(name, 0),
            "rows_written": sink.rows_written.get(name, 0),
            "error_rows": sink.error_rows.get(name, 0),
        }
    app = pipeline.app
    return {
        "app": app.conf.id,
        "roles": list(pipeline.settings.app.roles),
        "time": time.time(),
        "tables": tables,
        "sink": {
            "batches": sink.batches,
            "retries": sink.retries,
            "last_batch_at": sink.last_batch_at,
            "last_batch_rows": sink.last_batch_rows,
            "write_api": pipeline.settings.bigquery.write_api,
            "requests": dict(pipeline.writer.requests),
        },
        "errors_reported": pipeline.errors.count,
        "bad_messages_at_dedup": dedup.bad,
    }


def install_views(app: Any, pipeline: Pipeline) -> None:
    @app.page("/api/status/")
    async def status(web: Any, request: Any) -> Any:
        return web.json(status_snapshot(pipeline))
