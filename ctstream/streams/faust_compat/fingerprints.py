"""The source of every upstream function ctstream replaces, wraps, copies or leans on, hashed.

Each :class:`Upstream` names a function (``module:Qualified.name``) or a source file
(``package/file``) of faust, mode or aiokafka, the hash of its source in the verified
versions (versions.py), and the ctstream code that depends on it. A patched function is
hashed as upstream wrote it (the original its patch keeps). tests/unit/test_faust_fingerprints.py
fails on any difference and lists the functions to re-read with the code to re-read with
them; after that, ``python -m ctstream.streams.faust_compat.fingerprints`` prints the new
table.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ctstream.streams.faust_compat.patching import PATCH_MARK, AppliedPatch


@dataclass(frozen=True)
class Upstream:
    """An upstream function or file and what in ctstream depends on it."""

    where: str  # "module:Qualified.name", or "package/file" for a non-Python source
    sha256: str  # first 16 hex digits of the SHA-256 of its source, as verified
    read_by: str  # the code to re-read when it changes (paths in ctstream/streams/), and why


UPSTREAM: tuple[Upstream, ...] = (
    # Patched attributes (register.PATCHES), by patch number.
    Upstream(
        "faust.transport.consumer:Consumer._new_offset",
        "1d2c7ea89a7ad4f1",
        "faust_compat/commits.py: patch 1 copies it",
    ),
    Upstream(
        "faust.transport.consumer:Consumer._add_gap",
        "4df2573ded7c1c2c",
        "faust_compat/commits.py: patch 2 replaces it",
    ),
    Upstream(
        "faust.transport.consumer:Consumer.perform_seek",
        "0e8c130ff4b0afd8",
        "faust_compat/commits.py: patch 3 wraps it",
    ),
    Upstream(
        "faust.tables.recovery:Recovery.on_recovery_completed",
        "6ef567acf072e46d",
        "faust_compat/recovery.py: patch 4 copies it",
    ),
    Upstream(
        "faust.tables.recovery:Recovery._resume_streams",
        "d986a6710c1aca98",
        "faust_compat/recovery.py: patch 4 copies it",
    ),
    Upstream(
        "faust.transport.consumer:Consumer._filter_committable_offsets",
        "dc5e9baf5d994485",
        "faust_compat/commits.py: patch 5 wraps it",
    ),
    Upstream(
        "faust.tables.recovery:Recovery._build_highwaters",
        "91b4cc0d3724ae7b",
        "faust_compat/recovery.py: patch 6 wraps it",
    ),
    Upstream(
        "faust.tables.recovery:Recovery._seek_offsets",
        "19598ca63d94d250",
        "faust_compat/recovery.py: patch 7 copies it",
    ),
    Upstream(
        "faust.transport.consumer:Consumer.ack",
        "5fcf41cf45153475",
        "faust_compat/commits.py: patch 8 wraps it; faust_compat/batch_steps.py ack_all copies it",
    ),
    Upstream(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._fetch_records",
        "39a2c6c79fc1455a",
        "faust_compat/fetching.py: patch 9 wraps it",
    ),
    Upstream(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer",
        "c2701bfc3e6f6cad",
        "faust_compat/fetching.py: patch 10 wraps it",
    ),
    Upstream(
        "mode.services:Service.wait_first",
        "feade6a31f8a6789",
        "faust_compat/eager_delivery.py: patch 12 wraps it",
    ),
    Upstream(
        "faust.transport.conductor:Conductor._build_handler",
        "5c071d1277988c57",
        "faust_compat/raw_delivery.py: patch 13 wraps it",
    ),
    Upstream(
        "faust.transport.conductor:Conductor._compile_message_handler",
        "9fbc0538097aa4ec",
        "faust_compat/raw_delivery.py: patch 13 wraps and copies it",
    ),
    Upstream(
        "faust.transport.consumer:Consumer._drain_messages",
        "44a2500309e83c63",
        "faust_compat/fetch_loop.py: patch 14 copies it",
    ),
    Upstream(
        "faust.transport.drivers.aiokafka:Consumer._new_consumer_thread",
        "0870ec53dea75083",
        "faust_compat/same_loop.py: patch 15 copies it",
    ),
    Upstream(
        "mode.threads:ServiceThread._gather_remaining_tasks",
        "6f65b92dd1012485",
        "faust_compat/same_loop.py: patch 15 replaces it",
    ),
    Upstream(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._commit",
        "932852ce7a23f658",
        "faust_compat/commits.py: patch 16 copies it",
    ),
    # Steps copied inline, and behaviour a patch relies on.
    Upstream(
        "faust.transport.consumer:Consumer.getmany",
        "4b168d84882a70d6",
        "faust_compat/fetch_loop.py: patch 14 (and 11) does its steps inline",
    ),
    Upstream(
        "faust.transport.conductor:ConductorCompiler.build",
        "837cf521368c1ee4",
        "faust_compat/raw_delivery.py: RawDelivery does its delivery steps",
    ),
    Upstream(
        "faust.transport._cython/conductor.pyx",
        "dde1f974267881cf",
        "faust_compat/raw_delivery.py: RawDelivery wraps this ConductorHandler, does its steps",
    ),
    Upstream(
        "faust.types.tuples:Message.incref",
        "78d34df830d3089b",
        "faust_compat/raw_delivery.py: RawDelivery._event does it inline",
    ),
    Upstream(
        "faust.events:Event.ack",
        "2d29a6eda87c4ce5",
        "faust_compat/batch_steps.py: ack_all does it inline",
    ),
    Upstream(
        "faust.types.tuples:Message.ack",
        "4751b72c4ed84153",
        "faust_compat/batch_steps.py: ack_all does it inline",
    ),
    Upstream(
        "faust.types.tuples:Message.decref",
        "f23396189d0e5592",
        "faust_compat/batch_steps.py: ack_all does it inline",
    ),
    Upstream(
        "faust.types.tuples:ConsumerMessage.on_final_ack",
        "45d670b6a8ac4bd0",
        "faust_compat/batch_steps.py: ack_all does it inline",
    ),
    Upstream(
        "mode.utils.queues:ThrowableQueue.get_nowait",
        "d42b1be9219a0e6e",
        "faust_compat/batch_steps.py: take_now does it inline",
    ),
    Upstream(
        "mode.utils.queues:FlowControlQueue.get_nowait",
        "57cb9b5c12e7ebd9",
        "faust_compat/batch_steps.py: take_now does it inline",
    ),
    Upstream(
        "faust.transport.consumer:Consumer.track_message",
        "217d7f1399a4cd8e",
        "channel_batches.py and faust_compat/batch_steps.py track_all track as it does",
    ),
    Upstream(
        "faust.streams:Stream._py_aiter",
        "3a48ee257a65435b",
        "channel_batches.py skips, tracks and acknowledges as it does; "
        "faust_compat/commits.py: patch 8 relies on its tracking",
    ),
    Upstream(
        "faust._cython/streams.pyx",
        "0041622f4a251188",
        "channel_batches.py and faust_compat/commits.py, as for Stream._py_aiter: its Cython twin",
    ),
    Upstream(
        "faust.streams:Stream.take_events",
        "607d48aead118ba8",
        "channel_batches.py acknowledges a batch when it does",
    ),
    Upstream(
        "mode.threads:ServiceThread._start_thread",
        "a06373478446fb61",
        "faust_compat/same_loop.py: LoopTask does its crash handling",
    ),
    Upstream(
        "mode.threads:WorkerThread.run",
        "1b649242a70c4df3",
        "faust_compat/same_loop.py: LoopTask stands in for WorkerThread",
    ),
    Upstream(
        "aiokafka.consumer.fetcher:Fetcher.fetched_records",
        "be4348896b9b66af",
        "faust_compat/fetching.py: patch 9 answers its `partitions and tp not in partitions`",
    ),
    Upstream(
        "aiokafka.consumer.consumer:AIOKafkaConsumer.start",
        "2f1ba70443327538",
        "faust_compat/fetching.py: patch 10 sets the _fetch_max_wait_ms it reads",
    ),
    Upstream(
        "aiokafka.producer.producer:AIOKafkaProducer._partition",
        "e45fa9c539d431d1",
        "producer.py: send_batched partitions as it does",
    ),
    Upstream(
        "aiokafka.producer.producer:AIOKafkaProducer.send",
        "08ce81263f439838",
        "producer.py: send_batched takes its steps per batch",
    ),
)


def upstream_source(where: str) -> str:
    """The installed source of ``where`` (see :class:`Upstream`); upstream's own for a
    patched attribute. Raises ImportError, AttributeError, OSError or TypeError if it is gone."""
    if "/" in where:
        package, _, filename = where.partition("/")
        return importlib.resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    module_name, _, qualname = where.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    target = inspect.getattr_static(owner, name)
    mark = getattr(target, PATCH_MARK, None)
    if isinstance(mark, AppliedPatch):
        target = mark.original
    return inspect.getsource(target)


def digest(source: str) -> str:
    """What :attr:`Upstream.sha256` holds for ``source``."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def current_digest(where: str) -> str:
    """The digest of ``where`` as installed; ``"missing: <error>"`` if it cannot be read."""
    try:
        return digest(upstream_source(where))
    except (ImportError, AttributeError, OSError, TypeError) as exc:
        return f"missing: {exc!r}"


def changed_upstream(entries: Sequence[Upstream] = UPSTREAM) -> list[tuple[Upstream, str]]:
    """Each entry whose installed source is not the verified one, with its current digest."""
    current = ((upstream, current_digest(upstream.where)) for upstream in entries)
    return [(upstream, now) for upstream, now in current if now != upstream.sha256]


if __name__ == "__main__":
    for upstream in UPSTREAM:
        print(f"{current_digest(upstream.where)}  {upstream.where}")
