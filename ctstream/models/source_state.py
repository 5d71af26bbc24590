"""What the poller keeps per source table, and the messages that drive it.

``SourceState`` is the value of the changelog-backed ``ct-versions`` table: the last
Change Tracking version whose changes Kafka acknowledged, the version of the last
completed snapshot, and a snapshot request not yet carried out (it survives restarts).
``PollTick`` is a message on the poll-ticks topic: "poll this table", or, from
``ctstream snapshot``, "snapshot this table".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class SourceState:
    version: int | None = None
    snapshot_version: int | None = None
    snapshot_requested: str | None = None  # the reason, until the snapshot completes

    @classmethod
    def from_value(cls, value: Any) -> SourceState:
        if value is None:
            return cls()
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(version=value)  # written by ctstream 0.1 before snapshots existed
        if isinstance(value, dict):
            version, snap, requested = (
                value.get("version"),
                value.get("snapshot_version"),
                value.get("snapshot_requested"),
            )
            return cls(
                version=version if isinstance(version, int) else None,
                snapshot_version=snap if isinstance(snap, int) else None,
                snapshot_requested=requested if isinstance(requested, str) else None,
            )
        raise ValueError(f"not a source state: {value!r}")

    def to_value(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "snapshot_version": self.snapshot_version,
            "snapshot_requested": self.snapshot_requested,
        }

    def requesting(self, reason: str) -> SourceState:
        return replace(self, snapshot_requested=reason)

    def snapshot_done(self, version: int) -> SourceState:
        return SourceState(version=version, snapshot_version=version)

    def advanced(self, version: int) -> SourceState:
        return replace(self, version=version)


@dataclass(frozen=True, slots=True)
class PollTick:
    table: str
    at: float
    snapshot: str | None = None  # set: a snapshot request, with its reason

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {"table": self.table, "at": self.at}
        if self.snapshot is not None:
            data["snapshot"] = self.snapshot
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
        snapshot = obj.get("snapshot")
        return cls(
            table=obj["table"],
            at=float(at) if isinstance(at, int | float) else 0.0,
            snapshot=snapshot if isinstance(snapshot, str) else None,
        )
