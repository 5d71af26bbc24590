"""What the poller keeps per source table, and the messages that drive it.

``SourceState`` is the value of the changelog-backed ``ct-versions`` table: the last
Change Tracking version whose changes Kafka acknowledged, the start version of the last
completed snapshot, a snapshot request not yet taken up, and the progress of the snapshot
under way (all survive restarts and move with the table to another worker).
``PollTick`` is a message on the poll-ticks topic: "poll this table", or, from
``ctstream snapshot``, "snapshot this table" or "pause / resume / cancel its snapshot".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from ctstream.models.values import JsonValue


@dataclass(frozen=True, slots=True)
class SnapshotProgress:
    """A snapshot under way: read in key-ordered chunks, resumed from ``after``.

    ``upper`` is the largest key when it started (None: the table was empty); rows above
    it, and every change after ``start_version``, come by Change Tracking. ``after`` is
    the last key of the last chunk Kafka acknowledged. With ``chunk_column`` set, chunks
    are ranges of that column's values, and ``upper`` and ``after`` hold one value of
    it instead of a key. Once ``read`` (every chunk sent),
    it completes when BigQuery holds its rows; only then is it recorded, so the latest
    view never hides a key for a snapshot whose rows are still on their way.
    """

    id: str  # part of its rows' unique ids (models/unique_id.py)
    reason: str
    start_version: int
    upper: tuple[JsonValue, ...] | None
    started_at: float
    after: tuple[JsonValue, ...] | None = None
    chunks: int = 0
    rows: int = 0
    estimate: int | None = None  # rows the table held at the start, as far as known
    paused: bool = False
    read: bool = False
    # The key values (``upper``, ``after``) were left out of the saved state: the key is
    # masked, and its clear values may not leave the worker. Resumed elsewhere, the
    # snapshot reads again from its first chunk.
    keys_withheld: bool = False
    # The column (source.chunk_columns) whose values ``upper`` and ``after`` hold; None:
    # they are keys.
    chunk_column: str | None = None

    @property
    def phase(self) -> str:
        """``reading`` chunks, ``paused``, or ``verifying`` (every chunk sent, waiting for
        BigQuery to hold the rows)."""
        return "paused" if self.paused else "verifying" if self.read else "reading"

    def rows_per_second(self, now: float) -> float:
        """Rows sent per second since the snapshot started, as of ``now`` (epoch s)."""
        return self.rows / max(now - self.started_at, 1e-9)

    def to_value(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "start_version": self.start_version,
            "upper": None if self.upper is None else list(self.upper),
            "started_at": self.started_at,
            "after": None if self.after is None else list(self.after),
            "chunks": self.chunks,
            "rows": self.rows,
            "estimate": self.estimate,
            "paused": self.paused,
            "read": self.read,
            "keys_withheld": self.keys_withheld,
            "chunk_column": self.chunk_column,
        }

    @classmethod
    def from_value(cls, value: Any) -> SnapshotProgress | None:
        """None when ``value`` is not a progress record (an older or damaged state)."""
        if not isinstance(value, dict):
            return None
        sid, reason, start = value.get("id"), value.get("reason"), value.get("start_version")
        if not (isinstance(sid, str) and isinstance(reason, str) and type(start) is int):
            return None
        upper, after = value.get("upper"), value.get("after")
        chunks, rows, estimate = value.get("chunks"), value.get("rows"), value.get("estimate")
        started, column = value.get("started_at"), value.get("chunk_column")
        return cls(
            id=sid,
            reason=reason,
            start_version=start,
            upper=tuple(upper) if isinstance(upper, list) else None,
            started_at=float(started) if isinstance(started, int | float) else 0.0,
            after=tuple(after) if isinstance(after, list) else None,
            chunks=chunks if type(chunks) is int else 0,
            rows=rows if type(rows) is int else 0,
            estimate=estimate if type(estimate) is int else None,
            paused=value.get("paused") is True,
            read=value.get("read") is True,
            keys_withheld=value.get("keys_withheld") is True,
            chunk_column=column if isinstance(column, str) else None,
        )

    def chunk_sent(
        self, last_key: tuple[JsonValue, ...] | None, rows: int, *, done: bool
    ) -> SnapshotProgress:
        after = self.after if last_key is None else last_key
        return replace(self, after=after, chunks=self.chunks + 1, rows=self.rows + rows, read=done)


@dataclass(frozen=True, slots=True)
class SourceState:
    version: int | None = None
    snapshot_version: int | None = None
    snapshot_requested: str | None = None  # the reason, until the snapshot starts
    snapshot_request_id: str | None = None  # the request's identity (its tick's time)
    snapshot: SnapshotProgress | None = None  # the snapshot under way
    snapshot_id: str | None = None  # the id of the last completed snapshot

    @classmethod
    def from_value(cls, value: Any) -> SourceState:
        if value is None:
            return cls()
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(version=value)  # written by ctstream 0.1 before snapshots existed
        if isinstance(value, dict):
            version, snap, requested, request_id, done_id = (
                value.get("version"),
                value.get("snapshot_version"),
                value.get("snapshot_requested"),
                value.get("snapshot_request_id"),
                value.get("snapshot_id"),
            )
            return cls(
                version=version if isinstance(version, int) else None,
                snapshot_version=snap if isinstance(snap, int) else None,
                snapshot_requested=requested if isinstance(requested, str) else None,
                snapshot_request_id=request_id if isinstance(request_id, str) else None,
                snapshot=SnapshotProgress.from_value(value.get("snapshot")),
                snapshot_id=done_id if isinstance(done_id, str) else None,
            )
        raise ValueError(f"not a source state: {value!r}")

    def to_value(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "snapshot_version": self.snapshot_version,
            "snapshot_requested": self.snapshot_requested,
            "snapshot_request_id": self.snapshot_request_id,
            "snapshot": None if self.snapshot is None else self.snapshot.to_value(),
            "snapshot_id": self.snapshot_id,
        }

    def requesting(self, reason: str | None, request_id: str | None = None) -> SourceState:
        """A snapshot requested for ``reason`` (None: no request pending)."""
        return replace(self, snapshot_requested=reason, snapshot_request_id=request_id)

    def snapshot_started(self, progress: SnapshotProgress, version: int) -> SourceState:
        """The request (if any) taken up; polls go on from ``version``."""
        return replace(
            self,
            version=version,
            snapshot_requested=None,
            snapshot_request_id=None,
            snapshot=progress,
        )

    def with_progress(self, progress: SnapshotProgress | None) -> SourceState:
        return replace(self, snapshot=progress)

    def snapshot_done(self, version: int, snapshot_id: str | None = None) -> SourceState:
        """The snapshot ``snapshot_id`` that started at ``version`` is recorded as
        complete."""
        return replace(self, snapshot_version=version, snapshot=None, snapshot_id=snapshot_id)

    def advanced(self, version: int) -> SourceState:
        return replace(self, version=version)


SnapshotControl = Literal["pause", "resume", "cancel"]
SNAPSHOT_CONTROLS: tuple[SnapshotControl, ...] = ("pause", "resume", "cancel")


@dataclass(frozen=True, slots=True)
class PollTick:
    table: str
    at: float
    snapshot: str | None = None  # set: a snapshot request, with its reason
    control: SnapshotControl | None = None  # set: pause, resume or cancel its snapshot

    @property
    def request_id(self) -> str:
        """A snapshot request's identity: the time ``ctstream snapshot`` sent it, which
        every app reading the poll-ticks topic (a redundant poller too) sees alike."""
        return f"r{round(self.at * 1_000_000)}"

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {"table": self.table, "at": self.at}
        if self.snapshot is not None:
            data["snapshot"] = self.snapshot
        if self.control is not None:
            data["control"] = self.control
        return orjson.dumps(data)

    @classmethod
    def from_bytes(cls, data: bytes | None) -> PollTick:
        """Parse a tick; raise ValueError when the message is not one."""
        try:
            obj = orjson.loads(data or b"")
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("table"), str):
            raise ValueError("not a poll tick: expected an object with a 'table' string")
        at = obj.get("at", 0.0)
        snapshot, control = obj.get("snapshot"), obj.get("control")
        if control is not None and control not in SNAPSHOT_CONTROLS:
            raise ValueError(
                f"not a poll tick: control {control!r} is none of {', '.join(SNAPSHOT_CONTROLS)}"
            )
        return cls(
            table=obj["table"],
            at=float(at) if isinstance(at, int | float) else 0.0,
            snapshot=snapshot if isinstance(snapshot, str) else None,
            control=control,
        )
