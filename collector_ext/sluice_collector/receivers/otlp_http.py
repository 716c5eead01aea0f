"""The OTLP/HTTP front door: `POST /v1/logs`, `/v1/traces`, `/v1/metrics` as an ASGI app.

Thin on purpose, like the gRPC one: a request becomes one `IngestCore.export` call, run in a
bounded thread pool (the core is blocking: it runs the sinks), and the core's typed errors
become HTTP statuses with a `google.rpc.Status` body in the request's encoding:

    Unauthenticated   → 401 + WWW-Authenticate: Bearer     (checked before the body is read)
    DecodeError       → 400                                (never 500 for bad input)
    RequestTooLarge   → 413                                (after decompression, as over gRPC)
    Overloaded        → 429 + Retry-After                  (and RetryInfo in the Status)
    SinkError, InternalError → 503 + Retry-After

Before the core is called the transport is checked, cheapest first: the path (404), the method
(405 with Allow), the bearer token (401), Content-Type (415: `application/x-protobuf` or
`application/json`), Content-Encoding (415: `gzip`, `deflate` or none), Content-Length (413).
Bodies are read on the event loop within `body_timeout_s` (408), and the bytes buffered for
bodies still arriving are bounded (`max_pending_bytes`, 429), so a slow or stalled client holds
neither a pool thread nor a place in the core's in-flight set, and costs memory only for what
it really sent; decompression happens in the pool, never past `max_request_bytes` (a gzip bomb
is cut off at the limit and answered 413).

CORS (for browser SDKs) is off unless `cors.allowed_origins` is set; a preflight `OPTIONS` is
answered from the config alone, without a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, status_pb2
from google.rpc.error_details_pb2 import RetryInfo

from sluice_collector.asgi import Receive, Scope, Send
from sluice_collector.batch import Signal
from sluice_collector.errors import (
    DecodeError,
    Overloaded,
    RequestTooLarge,
    Retryable,
    Unauthenticated,
)
from sluice_collector.ingest import Caller, Encoding, IngestCore
from sluice_collector.ingest.decode import encode_response
from sluice_collector.receivers.asgi_server import HttpMetrics
from sluice_collector.receivers.config import CorsConfig

PATHS: dict[str, Signal] = {
    "/v1/logs": Signal.LOGS,
    "/v1/traces": Signal.TRACES,
    "/v1/metrics": Signal.METRICS,
}
CONTENT_TYPES: dict[str, Encoding] = {
    "application/x-protobuf": Encoding.PROTOBUF,
    "application/json": Encoding.JSON,
}
log = logging.getLogger("sluice.receiver")
_MEDIA_TYPE = {Encoding.PROTOBUF: b"application/x-protobuf", Encoding.JSON: b"application/json"}
# HTTP "deflate" is the zlib format (RFC 9110 §8.4.1.2); the Python exporter can send it.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Headers a browser may send cross-origin without their being listed in `cors.allowed_headers`.
_IMPLICIT_CORS_HEADERS = frozenset(
    {"accept", "accept-language", "content-language", "content-type", "content-encoding"}
)

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What a request may cost the front door before the core sees it."""

    max_request_bytes: int
    max_pending_bytes: int = 256 * 1024 * 1024
    body_timeout_s: float = 30.0
    retry_after_s: float = 1.0  # told to clients refused by the front door's own bounds


class _Refusal(Exception):
    """A response decided by the front door itself; `close` ends the connection after it."""

    def __init__(self, status: int, code: int, message: str, *, headers: Headers | None = None,
                 retry_after_s: float = 0.0, close: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or []
        self.retry_after_s = retry_after_s
        self.close = close  # the body may be unread: end the connection rather than drain it


def inflate(body: bytes, coding: str, limit: int) -> bytes:
    """`body` decoded from its Content-Encoding, never producing more than `limit` bytes:
    raises RequestTooLarge past it (a gzip bomb stops there) and DecodeError for bad data.
    Concatenated gzip members are read as one stream, as gzip(1) and Go's reader do."""
    wbits = _WBITS.get(coding)
    if wbits is None:
        return body
    out: list[bytes] = []
    produced = 0
    data = body
    while data:
        inflater = zlib.decompressobj(wbits)
        try:
            chunk = inflater.decompress(data, limit - produced + 1)
        except zlib.error as exc:
            raise DecodeError(f"the body is not valid {coding} data: {exc}") from None
        produced += len(chunk)
        if produced > limit:
            raise RequestTooLarge(
                f"request is over the receiver's limit of {limit} bytes after {coding} "
                "decompression; send smaller batches"
            )
        if not inflater.eof:
            raise DecodeError(f"the {coding} body is truncated")
        out.append(chunk)
        data = inflater.unused_data if wbits != zlib.MAX_WBITS else b""
    return b"".join(out)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _status_body(code: int, message: str, encoding: Encoding | None, retry_after_s: float) -> bytes:
    """A google.rpc.Status (with RetryInfo when retryable) in the request's encoding; plain
    text when the request's encoding is unknown."""
    if encoding is None:
        return (message + "\n").encode("utf-8")
    status = status_pb2.Status(code=code, message=message)
    if retry_after_s:
        seconds = int(retry_after_s)
        info = RetryInfo(retry_delay=Duration(seconds=seconds,
                                              nanos=int((retry_after_s - seconds) * 1e9)))
        status.details.add().Pack(info)
    if encoding is Encoding.JSON:
        return json_format.MessageToJson(status, indent=None).encode("utf-8")
    data: bytes = status.SerializeToString()
    return data


class OtlpHttpApp:
    """The ASGI app: one `IngestCore.export` per request, on `executor`'s threads."""

    def __init__(
        self, core: IngestCore, *, limits: HttpLimits, cors: CorsConfig, metrics: HttpMetrics,
        threads: int,
    ) -> None:
        self.core = core
        self.limits = limits
        self.cors = cors
        self.metrics = metrics
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sluice-http")
        self._busy = 0  # requests handed to the executor; only touched on the event loop
        self._reading: set[asyncio.Task[object]] = set()  # requests whose body is arriving
        self._pending_bytes = 0  # what those requests have buffered so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._logged_unexpected: set[str] = set()
        allow = "POST, OPTIONS" if cors.enabled else "POST"
        self._allow = allow.encode("ascii")

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Refuse new requests (503 + Retry-After) and cut short bodies still arriving; the
        requests already in the core finish. Call from any thread, before stopping the server."""
        self._closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(self._cancel_reads)

    def _cancel_reads(self) -> None:
        for task in list(self._reading):
            task.cancel()

    def shutdown_executor(self) -> None:
        self._executor.shutdown(wait=True)

    # -- ASGI --------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan and websocket scopes: nothing to do
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        headers: Headers = scope["headers"]
        cors_headers = self._cors_headers(_header(headers, b"origin"))
        encoding = CONTENT_TYPES.get(self._media_type(headers))
        try:
            status, body, extra = await self._handle(scope, headers, receive, encoding)
        except Exception as exc:
            refusal = exc if isinstance(exc, _Refusal) else self._internal_error(exc)
            status = refusal.status
            body = _status_body(refusal.code, str(refusal), encoding, refusal.retry_after_s)
            extra = list(refusal.headers)
            if refusal.close:
                extra.append((b"connection", b"close"))
            if refusal.retry_after_s:
                extra.append((b"retry-after", str(max(1, math.ceil(refusal.retry_after_s))).encode()))
        if status == 204:
            response_headers = [*extra, *cors_headers]
        else:
            media = _MEDIA_TYPE[encoding] if encoding is not None else b"text/plain; charset=utf-8"
            response_headers = [(b"content-type", media), (b"content-length", str(len(body)).encode()),
                                *extra, *cors_headers]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self, scope: Scope, headers: Headers, receive: Receive, encoding: Encoding | None,
    ) -> tuple[int, bytes, Headers]:
        signal = PATHS.get(scope["path"])
        method = scope["method"]
        if signal is None:
            raise _Refusal(404, code_pb2.NOT_FOUND, f"no such path {scope['path'][:100]!r}; OTLP/HTTP "
                           "paths are /v1/logs, /v1/traces and /v1/metrics")
        if method == "OPTIONS" and self.cors.enabled:
            return self._preflight(headers)
        if method != "POST":
            raise _Refusal(405, code_pb2.UNIMPLEMENTED, f"method {method} is not allowed; OTLP/HTTP "
                           "exports are POST requests", headers=[(b"allow", self._allow)])
        if self._closing:
            raise self._retry_later("receiver is shutting down; retry later", "closing")
        try:
            caller = self.core.authenticate(signal, _header(headers, b"authorization"))
        except Unauthenticated as exc:
            raise _Refusal(401, code_pb2.UNAUTHENTICATED, str(exc),
                           headers=[(b"www-authenticate", b'Bearer realm="sluice"')]) from None
        if encoding is None:
            self._count(signal, "INVALID_ARGUMENT")
            raise _Refusal(415, code_pb2.INVALID_ARGUMENT, "unsupported Content-Type "
                           f"{self._media_type(headers)[:100]!r}; send application/x-protobuf or "
                           "application/json")
        coding = (_header(headers, b"content-encoding") or b"identity").decode("latin-1").strip().lower()
        if coding not in _WBITS and coding != "identity":
            self._count(signal, "INVALID_ARGUMENT")
            raise _Refusal(415, code_pb2.INVALID_ARGUMENT, f"unsupported Content-Encoding {coding[:50]!r}; "
                           "send gzip, deflate or an uncompressed body",
                           headers=[(b"accept-encoding", b"gzip, deflate")])
        limit = self.limits.max_request_bytes
        declared = _header(headers, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self._count(signal, "RESOURCE_EXHAUSTED")
            raise _Refusal(413, code_pb2.RESOURCE_EXHAUSTED, f"request of {int(declared)} bytes is over "
                           f"the receiver's limit of {limit} bytes; send smaller batches")
        if self._busy >= self.threads:
            raise self._retry_later("receiver is at capacity; retry later", "busy", signal)
        if declared is not None and declared.isdigit() and self._reading and (
                self._pending_bytes + int(declared) > self.limits.max_pending_bytes):
            raise self._pending_full(signal)
        body = await self._read_body(receive, signal, limit)
        self._busy += 1
        try:
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(
                self._executor, self._export, signal, body, coding, encoding, caller)
        except RequestTooLarge as exc:
            raise _Refusal(413, code_pb2.RESOURCE_EXHAUSTED, str(exc), close=False) from None
        except DecodeError as exc:
            raise _Refusal(400, code_pb2.INVALID_ARGUMENT, str(exc), close=False) from None
        except Retryable as exc:
            status = 429 if isinstance(exc, Overloaded) else 503
            raise _Refusal(status, code_pb2.UNAVAILABLE, str(exc), retry_after_s=exc.retry_after_s,
                           close=False) from None
        finally:
            self._busy -= 1
        return 200, response, []

    def _export(self, signal: Signal, body: bytes, coding: str, encoding: Encoding,
                caller: Caller) -> bytes:
        """On a pool thread: decompress within the limit, then the one call into the core."""
        try:
            data = inflate(body, coding, self.limits.max_request_bytes)
        except DecodeError:
            self._count(signal, "INVALID_ARGUMENT")
            raise
        except RequestTooLarge:
            self._count(signal, "RESOURCE_EXHAUSTED")
            raise
        result = self.core.export(signal, data, encoding, caller)
        return encode_response(result.response(signal), encoding)

    async def _read_body(self, receive: Receive, signal: Signal, limit: int) -> bytes:
        """The whole body within `body_timeout_s`, never more than `limit` bytes on the wire."""
        task = asyncio.current_task()
        assert task is not None
        self._reading.add(task)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
                if message["type"] == "http.disconnect":
                    raise _Refusal(400, code_pb2.CANCELLED, "client disconnected")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    self._count(signal, "RESOURCE_EXHAUSTED")
                    raise _Refusal(413, code_pb2.RESOURCE_EXHAUSTED, f"request is over the receiver's "
                                   f"limit of {limit} bytes; send smaller batches")
                # The first body is always let through, as admission lets the first request in.
                if len(self._reading) > 1 and (
                        self._pending_bytes + len(chunk) > self.limits.max_pending_bytes):
                    raise self._pending_full(signal)
                self._pending_bytes += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        except TimeoutError:
            self.metrics.refused.labels("body_timeout").inc()
            raise _Refusal(408, code_pb2.DEADLINE_EXCEEDED, f"the request body did not arrive within "
                           f"{self.limits.body_timeout_s:g}s") from None
        except asyncio.CancelledError:
            if not self._closing:
                raise
            task.uncancel()
            raise self._retry_later("receiver is shutting down; retry later", "closing") from None
        finally:
            self._reading.discard(task)
            self._pending_bytes -= sum(map(len, chunks))

    # -- helpers -----------------------------------------------------------------------------
    def _internal_error(self, exc: Exception) -> _Refusal:
        """A bug of ours in this module, not the client's: ask for a retry (nothing was stored)
        and log the first occurrence of each kind, as the core does for its own."""
        kind = type(exc).__name__
        if kind not in self._logged_unexpected:
            self._logged_unexpected.add(kind)
            log.error("unexpected error in the OTLP/HTTP front door", exc_info=exc)
        return _Refusal(503, code_pb2.UNAVAILABLE, f"receiver error ({kind}); retry later",
                        retry_after_s=self.limits.retry_after_s)

    def _retry_later(self, message: str, reason: str, signal: Signal | None = None) -> _Refusal:
        self.metrics.refused.labels(reason).inc()
        if signal is not None:
            self._count(signal, "UNAVAILABLE")
        status = 503 if reason == "closing" else 429
        return _Refusal(status, code_pb2.UNAVAILABLE, message, retry_after_s=self.limits.retry_after_s)

    def _pending_full(self, signal: Signal) -> _Refusal:
        return self._retry_later(
            f"receivers.otlp.protocols.http.max_pending_bytes ({self.limits.max_pending_bytes}) are "
            "buffered for requests still arriving; retry later", "pending_bytes", signal)

    def _count(self, signal: Signal, outcome: str) -> None:
        """Refusals made here count in `sluice_requests_total` like the core's own."""
        self.core.telemetry.requests.labels(signal.value, outcome).inc()

    @staticmethod
    def _media_type(headers: Headers) -> str:
        value = _header(headers, b"content-type") or b""
        return value.split(b";", 1)[0].strip().lower().decode("latin-1")

    def _origin_allowed(self, origin: str) -> bool:
        for allowed in self.cors.allowed_origins:
            if allowed in ("*", origin):
                return True
            prefix, star, suffix = allowed.partition("*")
            if star and len(origin) > len(prefix) + len(suffix) and origin.startswith(prefix) \
                    and origin.endswith(suffix) and "/" not in origin[len(prefix):len(origin) - len(suffix)]:
                return True
        return False

    def _cors_headers(self, origin: bytes | None) -> Headers:
        if origin is None or not self.cors.enabled:
            return []
        text = origin.decode("latin-1")
        if not self._origin_allowed(text):
            return []
        if "*" in self.cors.allowed_origins:
            return [(b"access-control-allow-origin", b"*"),
                    (b"access-control-expose-headers", b"retry-after")]
        return [(b"access-control-allow-origin", origin), (b"vary", b"Origin"),
                (b"access-control-expose-headers", b"retry-after")]

    def _preflight(self, headers: Headers) -> tuple[int, bytes, Headers]:
        """Answer a CORS preflight from the config alone (browsers send no token with it)."""
        origin = _header(headers, b"origin")
        if origin is None or not self._origin_allowed(origin.decode("latin-1")):
            raise _Refusal(403, code_pb2.PERMISSION_DENIED, "origin not allowed by "
                           "receivers.otlp.protocols.http.cors.allowed_origins")
        requested = (_header(headers, b"access-control-request-headers") or b"").decode("latin-1")
        names = [n.strip().lower() for n in requested.split(",") if n.strip()]
        allowed = set(self.cors.allowed_headers)
        refused = [n for n in names if n not in _IMPLICIT_CORS_HEADERS and n not in allowed
                   and "*" not in allowed]
        if refused:
            raise _Refusal(403, code_pb2.PERMISSION_DENIED, f"header(s) {', '.join(refused)[:200]} not "
                           "allowed by receivers.otlp.protocols.http.cors.allowed_headers")
        return 204, b"", [
            (b"access-control-allow-methods", b"POST"),
            (b"access-control-allow-headers", ", ".join(names).encode("latin-1")),
            (b"access-control-max-age", str(self.cors.max_age_s).encode()),
        ]


__all__ = ["CONTENT_TYPES", "PATHS", "HttpLimits", "OtlpHttpApp", "inflate"]
