"""What a replay did, and its text summary: :class:`ReplayResult` and :func:`render`.

``ReplayResult.as_json()`` is the ``--json`` output of ``ctstream replay``: every field,
with ``partitions`` keyed by the partition number as a string.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PartitionSpan:
    """The offsets read from one partition and those of its messages in the time range."""

    start: int  # offsets read: [start, end)
    end: int
    first: int | None = None  # first and last offset inside the time range
    last: int | None = None
    messages: int = 0


@dataclass
class ReplayResult:
    """Counts of one replay; ``rows_written`` stays 0 on a dry run."""

    table: str
    topic: str
    target_table: str
    dry_run: bool
    messages_read: int = 0  # in the offset range and the time range
    outside_time_range: int = 0
    duplicates_skipped: int = 0
    would_write: int = 0  # rows that passed validation
    rows_written: int = 0  # rows BigQuery accepted (0 on a dry run)
    error_rows: int = 0
    partitions: dict[int, PartitionSpan] = field(default_factory=dict)
    seconds: float = 0.0
    error_samples: list[str] = field(default_factory=list)  # the first 20

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["partitions"] = {str(p): asdict(s) for p, s in sorted(self.partitions.items())}
        return data


def render(result: ReplayResult) -> str:
    """The text summary: counts, then the offsets read per partition, then error samples."""
    written = result.would_write if result.dry_run else result.rows_written
    lines = [
        f"replay of {result.table} from {result.topic} into {result.target_table}"
        f"{' (dry run)' if result.dry_run else ''}: {result.messages_read} messages read "
        f"({result.outside_time_range} more outside the time range), "
        f"{result.duplicates_skipped} duplicates skipped, "
        f"{'would write' if result.dry_run else 'wrote'} {written} rows, "
        f"{result.error_rows} error rows, {result.seconds:.1f} s"
    ]
    for number, span in sorted(result.partitions.items()):
        lines.append(
            f"  partition {number}: offsets {span.start}..{span.end} read, {span.messages} "
            f"in the time range (first {span.first}, last {span.last})"
        )
    lines += [f"  error at {sample}" for sample in result.error_samples]
    return "\n".join(lines)
