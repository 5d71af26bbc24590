"""Every patch ctstream applies to faust, mode and aiokafka, as data.

docs/faust-patches.md explains each by its number: what it changes, why, the upstream issue
and when it can go. The fingerprint test (tests/unit/test_faust_fingerprints.py) holds the
upstream functions they replace, wrap or copy to the source they were verified against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.conductor import Conductor
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from ctstream.streams.faust_compat import (
    commits,
    eager_delivery,
    fetch_loop,
    fetching,
    raw_delivery,
    recovery,
    same_loop,
)
from ctstream.streams.faust_compat.patching import (
    AppliedPatch,
    Patch,
    PatchKind,
    applied_patch,
    apply_patch,
    build_replacement,
    replaced_by,
)

ConsumerThread = faust_aiokafka.AIOKafkaConsumerThread
REPLACED, WRAPPED, COPIED = PatchKind.REPLACED, PatchKind.WRAPPED, PatchKind.COPIED

PATCHES: tuple[Patch, ...] = (
    Patch(1, Consumer, "_new_offset", replaced_by(commits.new_offset), COPIED),
    Patch(2, Consumer, "_add_gap", replaced_by(commits.add_gap), REPLACED),
    Patch(3, Consumer, "perform_seek", commits.wrap_perform_seek, WRAPPED),
    Patch(
        4, Recovery, "on_recovery_completed", replaced_by(recovery.on_recovery_completed), COPIED
    ),
    Patch(4, Recovery, "_resume_streams", replaced_by(recovery.resume_streams), COPIED),
    Patch(
        5, Consumer, "_filter_committable_offsets", commits.wrap_filter_committable_offsets, WRAPPED
    ),
    Patch(6, Recovery, "_build_highwaters", recovery.wrap_build_highwaters, WRAPPED),
    Patch(7, Recovery, "_seek_offsets", replaced_by(recovery.seek_offsets), COPIED),
    Patch(8, Consumer, "ack", commits.wrap_ack, WRAPPED),
    Patch(9, ConsumerThread, "_fetch_records", fetching.wrap_fetch_records, WRAPPED),
    Patch(
        10, ConsumerThread, "_create_worker_consumer", fetching.wrap_create_worker_consumer, WRAPPED
    ),
    # 11 has no patch of its own: it is part of 14's loop.
    Patch(12, Consumer, "wait_first", eager_delivery.wrap_wait_first, WRAPPED),
    Patch(13, Conductor, "_build_handler", raw_delivery.wrap_build_handler, WRAPPED),
    Patch(
        13,
        Conductor,
        "_compile_message_handler",
        raw_delivery.wrap_compile_message_handler,
        WRAPPED,
    ),
    Patch(14, Consumer, "_drain_messages", replaced_by(fetch_loop.drain_messages), COPIED),
    Patch(
        15,
        faust_aiokafka.Consumer,
        "_new_consumer_thread",
        replaced_by(same_loop.new_consumer_thread),
        COPIED,
    ),
    Patch(
        15,
        ConsumerThread,
        "_gather_remaining_tasks",
        replaced_by(same_loop.gather_remaining_tasks),
        REPLACED,
    ),
    Patch(16, ConsumerThread, "_commit", replaced_by(commits.commit), COPIED),
)


def apply_all() -> list[AppliedPatch]:
    """Apply every patch of :data:`PATCHES`, in order; idempotent. Returns their marks."""
    return [apply_patch(patch) for patch in PATCHES]


def applied_patches() -> list[AppliedPatch]:
    """The patches of :data:`PATCHES` now in place, as read off the classes."""
    marks = (applied_patch(patch.owner, patch.name) for patch in PATCHES)
    return [mark for mark in marks if mark is not None]


def patch_of(owner: type, name: str) -> Patch:
    """The patch of ``owner.name`` in :data:`PATCHES` (KeyError if there is none)."""
    for patch in PATCHES:
        if patch.owner is owner and patch.name == name:
            return patch
    raise KeyError(f"no patch of {owner.__qualname__}.{name}")


def replacement_for(owner: type, name: str) -> Callable[..., Any]:
    """The function ctstream puts at ``owner.name``, built over upstream's, not installed."""
    return build_replacement(patch_of(owner, name))
