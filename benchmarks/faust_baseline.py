"""Baseline Faust agents on the same broker, run as a child process by ``benchmarks.stages``.

``passthrough``: an agent that only reads the raw topics (Faust's floor). ``drain``: the
same, taking the events straight from the agent's channel queue and acknowledging them
(what ctstream's streams/channel_batches.py does), without faust's stream. ``plain-dedup``:
the textbook Faust dedup stage — per event one windowed-table lookup and write (with its
changelog message) and one produce to the deduped topic, no batching. All count events
and write ``{"first": t, "last": t, "events": n}`` to ``--out`` when ``--events`` arrived.

    .venv/bin/python -m benchmarks.faust_baseline --config FILE --mode passthrough
        --events N --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from ctstream.models import TableSpec
from ctstream.settings import load_settings
from ctstream.streams.app import create_app
from ctstream.streams.topics import TopicNames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, required=True, help="the stage's ctstream config")
    parser.add_argument("--mode", choices=["passthrough", "drain", "plain-dedup"], required=True)
    parser.add_argument("--events", type=int, required=True, help="events to wait for")
    parser.add_argument("--out", type=Path, required=True, help="result file (JSON)")
    parser.add_argument("--app-id", default="bench-faust-baseline")
    args = parser.parse_args(argv)

    import uvloop
    from faust.worker import Worker

    settings = load_settings(args.config)
    names = TopicNames(settings.kafka.topic_prefix)
    specs = [TableSpec(t, None, t, ()) for t in settings.source.tables]
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    settings = settings.model_copy(
        update={"app": settings.app.model_copy(update={"id": args.app_id})}
    )
    app: Any = create_app(settings, web_enabled=False)
    app.producer.buffer.max_messages = 10_000
    raw = app.topic(*(names.raw(s) for s in specs), key_serializer="raw", value_serializer="raw")
    state = {"first": 0.0, "last": 0.0, "events": 0}

    def seen() -> None:
        now = time.time()
        if not state["events"]:
            state["first"] = now
        state["events"] += 1
        state["last"] = now
        if state["events"] == args.events:
            args.out.write_text(json.dumps(state), encoding="utf-8")

    if args.mode == "passthrough":

        @app.agent(raw, name="bench.passthrough")
        async def passthrough(stream: Any) -> None:
            async for _value in stream:
                seen()

    elif args.mode == "drain":

        @app.agent(raw, name="bench.drain")
        async def drain(stream: Any) -> None:
            queue = stream.channel.queue
            while True:
                events = [await queue.get()]
                while len(events) < 5000 and not queue.empty():
                    events.append(queue.get_nowait())
                for event in events:
                    event.ack()
                    seen()

    else:
        import orjson

        out = app.topic(
            f"{settings.kafka.topic_prefix}.baseline-out",
            partitions=settings.kafka.partitions,
            key_serializer="raw",
            value_serializer="raw",
        )
        table = app.Table(
            "baseline-seen", default=int, partitions=settings.kafka.partitions
        ).tumbling(timedelta(minutes=10), expires=timedelta(minutes=30))

        @app.agent(raw, name="bench.plain_dedup")
        async def plain_dedup(stream: Any) -> None:
            async for event in stream.events():
                uid = orjson.loads(event.value)["message_unique_id"]
                if not table[uid].current():
                    table[uid] = 1
                    await out.send(key=event.key, value=event.value)
                seen()

    worker: Any = Worker(app, loop=loop, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.spinner = None  # as ctstream's worker (runner.faust_worker): root logger not DEBUG
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
