"""An HTTP proxy in front of the BigQuery emulator that injects faults into insertAll.

The emulator cannot fail on demand. The proxy forwards everything untouched except
insertAll requests, which it answers according to ``mode`` while one is set:

* ``"503"`` / ``"429"`` / ``"403"`` (quotaExceeded): an error response in Google's shape;
* ``"drop"``: the connection is closed without an answer;
* ``"slow"``: forwarded after ``delay`` seconds;
* ``max_body``: requests larger than this get 413, whatever the mode;
* ``invalid_value``: a request with a row holding this value is answered as BigQuery
  answers one with an invalid row (without ``skipInvalidRows``): nothing inserted,
  ``invalid`` for that row and ``stopped`` for every other, whatever the mode.

and, while ``refuse_datasets`` is set, answers a dataset create as BigQuery answers a
login without ``bigquery.datasets.create``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import ClientSession, web

_ERRORS = {
    "503": (503, "backendError", "injected: backend unavailable"),
    "429": (429, "rateLimitExceeded", "injected: too many requests"),
    "403": (403, "quotaExceeded", "injected: quota exceeded"),
}


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode: str | None = None
        self.delay = 2.0
        self.max_body: int | None = None
        self.invalid_value: str | None = None
        self.refuse_datasets = False
        self.name_invalid_rows = True  # False: answer "stopped" rows only (a malformed answer)
        self.stopped_requests = 0
        self.refused = 0
        self.too_large = 0
        self.forwarded_inserts = 0
        # (method, path, body) of every table create or update, for what was asked of it.
        self.table_writes: list[tuple[str, str, bytes]] = []

    @property
    def failing(self) -> bool:
        return self.mode is not None

    @failing.setter
    def failing(self, value: bool) -> None:
        self.mode = "503" if value else None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path.rstrip("/")
        if request.method in ("POST", "PATCH", "PUT") and (
            path.endswith("/tables") or path.rsplit("/", 2)[-2] == "tables"
        ):
            self.table_writes.append((request.method, request.path, body))
        if self.refuse_datasets and request.method == "POST" and path.endswith("/datasets"):
            return _error(
                403,
                "accessDenied",
                "Access Denied: Project local: User does not have bigquery.datasets.create "
                "permission in project local.",
            )
        if request.path.endswith("/insertAll"):
            if self.max_body is not None and len(body) > self.max_body:
                self.too_large += 1
                return _error(413, "badRequest", "Request payload size exceeds the limit")
            if self.invalid_value is not None:
                stopped = self._stopped(body)
                if stopped is not None:
                    return stopped
            mode = self.mode
            if mode in _ERRORS:
                self.refused += 1
                return _error(*_ERRORS[mode])
            if mode == "drop":
                self.refused += 1
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("injected: connection dropped")
            if mode == "slow":
                await asyncio.sleep(self.delay)
            self.forwarded_inserts += 1
        return await self._forward(request, body)

    def _stopped(self, body: bytes) -> web.Response | None:
        rows = json.loads(body)["rows"]
        invalid = {i for i, r in enumerate(rows) if self.invalid_value in r["json"].values()}
        if not invalid:
            return None
        self.stopped_requests += 1
        errors = [
            {
                "index": i,
                "errors": [
                    {"reason": "invalid", "location": "name", "message": "injected: bad value"}
                    if i in invalid
                    else {"reason": "stopped", "location": "", "message": ""}
                ],
            }
            for i in range(len(rows))
            if self.name_invalid_rows or i not in invalid
        ]
        return web.json_response(
            {"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors}
        )

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in {"host", "content-length", "transfer-encoding"}
        }
        async with (
            ClientSession() as session,
            session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as upstream,
        ):
            payload = await upstream.read()
            return web.Response(
                status=upstream.status,
                body=payload,
                content_type=upstream.content_type if payload else None,
            )


def _error(status: int, reason: str, message: str) -> web.Response:
    body = {"error": {"code": status, "message": message, "errors": [{"reason": reason}]}}
    return web.json_response(body, status=status)


@asynccontextmanager
async def fault_proxy(upstream: str) -> AsyncIterator[tuple[FaultProxy, str]]:
    """The proxy on a free loopback port: (proxy, its endpoint URL)."""
    proxy = FaultProxy(upstream)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield proxy, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
