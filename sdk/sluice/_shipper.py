"""Batch, encode and send bridged log records on a background thread.

The app thread only appends a tuple to a deque (atomic under the GIL, no lock); everything costly —
encoding to OTLP wire bytes, grouping by logger (instrumentation scope), the network — happens here,
once per batch. Audit and security records are never dropped: when the queue is full or the
receiver does not answer they go to the on-disk `SpillQueue` and are replayed later. A shipper made
with `spill_all=True` (`sluice run`'s, whose records are a program's output that exists nowhere
else once the process has gone) spills every record the receiver did not take, within the same
bound; queue overflow still drops ordinary records, so a flood costs counted drops, not disk.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlparse

from sluice import _health, _wire
from sluice._spill import SpillQueue
from sluice._wire import SMALL as _SMALL
from sluice._wire import pack_i as _pack_i
from sluice._wire import pack_q as _pack_q

__all__ = [
    "PRIORITY_CATEGORIES",
    "GrpcTransport",
    "HttpTransport",
    "InMemoryTransport",
    "Item",
    "LogShipper",
    "Transport",
    "TransportError",
]

# (record.created (seconds), levelno, levelname, logger name, body, pathname, funcName, lineno,
#  trace_id, span_id, trace_flags, attributes or None, event_name or None)
Item = tuple[float, int, str, str, Any, str, str, int, int, int, int, "dict[str, Any] | None", "str | None"]

PRIORITY_CATEGORIES = frozenset({"audit", "security"})
_LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
_CACHE_LIMIT = 4096


_CHECK_ENDPOINT = ("is a receiver listening there? Check `endpoint` (SLUICE_ENDPOINT / "
                   "OTEL_EXPORTER_OTLP_ENDPOINT) and `protocol` (gRPC on 4317, HTTP on 4318)")
_CHECK_TLS = "check `insecure` and the certificate: plain http:// endpoints need a receiver without TLS"
_CHECK_HEADERS = "check `headers` (SLUICE_HEADERS / OTEL_EXPORTER_OTLP_HEADERS), e.g. the bearer token"
_CHECK_PROTOCOL = ("the endpoint answers but is not an OTLP logs receiver for this protocol; check "
                   "`protocol` (grpc or http/protobuf) and the port")
_CHECK_LOAD = "the receiver is overloaded or slow; records are retried, then dropped and counted"


class TransportError(Exception):
    """One failed delivery, said in one line: where to, what failed, and what to check.

    `retryable` says whether trying again could help. The message is what the SDK logs (once),
    so it carries no traceback: a receiver that is down is an operational fact, not a bug.
    """

    def __init__(self, message: str, *, retryable: bool, endpoint: str = "", hint: str = "") -> None:
        text = " ".join(message.split())  # one line, whatever the transport's details contained
        super().__init__(f"{text}; {hint}" if hint else text)
        self.retryable = retryable
        self.endpoint = endpoint
        self.hint = hint


class Transport(Protocol):
    """Deliver one encoded `ExportLogsServiceRequest`; the only I/O the shipper does."""

    endpoint: str

    def send(self, payload: bytes, timeout_s: float) -> None: ...

    def close(self) -> None: ...

    def reset_after_fork(self) -> None: ...


class GrpcTransport:
    """OTLP/gRPC with bytes in, bytes out: no message objects, the payload is already encoded."""

    def __init__(self, endpoint: str, *, insecure: bool, headers: Mapping[str, str]) -> None:
        parsed = urlparse(endpoint)
        self.endpoint = endpoint
        self._target = f"{parsed.hostname}:{parsed.port or 4317}"
        self._insecure = insecure
        self._metadata = tuple((k.lower(), v) for k, v in headers.items())
        self._channel: Any = None
        self._call: Any = None
        self._lock = threading.Lock()

    def _callable(self) -> Any:
        with self._lock:
            if self._call is None:
                import grpc

                # gRPC's reconnect backoff grows to 2 minutes by default; after a receiver restart we
                # want audit spills replayed within seconds, not minutes.
                options = [("grpc.initial_reconnect_backoff_ms", 250),
                           ("grpc.max_reconnect_backoff_ms", 5000)]
                if self._insecure:
                    self._channel = grpc.insecure_channel(self._target, options=options)
                else:
                    self._channel = grpc.secure_channel(
                        self._target, grpc.ssl_channel_credentials(), options=options)
                self._call = self._channel.unary_unary(_LOGS_METHOD)
            return self._call

    def send(self, payload: bytes, timeout_s: float) -> None:
        import grpc

        try:
            self._callable()(payload, timeout=timeout_s, metadata=self._metadata or None)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else None
            retryable = code in (
                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS,
            )
            name = code.name if code is not None else "error"
            what = f"{name} ({details})" if details else name
            raise TransportError(f"cannot deliver logs to {self.endpoint} over gRPC: {what}",
                                 retryable=retryable, endpoint=self.endpoint,
                                 hint=_grpc_hint(code, details or "")) from exc

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = self._call = None

    def reset_after_fork(self) -> None:
        # The parent's channel belongs to the parent's gRPC threads; the child must not touch it.
        self._channel = self._call = None
        self._lock = threading.Lock()


def _grpc_hint(code: Any, details: str) -> str:
    name = getattr(code, "name", "")
    if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return _CHECK_HEADERS
    if name == "UNIMPLEMENTED":
        return _CHECK_PROTOCOL
    if name in ("RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"):
        return _CHECK_LOAD
    if "ssl" in details.lower() or "handshake" in details.lower() or "tls" in details.lower():
        return _CHECK_TLS
    return _CHECK_ENDPOINT


class HttpTransport:
    """OTLP/HTTP with protobuf bodies, on the standard library so it adds no dependency."""

    def __init__(self, endpoint: str, *, headers: Mapping[str, str]) -> None:
        base = endpoint.rstrip("/")
        self._url = base if base.endswith("/v1/logs") else f"{base}/v1/logs"
        self.endpoint = self._url
        self._headers = {"Content-Type": "application/x-protobuf", **headers}

    def send(self, payload: bytes, timeout_s: float) -> None:
        # The URL is built from the validated http(s) endpoint, never from untrusted input.
        request = urllib.request.Request(self._url, data=payload, headers=self._headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            hint = (_CHECK_HEADERS if exc.code in (401, 403)
                    else _CHECK_PROTOCOL if exc.code in (404, 405, 415)
                    else _CHECK_LOAD if exc.code in (413, 429, 503) else _CHECK_ENDPOINT)
            raise TransportError(f"cannot deliver logs to {self._url}: HTTP {exc.code} {exc.reason}",
                                 retryable=exc.code in (429, 502, 503, 504), endpoint=self._url,
                                 hint=hint) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            tls = "ssl" in type(reason).__module__ or "CERTIFICATE" in str(reason).upper()
            raise TransportError(f"cannot deliver logs to {self._url}: {reason}", retryable=True,
                                 endpoint=self._url, hint=_CHECK_TLS if tls else _CHECK_ENDPOINT) from exc

    def close(self) -> None:
        return None

    def reset_after_fork(self) -> None:
        return None


class InMemoryTransport:
    """The in-memory twin: keeps every payload; `fail` makes it behave like a dead receiver."""

    endpoint = "memory"

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.fail = False

    def send(self, payload: bytes, timeout_s: float) -> None:
        if self.fail:
            raise TransportError("in-memory transport set to fail", retryable=True)
        self.payloads.append(payload)

    def close(self) -> None:
        return None

    def reset_after_fork(self) -> None:
        self.payloads = []


def severity_number(levelno: int) -> int:
    """Map a stdlib level onto the OTel severity ranges (DEBUG=5, INFO=9, WARN=13, ERROR=17, FATAL=21)."""
    if levelno <= 0:
        return 0
    if levelno < 10:
        return 1
    band = min(levelno // 10, 5)
    return 1 + band * 4 + min(levelno - band * 10, 3)


_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}


class LogShipper:
    """The batch log processor of the bridge: queue, background worker, encoder, transport, spill."""

    def __init__(
        self,
        transport: Transport,
        resource_attributes: Mapping[str, Any],
        *,
        spill: SpillQueue | None = None,
        max_queue_size: int = 8192,
        max_batch_size: int = 512,
        schedule_delay_s: float = 1.0,
        export_timeout_s: float = 10.0,
        scope_version: str | None = None,
        scrub: Callable[[list[Item]], list[Item]] | None = None,
        spill_all: bool = False,
    ) -> None:
        self.transport = transport
        self._spill_all = spill_all
        self._scrub = scrub
        self.spill = spill
        self._resource_attributes = dict(resource_attributes)
        self._resource = _wire.resource(self._resource_attributes)
        self._max_queue = max_queue_size
        self._max_batch = max_batch_size
        self._delay_s = schedule_delay_s
        self._timeout_s = export_timeout_s
        self._scope_version = scope_version
        self._heads: dict[tuple[str, int, str, int], bytes] = {}
        self._attr_cache: dict[tuple[str, str], bytes] = {}
        self.dropped = 0
        self.exported = 0
        self._inflight: list[Item] = []
        self._start()
        weak = weakref.WeakMethod(self._after_fork_in_child)

        def after_in_child() -> None:
            method = weak()
            if method is not None:
                method()

        os.register_at_fork(after_in_child=after_in_child)

    def _start(self) -> None:
        self._queue: collections.deque[Item] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._export_lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="sluice-log-shipper", daemon=True)
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        """A forked child owns nothing of the parent's: fresh queue, locks, thread and connection."""
        self.transport.reset_after_fork()
        self.dropped = self.exported = 0
        if "process.pid" in self._resource_attributes:
            self._resource_attributes["process.pid"] = os.getpid()
            self._resource = _wire.resource(self._resource_attributes)
        if not self._stopped:
            self._start()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def thread_ident(self) -> int | None:
        return self._thread.ident

    def submit(self, item: Item) -> None:
        """Called on the app thread: O(1), never blocks, never raises."""
        queue = self._queue
        if len(queue) >= self._max_queue:
            attrs = item[11]
            if attrs is None or attrs.get("log.category") not in PRIORITY_CATEGORIES:
                self.dropped += 1
                _health.increment("logs.dropped")
                return
            if len(queue) >= 2 * self._max_queue:
                self._spill([item])
                return
        queue.append(item)
        if len(queue) >= self._max_batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._delay_s)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self._export_pending(time.monotonic() + self._timeout_s)
            except Exception as exc:  # the worker must survive anything
                _health.report_once("log_export", "log export failed unexpectedly", exc)

    # -- encoding -------------------------------------------------------------------------------

    def _head(self, levelno: int, levelname: str, path: str, func: str, line: int) -> bytes:
        key = (path, line, func, levelno)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= _CACHE_LIMIT:
                self._heads.clear()
            head = _wire.severity(severity_number(levelno), _SEVERITY_TEXT.get(levelname, levelname))
            if path:  # a record with no source location (a captured line) gets no code.* attributes
                head += (
                    _wire.attribute("code.file.path", path)
                    + _wire.attribute("code.function.name", func)
                    + _wire.attribute("code.line.number", line)
                )
            self._heads[key] = head
        return head

    def _attributes(self, attrs: dict[str, Any] | None) -> bytes:
        if not attrs:
            return b""
        cache = self._attr_cache
        parts = []
        for key, value in attrs.items():
            if type(value) is str and len(value) < 128:
                encoded = cache.get((key, value))
                if encoded is None:
                    if len(cache) >= _CACHE_LIMIT:
                        cache.clear()
                    encoded = cache[(key, value)] = _wire.attribute(key, value)
                parts.append(encoded)
            else:
                parts.append(_wire.attribute(key, value))
        return b"".join(parts)

    def encode(self, item: Item) -> bytes:
        """One `LogRecord` as wire bytes; written flat because it runs once per log line."""
        created, levelno, levelname, _name, body, path, func, line, tid, sid, flags, attrs, event_name = item
        head = self._heads.get((path, line, func, levelno))
        if head is None:
            head = self._head(levelno, levelname, path, func, line)
        if type(body) is str:
            raw = body.encode("utf-8", "replace")
            n = len(raw)
            value = b"\x0a" + (_SMALL[n] if n < 128 else _wire.varint(n)) + raw
        else:
            value = _wire.any_value(body)
        n = len(value)
        ts = _pack_q(int(created * 1e9))
        out = b"\x09" + ts + head + b"\x2a" + (_SMALL[n] if n < 128 else _wire.varint(n)) + value
        if attrs:
            out += self._attributes(attrs)
        if tid:
            out += b"\x4a\x10" + tid.to_bytes(16, "big") + b"\x52\x08" + sid.to_bytes(8, "big")
            if flags:
                out += b"\x45" + _pack_i(flags & 0xFFFFFFFF)
        out += b"\x59" + ts
        if event_name:
            out += _wire.attribute_tagged(b"\x62", event_name)
        return out

    def _entries(self, items: list[Item]) -> list[tuple[str, bytes]]:
        """(scope, encoded record) of each item, scrubbed first when `scrub` is set — also on
        the way to the spill, so no unmasked secret is written to local disk either."""
        if self._scrub is not None:
            try:
                items = self._scrub(items)
            except Exception as exc:  # a scrub failure must not ship the batch unmasked
                _health.report_once("log_scrub", "client-side scrub failed; batch dropped", exc)
                self.dropped += len(items)
                return []
        return [(i[3], self.encode(i)) for i in items]

    def _request(self, entries: list[tuple[str, bytes]], resource: bytes | None = None) -> bytes:
        by_scope: dict[str, list[bytes]] = {}
        for scope, record in entries:
            by_scope.setdefault(scope, []).append(record)
        scopes = [_wire.scope_logs(name, records, self._scope_version) for name, records in by_scope.items()]
        return _wire.export_request(self._resource if resource is None else resource, scopes)

    # -- sending --------------------------------------------------------------------------------

    def _send(self, payload: bytes, deadline: float) -> bool:
        backoff_s = 0.25
        failed = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and failed:
                _health.increment("errors.log_export_timeout")  # the failure itself was reported
                return False
            if remaining <= 0:
                _health.report_once(
                    "log_export_timeout",
                    f"log export to {getattr(self.transport, 'endpoint', '?')} did not finish within "
                    f"export_timeout_s={self._timeout_s:g}; ordinary records dropped and counted, "
                    "audit/security spilled to disk")
                return False
            try:
                self.transport.send(payload, min(remaining, self._timeout_s))
                return True
            except TransportError as exc:
                # One line, no traceback: an unreachable receiver is an operational fact, not a bug.
                _health.report_once("log_export", str(exc))
                failed = True
                if not exc.retryable or self._stopping.is_set():
                    return False
            except Exception as exc:
                _health.report_once("log_export", f"log transport raised {exc!r}", exc)
                return False
            if self._stopping.wait(min(backoff_s, max(0.0, deadline - time.monotonic()))):
                return False
            backoff_s *= 2

    def _spill(self, items: list[Item]) -> None:
        if self._spill_all:
            priority = items
        else:
            priority = [i for i in items if i[11] and i[11].get("log.category") in PRIORITY_CATEGORIES]
        lost = len(items) - len(priority)
        if lost:
            self.dropped += lost
            _health.increment("logs.dropped", lost)
        entries = self._entries(priority)
        if entries and (self.spill is None or not self.spill.put(entries, self._resource)):
            self.dropped += len(priority)
            _health.increment("logs.dropped", len(priority))

    def _export_pending(self, deadline: float) -> bool:
        """Send everything queued (then replay spills) until done or `deadline`; True when all went out."""
        if not self._export_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            ok = True
            queue = self._queue
            while queue:
                # A deep queue means the receiver's round trip is the bottleneck: send bigger
                # requests (up to 8 batches) instead of falling further behind.
                limit = min(max(self._max_batch, len(queue)), 8 * self._max_batch)
                batch: list[Item] = []
                self._inflight = batch
                while queue and len(batch) < limit:
                    batch.append(queue.popleft())
                try:
                    payload = self._request(self._entries(batch))
                except Exception as exc:
                    _health.report_once("log_encode", "could not encode a log batch", exc)
                    self.dropped += len(batch)
                    continue
                sent = self._send(payload, deadline)
                self._inflight = []
                if sent:
                    self.exported += len(batch)
                    _health.increment("logs.exported", len(batch))
                else:
                    ok = False
                    self._spill(batch)
                    if time.monotonic() >= deadline:
                        break
            if ok and self.spill is not None:
                ok = self._replay_spill(deadline)
            return ok and not queue
        finally:
            self._export_lock.release()

    def _replay_spill(self, deadline: float) -> bool:
        assert self.spill is not None
        while time.monotonic() < deadline:
            claimed = self.spill.claim()
            if claimed is None:
                return True
            if not claimed.entries or self._send(self._request(claimed.entries, claimed.resource), deadline):
                self.spill.done(claimed.path)
                _health.increment("spill.replayed", len(claimed.entries))
            else:
                self.spill.release(claimed.path)
                return False
        return False

    # -- lifecycle ------------------------------------------------------------------------------

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Send what is queued now, on the caller's thread, within `timeout_s`."""
        try:
            return self._export_pending(time.monotonic() + timeout_s)
        except Exception as exc:
            _health.report_once("log_flush", "log flush failed", exc)
            return False

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Flush within `timeout_s`, then stop the worker and close the connection; idempotent."""
        if self._stopped:
            return True
        ok = self.force_flush(timeout_s)
        self._stopped = True
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=max(0.1, timeout_s))
        leftover = list(self._queue)
        self._queue.clear()
        if self._thread.is_alive():
            # Still sending when time ran out: the process may end before that batch is
            # acknowledged, so keep it (delivered at least once rather than maybe never).
            leftover = list(self._inflight) + leftover
        if leftover:
            self._spill(leftover)
        try:
            self.transport.close()
        except Exception as exc:
            _health.report_once("log_close", "closing the log transport failed", exc)
        return ok
