"""The exactly-once sink's own record: which ids it wrote, and on which write streams.

One changelog-backed faust table (``sink-written``), co-partitioned with the deduped topics
as the dedup table is with the raw topics, holds for each partition:

- the ids appended to BigQuery, in ``SeenIds``' format (one entry per batch, partition
  and window of the event's timestamp); the digest is of the topic and the id, so a row
  of a restricted copy and the same change's row of the main table are told apart;
- the committed-type write streams opened for each deduped topic-partition and not yet
  finalized, with the rows the writer counted appended to each: key
  ``b"stream|<topic>|<partition>|<stream name>"``, value JSON ``{"rows", "opened"}``.

Entries are written before the batch that wrote the rows finishes, and faust flushes its
producer before it commits offsets: whatever lies below a committed offset is in the
changelog. Table writes need faust's current event to be one of the partition written
(``set_current_event``), as for the dedup table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ctstream.streams.seen_ids import SeenIds, digest_utf8

_STREAM = b"stream|"


@dataclass
class StreamRecord:
    """A committed-type stream opened for one deduped topic-partition."""

    topic: str
    partition: int
    name: str
    rows: int  # appended, as counted by the writer when it last saved this record
    opened: float  # epoch seconds, by the writer's clock

    @property
    def key(self) -> bytes:
        return _STREAM + f"{self.topic}|{self.partition}|{self.name}".encode()


class WrittenIds:
    """The ``sink-written`` table and its in-memory index (see the module)."""

    def __init__(self, table: Any, window: float) -> None:
        self.table = table
        self.ids = SeenIds(table, window)

    @staticmethod
    def digest(topic: str, unique_id: str) -> bytes:
        return digest_utf8(f"{topic}\x00{unique_id}".encode())

    def written(self, partition: int, timestamp: float, id_digest: bytes) -> bool:
        """Whether the id was written from this partition within its window."""
        return self.ids.seen(partition, timestamp, id_digest)

    def remember(self, partition: int, written: Iterable[tuple[float, bytes]]) -> None:
        """Record (event timestamp, digest) of rows written from ``partition``."""
        by_window: dict[int, tuple[float, list[bytes]]] = {}
        for timestamp, id_digest in written:
            entry = by_window.setdefault(self.ids.window_of(timestamp), (timestamp, []))
            entry[1].append(id_digest)
        for timestamp, digests in by_window.values():
            self.ids.remember(partition, timestamp, digests)

    def streams(self, topic: str, partition: int) -> list[StreamRecord]:
        """The streams recorded for a topic-partition and not yet dropped, oldest first."""
        prefix = _STREAM + f"{topic}|{partition}|".encode()
        found: list[StreamRecord] = []
        for key, value in list(self.table.data.items()):
            key = key.encode() if isinstance(key, str) else bytes(key)
            if key.startswith(prefix) and value:
                data = json.loads(value)
                name = key[len(prefix) :].decode()
                found.append(
                    StreamRecord(topic, partition, name, int(data["rows"]), float(data["opened"]))
                )
        return sorted(found, key=lambda r: r.opened)

    def save(self, record: StreamRecord) -> None:
        value = json.dumps({"rows": record.rows, "opened": record.opened}).encode()
        self.table[record.key] = value

    def drop(self, record: StreamRecord) -> None:
        if record.key in self.table.data:
            del self.table[record.key]
