"""Where a local stack listens and which processes run it, as a value and as JSON.

:class:`StackInfo` round-trips through :meth:`StackInfo.to_json` / :meth:`StackInfo.from_json`
(the state file of ``ctstream stack up``); ``from_json`` accepts nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from ctstream.errors import StackError


@dataclass(frozen=True)
class StackInfo:
    """Where the local stack listens and which processes run it."""

    kafka_bootstrap: str  # "127.0.0.1:PORT"
    bigquery_endpoint: str  # "http://127.0.0.1:PORT", the client's api_endpoint
    bigquery_grpc: str  # "127.0.0.1:PORT", Storage Read/Write API
    broker_pid: int
    emulator_pid: int
    workdir: str  # absolute; holds broker.log and emulator.log

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> StackInfo:
        """Parse :meth:`to_json` output; raises :class:`StackError` when it is not that."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            return cls(
                kafka_bootstrap=_str_field(data, "kafka_bootstrap"),
                bigquery_endpoint=_str_field(data, "bigquery_endpoint"),
                bigquery_grpc=_str_field(data, "bigquery_grpc"),
                broker_pid=_int_field(data, "broker_pid"),
                emulator_pid=_int_field(data, "emulator_pid"),
                workdir=_str_field(data, "workdir"),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise StackError(f"not a stack description: {exc}") from exc


def _str_field(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _int_field(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TypeError(f"{key} must be a positive integer")
    return value
