"""Waiting for the producer's futures (ctstream/streams/acks.py)."""

from __future__ import annotations

import asyncio
import gc

import pytest
from aiokafka.errors import KafkaTimeoutError

from ctstream.errors import KafkaSendFailed
from ctstream.streams.acks import Sent, acknowledged
from tests.loop_steps import after_scheduled_callbacks


class SendFailed(Exception):
    pass


async def test_waits_until_every_future_is_done() -> None:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    waiting = asyncio.ensure_future(acknowledged(futures))
    futures[0].set_result(None)
    await after_scheduled_callbacks()  # the task ran up to the first future not done
    assert not waiting.done()  # two still to come
    futures[2].set_result(None)
    futures[1].set_result(None)
    await asyncio.wait_for(waiting, 5)


async def test_a_failure_is_raised_and_no_other_error_is_left_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[object] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    futures = [loop.create_future() for _ in range(3)]
    futures[0].set_result(None)
    futures[1].set_exception(SendFailed("broker gone"))
    waiting = asyncio.ensure_future(acknowledged(futures))
    with pytest.raises(SendFailed):
        await asyncio.wait_for(waiting, 5)
    futures[2].set_exception(SendFailed("broker gone"))  # fails later, like the rest
    await after_scheduled_callbacks()  # the retrieving callback is scheduled, not called
    del futures, waiting
    gc.collect()
    assert unretrieved == []


async def test_nothing_to_wait_for() -> None:
    await asyncio.wait_for(acknowledged([]), 5)


async def test_a_delivery_kafka_refused_is_a_retriable_send_failure() -> None:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(2)]
    futures[0].set_result(None)
    futures[1].set_exception(KafkaTimeoutError())
    with pytest.raises(KafkaSendFailed, match="KafkaTimeoutError") as raised:
        await asyncio.wait_for(Sent(futures).acknowledged(), 5)
    assert raised.value.retriable
    assert isinstance(raised.value.__cause__, KafkaTimeoutError)
