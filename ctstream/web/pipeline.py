"""The pipeline as all its workers see it: each worker's ``/api/status/`` combined.

A worker finds the others in its consumer group's assignment (every member's web URL
travels with it), asks each for its status, and adds up what they did. A worker it cannot
reach is listed as not answering, also once it left the group, for :data:`REMEMBER_GONE_S`
after it was last seen: a worker that died is never silently left out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The counters each worker keeps of its own work, so the pipeline's figure is their sum.
SUMMED = (
    "polls",
    "events_produced",
    "dedup_seen",
    "duplicates_dropped",
    "rows_written",
    "error_rows",
)
# A table's state as the pipeline shows it: the most telling of the workers' states.
STATE_ORDER = ("untracked", "stopped", "snapshotting", "streaming", "waiting")
# How long a worker that left the group (or stopped answering) is still listed.
REMEMBER_GONE_S = 900.0
PEER_TIMEOUT_S = 2.0

Fetch = Callable[[str, str], Awaitable[Any]]


@dataclass
class WorkerBook:
    """The workers seen lately, by URL, with when each was last a member or answered."""

    last_seen: dict[str, float] = field(default_factory=dict)

    def note(self, urls: Iterable[str], now: float) -> None:
        for url in urls:
            self.last_seen[url] = now

    def recent(self, now: float, keep: float = REMEMBER_GONE_S) -> list[str]:
        """The URLs seen within ``keep`` seconds of ``now`` (older ones are forgotten)."""
        for url, seen in list(self.last_seen.items()):
            if now - seen > keep:
                del self.last_seen[url]
        return sorted(self.last_seen)


def member_urls(assignor: Any) -> set[str]:
    """The web URLs of the group's members, from faust's ``PartitionAssignor``: its
    distributions name every member of the last assignment, with or without partitions."""
    urls: set[str] = set()
    for name in ("changelog_distribution", "external_topic_distribution"):
        urls.update(str(url) for url in (getattr(assignor, name, None) or {}))
    return urls


def same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def partition_kinds(partitions: Iterable[Mapping[str, Any]], app_id: str) -> dict[str, int]:
    """Partitions owned, counted by the kind of topic: ``raw``, ``deduped``,
    ``restricted``, ``errors``, ``poll-ticks``, ``<table> changelog`` or ``leader``."""
    kinds: dict[str, int] = {}
    for entry in partitions:
        topic = str(entry.get("topic", ""))
        if topic.startswith(f"{app_id}-__assignor"):
            kind = "leader"  # faust's topic for electing the group's leader
        elif topic.endswith("-changelog"):
            kind = topic.removeprefix(f"{app_id}-").removesuffix("-changelog") + " changelog"
        else:
            kind = topic.rsplit(".", 1)[-1]
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def worker_row(
    url: str, status: Mapping[str, Any] | None, *, state: str, here: bool
) -> dict[str, Any]:
    """One worker as the pipeline view lists it; ``status`` is its ``/api/status/``."""
    row: dict[str, Any] = {"url": url, "state": state, "this_worker": here}
    if status is None:
        return row
    sink = status.get("sink") or {}
    row.update(
        roles=status.get("roles", []),
        partitions=partition_kinds(status.get("partitions", []), str(status.get("app", ""))),
        consumer_lag_total=status.get("consumer_lag_total", 0),
        last_batch_at=sink.get("last_batch_at"),
        last_batch_rows=sink.get("last_batch_rows", 0),
        sink_retries=sink.get("retries", 0),
        errors_reported=status.get("errors_reported", 0),
        time=status.get("time"),
    )
    return row


def combine_tables(statuses: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per table, the workers' figures combined: counters summed (failed polls by
    reason too), the state of the worker polling it (else the most telling of the
    workers'), the highest version and lag, and the snapshot."""
    tables: dict[str, dict[str, Any]] = {}
    for status in statuses:
        for name, row in (status.get("tables") or {}).items():
            into = tables.setdefault(name, _empty_table())
            for key in SUMMED:
                into[key] += row.get(key) or 0
            for reason, count in (row.get("poll_failures") or {}).items():
                into["poll_failures"][reason] = into["poll_failures"].get(reason, 0) + count
            state = row.get("state", "waiting")
            # The poller's state wins: another worker's may be stale (it polled the
            # table before a rebalance); without a poller, the most telling one.
            poller = bool(row.get("polled_here"))
            current = poller >= into["_from_poller"]
            if poller > into["_from_poller"] or (
                current and STATE_ORDER.index(state) < STATE_ORDER.index(into["state"])
            ):
                into["state"] = state
                into["reason"] = (
                    row.get("stopped_reason") or row.get("snapshot_reason") or row.get("poll_error")
                )
            if poller > into["_from_poller"]:  # what others said before is not current
                into.update(snapshot=None, poll_error=None, _from_poller=True)
            into["schema_notes"] = into["schema_notes"] or row.get("schema_notes") or []
            for key in ("snapshot", "last_snapshot", "poll_error"):
                if row.get(key) is not None and (current or key == "last_snapshot"):
                    into[key] = row[key]
            merged = row.get("compaction")  # the newest merge wins (leaders change)
            if merged and (
                into["compaction"] is None
                or (merged.get("merged_at") or 0) > (into["compaction"].get("merged_at") or 0)
            ):
                into["compaction"] = merged
            for key in ("saved_version", "source_version_lag", "oldest_unsent_change_age_s"):
                value = row.get(key)
                if value is not None and (into[key] is None or value > into[key]):
                    into[key] = value
    for row in tables.values():
        del row["_from_poller"]
    return dict(sorted(tables.items()))


def _empty_table() -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SUMMED, 0)
    row.update(
        _from_poller=False,
        compaction=None,
        state="waiting",
        reason=None,
        poll_failures={},
        schema_notes=[],
        snapshot=None,
        last_snapshot=None,
        poll_error=None,
        saved_version=None,
        source_version_lag=None,
        oldest_unsent_change_age_s=None,
    )
    return row


async def gather_workers(
    own_url: str,
    own_status: Mapping[str, Any],
    members: set[str],
    book: WorkerBook,
    fetch: Fetch,
    path: str = "/api/status/",
    now: float | None = None,
) -> tuple[list[dict[str, Any]], list[Mapping[str, Any]]]:
    """The worker rows and the statuses that answered (this worker's first).

    Every member and every worker seen within :data:`REMEMBER_GONE_S` is asked for
    ``path`` at once, each within :data:`PEER_TIMEOUT_S`."""
    now = time.time() if now is None else now
    book.note([own_url, *members], now)
    others = [url for url in book.recent(now) if not same_url(url, own_url)]
    answers = await asyncio.gather(
        *(asyncio.wait_for(fetch(url, path), PEER_TIMEOUT_S) for url in others),
        return_exceptions=True,
    )
    rows = [worker_row(own_url, own_status, state="up", here=True)]
    statuses: list[Mapping[str, Any]] = [own_status]
    in_group = {url.rstrip("/") for url in members}
    for url, answer in zip(others, answers, strict=True):
        if isinstance(answer, Mapping) and "tables" in answer:
            statuses.append(answer)
            rows.append(worker_row(url, answer, state="up", here=False))
            continue
        row = worker_row(url, None, state="not answering", here=False)
        row["in_group"] = url.rstrip("/") in in_group
        row["error"] = _why(answer) + ("" if row["in_group"] else "; it left the group")
        row["last_seen"] = book.last_seen.get(url)
        rows.append(row)
    return rows, statuses


def _why(answer: object) -> str:
    if isinstance(answer, asyncio.TimeoutError | TimeoutError):
        return f"no answer within {PEER_TIMEOUT_S:g} s"
    if isinstance(answer, BaseException):
        return f"{type(answer).__name__}: {answer}"[:200]
    return "not a worker's status"
