"""Fixes to faust's offset bookkeeping and table recovery (a restart could lose messages).

Found by ctstream's kill-and-restart test (a worker SIGKILLed mid-stream, another one
started): single messages went missing from BigQuery although they were in the deduped
topic. During a rebalance faust skips messages of the old generation or while flow control
is paused (they are neither processed nor acknowledged — a hole), and then:

1. ``Consumer._new_offset`` only treats a hole at the head of the acknowledged offsets as a
   hole when it is *two* or more offsets past the committed one (faust-streaming issue
   #606): with committed offset 466 (the next to read) and 467.. acknowledged, it commits
   past 466, so message 466 is never processed.
2. ``Consumer._add_gap`` turns a jump in the offsets read (meant for compacted topics or
   transaction markers) into acknowledgements of the offsets in between — messages that
   were never processed. ctstream's topics are neither compacted nor transactional, so
   their offsets have no real gaps and every such "gap" is a hole.

With both fixed a hole stops the commit at the hole instead of passing it; the rebalance
that caused the hole ends with faust seeking to the committed offset, which re-reads it.
For that check to work before a partition's first commit, the position faust starts
reading from after its seek is taken as the committed offset (3, ``perform_seek``).

4. The holes themselves come from the end of table recovery: faust resumes fetching the
   stream partitions *before* seeking them to their committed offsets (the order that
   faust-streaming PR #217 fixed once, for another code path). Records fetched in between
   are skipped (flow control is still suspended) yet move faust's read offset forward, so
   the same records fetched again after the seek are dropped as already read. The two
   recovery methods below are faust's own, with the seek moved before the resume.
5. Commits are capped below the first offset of any batch an agent has not finished
   (``commit_ceilings``, fed by agents/batches.py): found by the test that stops a worker
   while BigQuery is down, where faust committed a batch that was still being retried.
6. Table recovery reads a changelog up to its "highwater", which faust takes from
   ListOffsets; the embedded broker answers that with the base offset of the last record
   batch + 1 (streams/offsets.py), so recovery stopped short of the last batch (dedup
   ids missed, duplicates let through), and after a rebalance while running a worker
   crashed: its in-memory table had applied offsets above that highwater, which faust's
   consistency check reads as data removed from the topic (found by the test that tracks a
   new table while two workers run). The highwaters are corrected to the true end.
7. A rebalance while a worker recovers its tables can add a standby changelog partition
   whose start offset was never built (faust keeps None for it); faust then seeks it to
   None and the worker crashes ("Offset must be a positive integer") — found by the fault
   suite's soak, a worker killed and restarted while another was recovering. A partition
   with no known offset is read from its beginning.
8. A stream *skips* a message fetched while flow control is suspended or from an older
   generation (a rebalance or a stop is under way) — and acknowledges it, so the commit
   can pass a message nobody processed. A skipped message is left unacknowledged: a hole
   that holds the commit until the message is read again (the rebalance's seek re-reads
   it; streams/commit_holes.py re-reads a hole that outlives that). Found by reading
   faust while tracing fix 9, not by a failure of its own.
9. faust fetches with the live set of its active partitions, and aiokafka reads an *empty*
   set as "every partition". At the end of table recovery the changelog partitions are
   paused before the stream partitions are resumed; a fetch waiting across that moment
   returned the stream partitions' records — just sought to the committed offsets — and
   faust dropped them as not active. Those records were never read again (not lost —
   never committed either — but stuck until the next rebalance): the worker restarted
   while BigQuery was down never wrote the batch it had to redo. Found by that test
   failing in CI, then 2 times in 6 runs here; the offsets showed 200 messages not
   committed and a sink with nothing to do. aiokafka is now given a set that is never
   "empty = all"; 6 runs of 6 passed after.
10. Not a fix, a speed setting faust does not expose: faust creates its consumer with
   ``fetch_max_wait_ms=1500``, and the embedded broker holds every fetch for that long
   even when data arrives meanwhile (measured: a message produced to a waiting consumer
   arrived 0.26 to 0.39 s later with 1,500 ms, 0.013 to 0.036 s with 100 ms). Each Kafka hop
   (raw → dedup, deduped → sink) added that wait to the latency; it is ``FETCH_MAX_WAIT_MS``.
11. A subscription change (a table found by discovery) makes aiokafka forget the current
   assignment at once, before the rebalance revokes anything. A ``getmany`` then handing
   out records fetched just before calls ``highwater`` for their partition, aiokafka
   asserts "Partition is not assigned", and faust's fetcher crashes the whole worker
   (found by the two-worker discovery test in CI, 1 run in about 10). The rest of that
   fetch is dropped instead: never handed to a stream, never acknowledged, so the
   partition's owner after the rebalance reads those records again from the committed
   offset. Done in 14's fetch loop, which replaces the ``getmany`` where it happened.
12. Not a fix, speed: faust hands every fetched message to its streams through
   ``wait_first``, four tasks per message; ``streams/faust_compat/eager_delivery.py`` runs the
   delivery at once and falls back to faust's way only when it blocks (the dedup stage:
   0.26 → 0.15 ms of CPU per event).
13. Not a fix, speed: for a topic of raw bytes with one stream, a fetched message goes
   to the stream's queue without the conductor's lock, awaits and codecs, and straight
   from the fetch loop, when nothing would wait (``streams/faust_compat/raw_delivery.py``).
14. Not a fix, speed: faust's fetch loop takes each message from ``getmany``, three async
   generators deep (four with 11's former wrapper), and asks aiokafka for its partition's
   highwater every time;
   ``streams/faust_compat/fetch_loop.py`` runs the same checks and bookkeeping over a fetch's
   records partition by partition in a plain loop (11's quiet end included).
15. Not a fix, speed: faust runs aiokafka's consumer in a thread of its own, with a second
   event loop; ``streams/faust_compat/same_loop.py`` runs it as a task of the worker's loop.
faust-streaming is pinned in pyproject.toml; tests/unit/test_faust_patches.py checks the
patched functions and tests/faults the kill-and-restart behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, credentials_to_aiokafka_auth
from faust.utils.functional import consecutive_numbers

from ctstream.streams.faust_compat import eager_delivery as faust_eager_delivery
from ctstream.streams.faust_compat import fetch_loop as faust_fetch_loop
from ctstream.streams.faust_compat import raw_delivery as faust_raw_delivery
from ctstream.streams.faust_compat import same_loop as faust_same_loop
from ctstream.streams.offsets import true_end_offsets

log = logging.getLogger("ctstream.faust")

_APPLIED = False


def new_offset(self: Any, tp: Any) -> int | None:
    """The offset to commit for ``tp``: one past the acknowledged run that starts at the
    committed offset, or None when the next message to read is not acknowledged yet."""
    acked: list[int] = self._acked[tp]
    if not acked:
        return None
    acked.sort()
    committed: int | None = self._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None  # the message at `committed` has not been processed: wait for it
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


async def add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Never acknowledge offsets that were not processed."""
    log.debug("not treating offsets %d..%d of %s as a gap", offset_from, offset_to, tp)


_original_ack = Consumer.ack


def ack(self: Any, message: Any) -> bool:
    """faust's ``Consumer.ack``, except for a message no stream took up (fix 8).

    A stream marks a message ``tracked`` when it starts processing it; the only message of
    an acknowledged topic that reaches here untracked is one a stream skipped. (A decode
    error would too, but ctstream's topics are raw bytes: faust decodes nothing.)
    """
    if not message.tracked and self.app.topics.acks_enabled_for(message.topic):
        message.acked = True  # nothing waits for it; its offset stays a hole
        return False
    result: bool = _original_ack(self, message)
    return result


class OnlyThese:
    """A live view of faust's active partitions that aiokafka cannot read as "all".

    aiokafka's ``Fetcher.fetched_records`` tests ``if partitions and tp not in
    partitions``: an empty set there means every partition (fix 9).
    """

    def __init__(self, partitions: Any) -> None:
        self.partitions = partitions

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self.partitions


_original_fetch_records = AIOKafkaConsumerThread._fetch_records


async def fetch_records(
    self: Any,
    consumer: Any,
    active_partitions: Any,
    timeout: float | None = None,  # noqa: ASYNC109 - faust's signature
    max_records: int | None = None,
) -> Any:
    """faust's ``_fetch_records``, never returning records of partitions not active."""
    if active_partitions is not None:
        active_partitions = OnlyThese(active_partitions)
    return await _original_fetch_records(
        self, consumer, active_partitions, timeout=timeout, max_records=max_records
    )


# Functions (topic, partition) → highest committable offset or None; see agents/batches.py.
commit_ceilings: list[Callable[[str, int], int | None]] = []

_original_filter = Consumer._filter_committable_offsets


def filter_committable_offsets(self: Any, tps: Any) -> dict[Any, int]:
    """faust's choice of offsets to commit, capped below any unfinished batch (fix 5)."""
    # faust drops the acknowledged offsets it is about to commit from its bookkeeping;
    # those above a cap must stay there, to be committed once the cap is lifted (a batch
    # running in a task is acknowledged while it runs, see agents/batches.run_in_flight).
    tps = list(tps)  # faust passes a generator
    before = {tp: list(self._acked[tp]) for tp in tps}
    offsets: dict[Any, int] = _original_filter(self, tps)
    for tp in list(offsets):
        for ceiling_of in commit_ceilings:
            ceiling = ceiling_of(tp.topic, tp.partition)
            if ceiling is not None and offsets[tp] > ceiling:
                committed = self._committed_offset[tp]
                keep_from = ceiling
                if committed is not None and ceiling <= committed:
                    del offsets[tp]
                    keep_from = committed
                else:
                    offsets[tp] = ceiling
                _restore_acked(self, tp, [o for o in before.get(tp, ()) if o >= keep_from])
                break
    return offsets


def _restore_acked(consumer: Any, tp: Any, offsets: list[int]) -> None:
    index = consumer._acked_index[tp]
    acked = consumer._acked[tp]
    for offset in offsets:
        if offset not in index:
            index.add(offset)
            acked.append(offset)
    acked.sort()


_original_perform_seek = Consumer.perform_seek


async def perform_seek(self: Any) -> None:
    """Seek to the committed offsets; where none is committed yet, seek to the beginning
    (``auto_offset_reset = earliest``) and take that as the committed offset, so a hole
    right there is not committed past either.

    Seeking there explicitly matters for a partition assigned while running (a table found
    by discovery): records fetched before its stream was ready are skipped, yet move the
    fetch position on, and with nothing committed no seek brought them back — they were
    never processed (found by the discovery test with two workers).
    """
    await _original_perform_seek(self)
    fresh = [
        tp
        for tp in self.assignment()
        if self._committed_offset[tp] is None and self.app.topics.acks_enabled_for(tp.topic)
    ]
    if not fresh:
        return
    try:
        beginnings = await asyncio.wait_for(self.earliest_offsets(*fresh), 10.0)
    except (TimeoutError, Exception) as exc:  # keep faust's behaviour for these
        log.warning("no start offsets for %s (%r); commits as faust does", fresh, exc)
        return
    for tp in fresh:
        start = beginnings.get(tp)
        if start is not None and start >= 0:
            await self.seek(tp, start)
            self._committed_offset[tp] = start


async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """faust's ``Recovery.on_recovery_completed``, seeking before resuming (fix 4)."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
            f"param {generation_id}"
        )
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def resume_streams(self: Any, generation_id: int = 0) -> None:
    """faust's ``Recovery._resume_streams``, seeking before resuming (fix 4)."""
    app = self.app
    consumer = app.consumer
    await app.on_rebalance_complete.send()
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    else:
        self.log.info("Resuming streams with empty assignment")
    self.completed.set()
    self.log.info("Resuming flow...")
    app.flow_control.resume()
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


_original_build_highwaters = Recovery._build_highwaters


async def build_highwaters(
    self: Any, consumer: Any, tps: Any, destination: Any, title: str
) -> None:
    """faust's ``Recovery._build_highwaters``, then each raised to the true end (fix 6)."""
    await _original_build_highwaters(self, consumer, tps, destination, title)
    if not tps:
        return
    conf = self.app.conf
    bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in conf.broker)
    options = dict(credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))
    parts = {tp: TopicPartition(tp.topic, tp.partition) for tp in tps}
    try:
        ends = await asyncio.wait_for(
            true_end_offsets(bootstrap, list(parts.values()), client_options=options),
            conf.broker_request_timeout,
        )
    except Exception as exc:  # keep faust's values: a short recovery, not a stuck one
        log.warning("reading the true end of the %s changelogs failed: %r", title, exc)
        return
    for tp, part in parts.items():
        end = ends.get(part)
        if end is not None and end - 1 > destination[tp]:  # faust's highwater is end - 1
            destination[tp] = end - 1


_original_seek_offsets = Recovery._seek_offsets


async def seek_offsets(self: Any, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
    """faust's ``Recovery._seek_offsets``, an offset never built read from 0 (fix 7)."""
    new_offsets = {}
    for tp in tps:
        offset = offsets.get(tp)
        # -1 is faust's "nothing read yet"; None: added by a rebalance after the offsets
        # were built. Both mean: from the beginning.
        new_offsets[tp] = offset if isinstance(offset, int) and offset >= 0 else 0
    await consumer.seek_wait(new_offsets)


FETCH_MAX_WAIT_MS = 100
_original_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def create_worker_consumer(self: Any, transport: Any) -> Any:
    """faust's worker consumer, with fetches held at most ``FETCH_MAX_WAIT_MS`` (10)."""
    consumer = _original_create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start(), which builds the fetcher
    return consumer


def apply() -> None:
    global _APPLIED
    if _APPLIED:
        return
    # Deliberate monkeypatches of a pinned faust; see the module docstring.
    Consumer._new_offset = new_offset  # type: ignore[method-assign]
    Consumer.ack = ack  # type: ignore[method-assign]
    AIOKafkaConsumerThread._fetch_records = fetch_records  # type: ignore[method-assign]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
    Consumer._add_gap = add_gap  # type: ignore[method-assign]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    Consumer._filter_committable_offsets = filter_committable_offsets  # type: ignore[method-assign]
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
    Recovery._resume_streams = resume_streams  # type: ignore[method-assign]
    Recovery._build_highwaters = build_highwaters  # type: ignore[method-assign]
    Recovery._seek_offsets = seek_offsets  # type: ignore[method-assign]
    faust_eager_delivery.apply()  # 12
    faust_raw_delivery.apply()  # 13
    faust_fetch_loop.apply()  # 14
    faust_same_loop.apply()  # 15
    _APPLIED = True
