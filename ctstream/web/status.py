"""``/api/status``: what this worker did, per table. No setting is ever shown here."""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from ctstream.agents.stats import Histogram
from ctstream.streams.app import PipelineApp
from ctstream.streams.faust_compat.internals import consumer_if_created
from ctstream.web.metrics import consumer_lag, polled_here

if TYPE_CHECKING:
    from ctstream.agents import Pipeline


def status_snapshot(pipeline: Pipeline) -> dict[str, Any]:
    poll, dedup, sink = pipeline.poll_stats, pipeline.dedup_stats, pipeline.sink_stats
    tables = {}
    source = pipeline.settings.source
    registry = pipeline.registry
    lag_here = polled_here(pipeline)  # the source lag as /metrics shows it
    compaction, now = pipeline.compaction_stats, time.time()
    for name, spec in pipeline.specs.items():
        if name in registry.untracked:
            state = "untracked"
        elif name in poll.snapshotting:
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
            "stopped_reason": registry.untracked.get(name) or poll.stopped.get(name),
            "schema_notes": registry.schema_notes.get(name, []),
            "found_at": registry.found_at.get(name),
            "last_snapshot": poll.snapshots.get(name),
            "snapshot": poll.snapshot_progress.get(name),
            "polls": poll.polls.get(name, 0),
            "events_produced": poll.events.get(name, 0),
            "saved_version": poll.versions.get(name),
            "poll_error": poll.last_error.get(name),
            "poll_failures": dict(poll.failures.get(name, {})),
            "source_version_lag": poll.version_lag.get(name) if name in lag_here else None,
            "oldest_unsent_change_age_s": (
                _round(poll.unsent_age.get(name)) if name in lag_here else None
            ),
            "lag_checked_at": poll.lag_checked_at.get(name) if name in lag_here else None,
            "polled_here": name in lag_here,
            "dedup_seen": dedup.seen.get(name, 0),
            "duplicates_dropped": dedup.dropped.get(name, 0),
            "rows_written": sink.rows_written.get(name, 0),
            "error_rows": sink.error_rows.get(name, 0),
            "latency_p50_s": _percentile(sink.latency.get(name), 0.5),
            "latency_p99_s": _percentile(sink.latency.get(name), 0.99),
            # Shown by the worker that merged it (the leader): <t>_current's merges.
            "compaction": compaction.of(spec.bq_table, now),
        }
    app = pipeline.app
    lags = consumer_lag(app)
    return {
        "app": app.conf.id,
        "roles": list(pipeline.settings.app.roles),
        "time": now,
        "tables": tables,
        "discovery": {
            "enabled": source.discover,
            "interval_s": source.discover_interval,
            "rounds": registry.discovery_rounds,
            "last_at": registry.discovered_at,
        },
        "sink": {
            "batches": sink.batches,
            "retries": sink.retries,
            "last_batch_at": sink.last_batch_at,
            "last_batch_rows": sink.last_batch_rows,
            "write_api": pipeline.settings.bigquery.write_api,
            "requests": dict(pipeline.writer.requests),
            # The exactly-once path's (agents/exactly_once.py); 0 on the others.
            "copies_refused": sink.copies_refused,
            "streams_opened": sink.streams_opened,
            "rows_looked_up": sink.rows_looked_up,
        },
        "partitions": [{"topic": t, "partition": p} for t, p in sorted(_owned(app))],
        "consumer_lag": {f"{t}/{p}": lag for (t, p), lag in sorted(lags.items())},
        "consumer_lag_total": sum(lags.values()),
        "errors_reported": pipeline.errors.count,
        "bad_messages_at_dedup": dedup.bad,
    }


def _percentile(histogram: Histogram | None, q: float) -> float | None:
    return _round(histogram.percentile(q) if histogram is not None else None)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _owned(app: PipelineApp) -> set[tuple[str, int]]:
    consumer = consumer_if_created(app)
    try:
        return {(tp.topic, tp.partition) for tp in consumer.assignment()} if consumer else set()
    except Exception:  # the consumer is not started yet
        return set()


def require_token(app: PipelineApp, token: str) -> None:
    """Refuse every request to the worker's web server that lacks the token."""
    from aiohttp import web as aioweb

    expected = token.encode("utf-8")

    @aioweb.middleware
    async def check(request: Any, handler: Any) -> Any:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        given = given or request.query.get("token", "")
        if not hmac.compare_digest(given.encode("utf-8"), expected):
            return aioweb.json_response(
                {"error": "a token is required: Authorization: Bearer <web.token>"}, status=401
            )
        return await handler(request)

    web: Any = app.web  # faust's aiohttp driver; the abstract Web lacks its ``web_app``
    web.web_app.middlewares.append(check)
