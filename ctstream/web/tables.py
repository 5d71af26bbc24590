"""``/api/tables/``: the pipeline's Faust tables, inspected from any worker.

A table's entries live on the worker that owns their changelog partition. A lookup by
key is answered by the owner: another worker forwards the request to it (the partition
is the one the agents wrote the key in — a table name's poll-ticks partition, a unique
id's raw-topic partition). A listing (``scope=all``, the default) asks every worker for
its own entries and merges them; the dedup table also gives its counts per window.

The dedup table keeps 16-byte digests of the ids, not the ids (``streams/seen_ids.py``):
it is listed one entry per id, keyed by the digest's hex, and looked up by the id itself.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka.partitioner import DefaultPartitioner

from ctstream.models import encode_key, parse_unique_id
from ctstream.streams.app import PipelineApp
from ctstream.streams.seen_ids import SeenIds, digest

if TYPE_CHECKING:
    from ctstream.agents import Pipeline

PAGE_SIZE = 100


def _tables(pipeline: Pipeline) -> dict[str, Any]:
    topics = pipeline.topics
    found: dict[str, Any] = {}
    if topics.versions is not None:
        found["ct-versions"] = topics.versions
    if topics.seen_ids is not None:
        found["seen-ids"] = topics.seen_ids
    return found


def _underlying(table: Any) -> Any:
    return table.table if isinstance(table, SeenIds) else table


def _partition_of(name: str, key: str, partitions: int) -> int:
    """The partition the agents wrote ``key`` of table ``name`` in."""
    if name == "seen-ids":
        _, values, _ = parse_unique_id(key)
        raw = encode_key(values)
    else:
        raw = key.encode("utf-8")  # poll ticks are keyed by the table name
    return int(DefaultPartitioner()(raw, list(range(partitions)), list(range(partitions))))


def changelog_owners(app: PipelineApp) -> dict[Any, Any]:
    """Worker URL → {changelog topic: partitions} (faust's ``PartitionAssignor``, which
    the abstract ``PartitionAssignorT`` does not declare)."""
    assignor: Any = app.assignor
    owners: dict[Any, Any] = assignor.changelog_distribution
    return owners


def _owner_url(app: PipelineApp, topic: str, partition: int) -> str | None:
    for url, tps in changelog_owners(app).items():
        if partition in tps.get(topic, ()):
            return str(url)
    return None


def _entries(table: Any, key: str | None = None) -> list[dict[str, Any]]:
    """The entries this worker holds (only those of ``key`` if given)."""
    if isinstance(table, SeenIds):  # one entry per id: its digest, partition and window
        wanted = None if key is None else digest(key)
        return [
            {"key": id_digest.hex(), "partition": p, "window": list(table.window_span(w))}
            for p, w, id_digest in table.entries()
            if wanted is None or id_digest == wanted
        ]
    return [
        {"key": k, "value": v} for k, v in list(table.data.items()) if key is None or str(k) == key
    ]


def _json_key(entry: Mapping[str, Any]) -> bytes:
    return orjson.dumps(entry["key"], default=str)


async def _fetch(app: PipelineApp, url: str, path: str, headers: Mapping[str, str]) -> Any:
    async with app.http_client.get(url.rstrip("/") + path, headers=dict(headers)) as response:
        return orjson.loads(await response.read())


def install_table_views(app: PipelineApp, pipeline: Pipeline) -> None:
    partitions = pipeline.settings.kafka.partitions

    @app.page("/api/tables/")
    async def list_tables(web: Any, request: Any) -> Any:
        tables = []
        for name, table in _tables(pipeline).items():
            real = _underlying(table)
            tables.append(
                {
                    "name": name,
                    "help": real.help,
                    "windowed": real is not table,
                    "changelog_topic": real.changelog_topic.get_topic_name(),
                    "local_entries": (
                        table.count() if isinstance(table, SeenIds) else len(real.data)
                    ),
                }
            )
        return web.json({"tables": tables})

    @app.page("/api/tables/{name}/")
    async def inspect(web: Any, request: Any, name: str) -> Any:
        table = _tables(pipeline).get(name)
        if table is None:
            return web.json({"error": f"no table {name!r}"}, status=404)
        real = _underlying(table)
        query = request.query
        auth = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        if "key" in query:
            key = query["key"]
            try:
                partition = _partition_of(name, key, partitions)
            except (ValueError, TypeError) as exc:
                return web.json({"error": f"not a key of {name!r}: {exc}"}, status=400)
            topic = real.changelog_topic.get_topic_name()
            owner = _owner_url(app, topic, partition)
            if owner is not None and owner.rstrip("/") != str(app.conf.canonical_url).rstrip("/"):
                data = await _fetch(app, owner, request.url.path_qs, auth)
                return web.json({**data, "answered_by": owner})
            found = _entries(table, key)
            return web.json(
                {
                    "table": name,
                    "key": key,
                    "partition": partition,
                    "found": bool(found),
                    "entries": found,
                    "answered_by": str(app.conf.canonical_url),
                }
            )
        entries = _entries(table)
        if query.get("scope", "all") == "all":
            urls = {str(u) for u in changelog_owners(app)}
            urls.discard(str(app.conf.canonical_url))
            path = f"/api/tables/{name}/?scope=local&size=1000000"
            others = await asyncio.gather(
                *(_fetch(app, url, path, auth) for url in sorted(urls)), return_exceptions=True
            )
            for other in others:
                if isinstance(other, dict):
                    entries += other.get("entries", [])
        entries.sort(key=_json_key)
        counts = Counter(tuple(e["window"]) for e in entries if "window" in e)
        try:
            page = max(0, int(query.get("page", 0)))
            size = max(1, min(int(query.get("size", PAGE_SIZE)), 1_000_000))
        except ValueError:
            return web.json({"error": "page and size must be integers"}, status=400)
        return web.json(
            {
                "table": name,
                "total": len(entries),
                "page": page,
                "size": size,
                "entries": entries[page * size : (page + 1) * size],
                "windows": [
                    {"start": start, "end": end, "ids": n}
                    for (start, end), n in sorted(counts.items())
                ],
            }
        )
