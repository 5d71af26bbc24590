"""What must hold after a fault run, read from Kafka (the views are compared elsewhere),
and what must hold of a latest view at every moment of a snapshot (``view_keys_lost``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from ctstream.streams.offsets import true_end_offsets
from tests.faults.poison import Poison


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


async def read_all(bootstrap: str, topics: Sequence[str], partitions: int) -> list[Message]:
    """Every message now in ``topics``, in offset order per partition."""
    parts = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    ends = await true_end_offsets(bootstrap, parts)
    wanted = {tp: end for tp, end in ends.items() if end > 0}
    out: list[Message] = []
    if not wanted:
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        await consumer.seek_to_beginning(*wanted)
        remaining = dict(wanted)
        while remaining:
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                raise AssertionError(f"could not read to the end of {sorted(map(str, remaining))}")
            for tp, records in batch.items():
                for r in records:
                    if r.offset < wanted[tp]:
                        out.append(Message(tp.topic, tp.partition, r.offset, r.key, r.value))
                if tp in remaining and records and records[-1].offset >= wanted[tp] - 1:
                    del remaining[tp]
    finally:
        await consumer.stop()
    return out


def versions_going_backwards(raw: Iterable[Message]) -> list[str]:
    """Per key, change versions in the raw log must never decrease (offset order).

    Snapshot rows ('S') are left out: a chunk carries the version it was read at, and a
    change committed before that read but after the table's last poll is sent by the
    next poll, after the chunk (the view ranks by version, so the chunk's newer row
    stays the latest)."""
    last: dict[tuple[str, int, bytes | None], tuple[int, int]] = {}
    problems: list[str] = []
    for m in sorted(raw, key=lambda m: (m.topic, m.partition, m.offset)):
        try:
            event = orjson.loads(m.value or b"")
            version = int(event["changetrack_ver"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a poison message: checked by poison_not_reported
        if event.get("changetrack_type") == "S":
            continue
        where = (m.topic, m.partition, m.key)
        before = last.get(where)
        if before is not None and version < before[0]:
            problems.append(
                f"{m.topic}/{m.partition} key {m.key!r}: version {version} at offset "
                f"{m.offset} after version {before[0]} at offset {before[1]}"
            )
        last[where] = (version, m.offset)
    return problems


def poison_not_reported(poison: Iterable[Poison], errors: Iterable[Message]) -> list[str]:
    """Every poison message must be in the error topic, with a reason."""
    positions: set[tuple[str, int, int]] = set()
    ids: set[str] = set()
    for m in errors:
        record = orjson.loads(m.value or b"{}")
        if not record.get("reason"):
            continue
        if record.get("topic") is not None:
            positions.add((record["topic"], int(record["partition"]), int(record["offset"])))
        if record.get("message_unique_id"):
            ids.add(record["message_unique_id"])
    missing = []
    for p in poison:
        found = p.unique_id in ids if p.unique_id else (p.topic, p.partition, p.offset) in positions
        if not found:
            missing.append(f"{p.kind} poison at {p.topic}/{p.partition}/{p.offset} not reported")
    return missing


def unique_ids(messages: Iterable[Message]) -> Counter[str]:
    """How often each unique id occurs; poison (no id) is left out."""
    ids: Counter[str] = Counter()
    for m in messages:
        try:
            ids[orjson.loads(m.value or b"")["message_unique_id"]] += 1
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def dedup_effect(raw: Counter[str], deduped: Counter[str]) -> tuple[int, int]:
    """(copies dedup dropped, copies it let through), counted per unique id.

    An id read n times from the raw log and forwarded m times had n - m copies dropped
    (when n > m); forwarded more than once, m - 1 copies passed — a kill between the
    forward and the id's record does that; the latest views drop those.
    """
    dropped = sum(max(0, n - deduped[uid]) for uid, n in raw.items())
    passed = sum(m - 1 for m in deduped.values() if m > 1)
    return dropped, passed


ViewKey = tuple[str, ...]  # a key's values as text (BigQuery's CAST(... AS STRING))


@dataclass
class ViewLoss:
    missing: list[ViewKey] = field(default_factory=list)  # left the view, not the source
    older: list[ViewKey] = field(default_factory=list)  # in the view with an older version
    # Missing, but deleted and inserted again at the source, the re-insert not in BigQuery
    # yet: its delete is BigQuery's newest change of it ...
    excused: list[ViewKey] = field(default_factory=list)
    # ... or the snapshot hides it, having (may be) read it while it was deleted
    read_deleted: list[ViewKey] = field(default_factory=list)


def view_keys_lost(
    before: Mapping[ViewKey, int],
    now: Mapping[ViewKey, int],
    source: Set[ViewKey],
    gone: Mapping[ViewKey, tuple[int, bool]],
    snapshot: int,
    created: Mapping[ViewKey, int],
    deletes: Mapping[ViewKey, Sequence[tuple[int, int]]],
    upto_seq: int,
) -> ViewLoss:
    """Keys a latest view held ``before`` (key → change version) that it lacks ``now``,
    or holds at an older version, although the source still has them.

    ``source``: the keys the source held both just before and just after the view was
    read (a key deleted meanwhile is not counted).

    A key the source deleted and inserted again may be missing from the view until its
    re-insert reaches BigQuery, and nothing is lost. Such a key is excused when the source
    logged a delete of it after the version the view had (``deletes``: key → (seq,
    version) of the workload's ``delete_log``, counted up to ``upto_seq``, the log's end
    when the source was read after the view), and, as BigQuery stood when ``now`` was read
    (``gone``: key → (its newest change's version, whether that change is a delete), for
    the keys whose newest change is a delete or older than the table's newest recorded
    ``snapshot``):
    - its newest change is that delete; or
    - its newest change is older than the snapshot (which hides it), and the source
      inserted it again after the snapshot began (``created``: key → the version of its
      last insert, from the source's change table), so the snapshot may have read it
      while it was deleted (a delete lost to the overrun, or one that Change Tracking
      folded into the re-insert).
    """
    loss = ViewLoss()
    for key, version in before.items():
        if key not in source:
            continue
        held = now.get(key)
        if held is not None:
            if held < version:
                loss.older.append(key)
            continue
        logged = [v for seq, v in deletes.get(key, ()) if seq <= upto_seq and v > version]
        newest, is_delete = gone.get(key, (-1, False))
        if is_delete and newest in logged:  # its delete landed, its re-insert not yet
            loss.excused.append(key)
        elif not is_delete and logged and 0 <= newest < snapshot < created.get(key, -1):
            loss.read_deleted.append(key)  # hidden by the snapshot, which read it deleted
        else:
            loss.missing.append(key)
    return loss
