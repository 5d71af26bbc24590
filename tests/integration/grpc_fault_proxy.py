"""A gRPC proxy in front of the emulator's Storage Write port that injects faults.

The emulator cannot fail on demand. ``GrpcFaultProxy`` serves every method of
``google.cloud.bigquery.storage.v1.BigQueryWrite`` on a free loopback port (``endpoint``)
and forwards each untouched (raw bytes, metadata, deadline; upstream errors come back with
their status), except while ``mode`` is set:

* ``"503"``: UNAVAILABLE; ``"429"`` / ``"403"``: RESOURCE_EXHAUSTED (quota; gRPC has no
  403 for quota: Google's Storage Write API answers an exceeded quota so);
* ``"drop"``: UNAVAILABLE, as a reset connection looks to the client;
* ``"slow"``: forwarded after ``delay`` seconds (AppendRows only);
* ``"lost_answer"`` (AppendRows only): the request is forwarded, so its rows are appended,
  but the client gets UNAVAILABLE instead of the answer — what offsets are for: a retry at
  the same offset must be answered ALREADY_EXISTS and append nothing.

The error modes fail AppendRows requests and CreateWriteStream / FinalizeWriteStream
calls with an ``injected: …`` message, forwarding nothing. Google's documented behaviour:
UNAVAILABLE and RESOURCE_EXHAUSTED are the transient errors to retry with backoff, one
answer per AppendRows request in order, and an append at an offset already written is
answered ALREADY_EXISTS (beyond the end OUT_OF_RANGE). Not documented but what the client
sees: a dropped connection (here an UNAVAILABLE status, not a real TCP reset) and a lost
answer (a connection dropped after the server appended). An AppendRows call that sends
no request (google-cloud-bigquery-storage retries AppendRows on UNAVAILABLE by reopening
the call with the request iterator it already consumed) is forwarded as it is.

``budget``: while not None, the faults still to inject; at 0 the mode is cleared, so a
test knows exactly how many requests fail. Counters (``refused``: failed without
forwarding; ``forwarded_appends``, ``lost_answers``, ``already_exists``: AppendRows
answers ALREADY_EXISTS; ``calls`` per method) change under a lock. The server runs on its
own thread pool, so async tests use it as is; a bidi call is forwarded request by request
on one upstream call.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.cloud.bigquery_storage_v1 import types

SERVICE = "google.cloud.bigquery.storage.v1.BigQueryWrite"
UNARY = (
    "CreateWriteStream",
    "GetWriteStream",
    "FinalizeWriteStream",
    "BatchCommitWriteStreams",
    "FlushRows",
)
FAILING_UNARY = ("CreateWriteStream", "FinalizeWriteStream")
_ERRORS = {
    "503": (grpc.StatusCode.UNAVAILABLE, "injected: the service is unavailable"),
    "429": (grpc.StatusCode.RESOURCE_EXHAUSTED, "injected: too many requests"),
    "403": (grpc.StatusCode.RESOURCE_EXHAUSTED, "injected: quota exceeded"),
    "drop": (grpc.StatusCode.UNAVAILABLE, "injected: connection reset by peer"),
}
_ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]
_SKIPPED_METADATA = ("user-agent", "content-type", "te", "grpc-")


class GrpcFaultProxy:
    def __init__(self, upstream: str) -> None:
        self.mode: str | None = None
        self.delay = 2.0
        self.budget: int | None = None  # faults still to inject; None: while mode is set
        self.refused = 0  # requests and calls failed without forwarding
        self.forwarded_appends = 0  # AppendRows requests forwarded (with lost answers)
        self.lost_answers = 0  # AppendRows requests forwarded whose answer was withheld
        self.already_exists = 0  # AppendRows answered ALREADY_EXISTS (sent again at an offset)
        self.calls: dict[str, int] = {}  # calls (AppendRows: requests) per method
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(upstream)
        self._server = grpc.server(ThreadPoolExecutor(max_workers=16))
        handlers = {name: grpc.unary_unary_rpc_method_handler(self._unary(name)) for name in UNARY}
        handlers["AppendRows"] = grpc.stream_stream_rpc_method_handler(self._append_rows)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.endpoint = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    @property
    def failing(self) -> bool:
        return self.mode is not None

    @failing.setter
    def failing(self, value: bool) -> None:
        self.mode = "503" if value else None

    def close(self) -> None:
        self._server.stop(grace=None)
        self._channel.close()

    def __enter__(self) -> GrpcFaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fault(self, method: str) -> str | None:
        """The fault to inject into this call or request, counted against ``budget``."""
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            mode = self.mode
            if mode is None or (
                method != "AppendRows" and (method not in FAILING_UNARY or mode not in _ERRORS)
            ):
                return None
            if self.budget is not None:
                self.budget -= 1
                if self.budget <= 0:
                    self.mode, self.budget = None, None
            if mode in _ERRORS:
                self.refused += 1
            return mode

    def _unary(self, name: str) -> Any:
        call = self._channel.unary_unary(f"/{SERVICE}/{name}")

        def handle(raw: bytes, context: grpc.ServicerContext) -> bytes:
            mode = self._fault(name)
            if mode in _ERRORS:
                context.abort(*_ERRORS[mode])
            try:
                answer: bytes = call(raw, **_call_options(context))
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())
            return answer

        return handle

    def _append_rows(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        outbox: queue.Queue[bytes | None] = queue.Queue()

        def sent() -> Iterator[bytes]:
            while (raw := outbox.get()) is not None:
                yield raw

        append = self._channel.stream_stream(f"/{SERVICE}/AppendRows")
        upstream = append(sent(), **_call_options(context))
        try:
            for raw in requests:
                mode = self._fault("AppendRows")
                if mode in _ERRORS:
                    context.abort(*_ERRORS[mode])
                if mode == "slow":
                    threading.Event().wait(self.delay)
                outbox.put(raw)
                answer = next(upstream, None)
                if answer is None:
                    return  # the upstream ended the call: its status is OK
                with self._lock:
                    self.forwarded_appends += 1
                    self.already_exists += _code(answer) == _ALREADY_EXISTS
                    self.lost_answers += mode == "lost_answer"
                if mode == "lost_answer":
                    context.abort(grpc.StatusCode.UNAVAILABLE, "injected: answer lost (appended)")
                yield answer
            outbox.put(None)  # the client half-closed: so does the upstream call
            yield from upstream
        except grpc.RpcError as exc:
            code = getattr(exc, "code", None)
            if callable(code):  # the upstream failed: so does this call
                context.abort(code(), exc.details())
            # else the client went away: nothing to answer
        finally:
            outbox.put(None)
            upstream.cancel()


def _code(answer: bytes) -> int:
    return int(types.AppendRowsResponse.deserialize(answer).error.code)


def _call_options(context: grpc.ServicerContext) -> dict[str, Any]:
    """The client's metadata and remaining deadline, for the upstream call."""
    metadata = [
        (key, value)
        for key, value in context.invocation_metadata()
        if not key.startswith(_SKIPPED_METADATA)
    ]
    return {"metadata": metadata, "timeout": context.time_remaining()}
