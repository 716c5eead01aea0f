"""The OTLP/gRPC front door: logs/traces/metrics `Export` and the standard health service.

Thin on purpose: a handler turns its call into one `IngestCore.export` and the core's typed
errors into OTLP/gRPC statuses. Handlers receive raw bytes (no grpcio deserializer) so that
malformed input is answered with `INVALID_ARGUMENT` rather than grpcio's `INTERNAL`:

    Unauthenticated  → UNAUTHENTICATED
    DecodeError      → INVALID_ARGUMENT    (not retryable: the data is bad)
    RequestTooLarge  → RESOURCE_EXHAUSTED  (without retry info: retrying the same bytes won't help)
    Retryable        → UNAVAILABLE + google.rpc.RetryInfo (overload, sink failure, our bug)

Why `grpc.aio`. grpcio's synchronous server takes a pool thread for every call as soon as its
headers arrive and keeps it while it waits for the request message, so 100 streams that open
and never send (no credentials needed) held every thread, and a legitimate Export and the
health check timed out. Here one event-loop thread serves every connection and a call waiting
for its message holds no thread at all. In order, a call:

1. is checked for credentials from its metadata, before its message is read — an
   unauthenticated client gets UNAUTHENTICATED at once and costs nothing more;
2. takes one of `max_pending_streams` places for calls whose message has not arrived (more →
   UNAVAILABLE + RetryInfo), on top of the per-connection HTTP/2 stream limit
   (`max_concurrent_streams`): one client cannot occupy all of them;
3. reads its one message (Export is served as client-streaming so that the read is ours: a
   unary client sends the same bytes); not in after `receive_timeout` → DEADLINE_EXCEEDED.
   grpc-core buffers a message only once it is asked for it — until then HTTP/2 flow control
   holds the sender to one 64 KiB window — so with `max_receiving` set, a call first waits
   (holding nothing but its pending place) for one of that many read slots, at most
   `max_receiving_per_connection` per connection, and the transport holds at most
   `max_receiving` messages. Off by default: a slot is held by whoever has it, also by a client
   that never sends, so it suits a port behind `auth` (unauthenticated calls never get one);
4. takes its admission place in the ingest core on the loop (over the bound → UNAVAILABLE at
   once, and the message is dropped then and there), and only then runs the blocking ingest on
   a pool of `max(threads, queue.max_requests)` threads — so an admitted request never waits
   for a thread, and a refused one never holds one.

The health service and the query API keep their own capacity: health answers on the loop, the
query API runs on its own bounded pool with its own limits (`query/service.py`).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from grpc_health.v1 import _async as health_aio  # the package's asyncio servicer (`health.aio`)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Gauge

from sluice_collector import memory
from sluice_collector.batch import Signal
from sluice_collector.errors import DecodeError, RequestTooLarge, Retryable, Unauthenticated
from sluice_collector.ingest import Encoding, IngestCore
from sluice_collector.loop import EventLoopThread, run_blocking
from sluice_collector.receivers.config import GrpcConfig

SERVICES: dict[Signal, str] = {
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
}


class AioService(Protocol):
    """Another gRPC service served beside OTLP (the query API): async handlers."""

    def generic_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The service's handlers, for `grpc.aio.Server.add_generic_rpc_handlers`."""


def _retry_trailer(delay_s: float) -> tuple[tuple[str, bytes], ...]:
    seconds = int(delay_s)
    info = RetryInfo(retry_delay=Duration(seconds=seconds, nanos=int((delay_s - seconds) * 1e9)))
    return (("google.rpc.retryinfo-bin", info.SerializeToString()),)


def _authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | bytes | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value
    return None


class ReadSlots:
    """`total` slots for reading a message, at most `per_key` per connection; waiters are
    served first come, first served among those whose connection is under its share. Used on
    the event loop only (no locks)."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self.taken = 0
        self._held: dict[str, int] = {}
        self._waiters: deque[tuple[str, asyncio.Future[None]]] = deque()

    def _free_for(self, key: str) -> bool:
        return self.taken < self.total and self._held.get(key, 0) < self.per_key

    def _take(self, key: str) -> None:
        self.taken += 1
        self._held[key] = self._held.get(key, 0) + 1

    async def acquire(self, key: str) -> None:
        if self._free_for(key) and not self._waiters:
            self._take(key)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((key, waiter))
        self._wake()
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # granted in the same instant it was given up
            else:
                self._waiters.remove((key, waiter))
            raise

    def release(self, key: str) -> None:
        self.taken -= 1
        left = self._held[key] - 1
        if left:
            self._held[key] = left
        else:
            del self._held[key]
        self._wake()

    def _wake(self) -> None:
        for entry in list(self._waiters):
            if self.taken >= self.total:
                return
            key, waiter = entry
            if self._free_for(key):
                self._waiters.remove(entry)
                self._take(key)
                waiter.set_result(None)


def listen_problem(endpoint: str, *, reuse_port: bool = False) -> str:
    """Why `endpoint` cannot be listened on ("" when it can), found by binding it ourselves.

    grpc core reports a failed bind by printing its own `add_port.cc` error line to stderr
    before `add_insecure_port` returns, so the receiver checks first and says it once, in its
    own words. The probe binds as grpc does (SO_REUSEADDR, so a port whose old connections
    are in TIME_WAIT is free; SO_REUSEPORT only for `--workers`) and, as grpc, is content
    when any of the addresses a host name resolves to binds. Port 0 always binds.
    """
    host, _, port_text = endpoint.rpartition(":")
    port = int(port_text)
    if port == 0:
        return ""
    host = host.strip("[]")
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    first_error: OSError | None = None
    for family, kind, proto, _name, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port and hasattr(socket, "SO_REUSEPORT"):
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                probe.bind(address)
            return ""
        except OSError as exc:
            first_error = first_error or exc
    if first_error is None:
        return f"{host!r} resolves to no address"
    return (first_error.strerror or str(first_error)).lower()


class OtlpGrpcReceiver:
    """The OTLP/gRPC server: started, served and stopped on its own event-loop thread."""

    def __init__(self, config: GrpcConfig, core: IngestCore, *, max_request_bytes: int,
                 reuse_port: bool = False, services: Sequence[AioService] = ()) -> None:
        self.config = config
        self.core = core
        self._max_request_bytes = max_request_bytes
        self._reuse_port = reuse_port
        self._services = list(services)
        self._loop = EventLoopThread("sluice-grpc")
        # Only admitted requests reach the pool, and at most queue.max_requests are admitted:
        # with at least that many threads, none ever waits for one.
        self._executor = ThreadPoolExecutor(
            max_workers=max(config.threads, core.config.queue.max_requests),
            thread_name_prefix="sluice-ingest",
        )
        self._pending = 0  # Export calls waiting for their message (touched on the loop only)
        self._reading: set[asyncio.Future[object]] = set()  # their reads, ended by stop
        self._closing = False
        self._reads = ReadSlots(config.max_receiving, config.max_receiving_per_connection) \
            if config.max_receiving else None
        self._pending_gauge = Gauge(
            "sluice_grpc_pending_streams",
            "OTLP/gRPC Export calls whose request message has not fully arrived.",
            registry=core.telemetry.registry,
        )
        self._server: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None
        self.port = 0

    # -- lifecycle (called from the receiver's thread) ---------------------------------------
    def start(self) -> int:
        """Bind and start serving; returns the bound port, 0 when the address is unusable."""
        self._loop.start()
        try:
            self.port = self._loop.call(self._start())
        except BaseException:
            self.stop(0)
            raise
        return self.port

    def set_serving(self, serving: bool) -> None:
        if self._health is not None:
            self._loop.call(self._set_serving(serving), timeout_s=5)

    def stop(self, grace_s: float) -> None:
        """Stop accepting calls, give running ones `grace_s`, then stop the loop. A call still
        waiting for its message is answered UNAVAILABLE at once: nothing of it was taken, and
        an idle client must not hold up a SIGTERM for the whole grace."""
        if self._server is not None:
            self._loop.call(self._stop(grace_s), timeout_s=grace_s + 5)
            self._server = None
        self._executor.shutdown(wait=True)
        self._loop.stop()

    async def _start(self) -> int:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self._max_request_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 1 if self._reuse_port else 0),
            ("grpc.max_concurrent_streams", self.config.max_concurrent_streams),
            # No bandwidth-delay probing: a stream whose message is not being read stays at the
            # initial 64 KiB window instead of one grown to megabytes, so calls waiting for a
            # read slot (or for nothing) make the transport buffer next to nothing.
            ("grpc.http2.bdp_probe", 0),
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler(
                service, {"Export": grpc.stream_unary_rpc_method_handler(self._handler(signal))},
            )
            for signal, service in SERVICES.items()
        ])
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for service in self._services:
            server.add_generic_rpc_handlers([service.generic_handler()])
        tls = self.config.tls
        try:
            if tls is not None:
                credentials = grpc.ssl_server_credentials(
                    [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
                    root_certificates=tls.client_ca_file.read_bytes() if tls.client_ca_file else None,
                    require_client_auth=tls.client_ca_file is not None,
                )
                port = server.add_secure_port(self.config.endpoint, credentials)
            else:
                port = server.add_insecure_port(self.config.endpoint)
        except RuntimeError:  # grpcio raises a bare RuntimeError("Failed to bind ...")
            port = 0
        if port:
            await server.start()
            self._server = server
            await self._set_serving(True)
        return port

    async def _stop(self, grace_s: float) -> None:
        assert self._server is not None
        self._closing = True
        for read in list(self._reading):
            read.cancel()
        await self._server.stop(grace_s)

    async def _set_serving(self, serving: bool) -> None:
        assert self._health is not None
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ["", *SERVICES.values()]:
            await self._health.set(name, status)

    # -- the Export call -------------------------------------------------------------------
    def _handler(self, signal: Signal) -> Any:
        async def export(_requests: AsyncIterator[bytes],
                         context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return await self._export(signal, context)
        return export

    async def _export(self, signal: Signal,
                      context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        core = self.core
        try:
            caller = core.authenticate(signal, _authorization(context))
        except Unauthenticated as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        data = await self._receive(signal, context)
        try:
            slot = core.reserve(signal, len(data))
        except Retryable as exc:
            del data  # refused: not a byte of it is kept while the answer goes out
            await self._abort_retryable(context, exc)
        status: grpc.StatusCode | None = None
        message = ""
        try:
            result = await run_blocking(self._executor, core.export, signal, data,
                                        Encoding.PROTOBUF, caller, slot)
        except DecodeError as exc:
            status, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except RequestTooLarge as exc:
            status, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
        except Retryable as exc:
            await self._abort_retryable(context, exc)
        if status is not None:
            await context.abort(status, message)
        if not result.rejected:
            return b""  # an Export*ServiceResponse with no partial_success encodes to no bytes
        data_out: bytes = result.response(signal).SerializeToString()
        return data_out

    async def _receive(self, signal: Signal,
                       context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """The call's one request message, within the pending-stream bound and the timeout.

        Read with `context.read()`, not from the request iterator: an iterator left after its
        first message is never finalised, and grpc.aio then keeps every message it returned
        (measured: +10 MiB for every 10 MiB request, for good: tracemalloc showed 1 MiB blocks
        allocated on the loop thread, 100 MiB after ten requests, none with `context.read()`)."""
        if self._closing or self._pending >= self.config.max_pending_streams:
            self.core.count(signal, "UNAVAILABLE")
            await self._abort_retryable(context, Retryable(
                f"too many requests waiting for their message ({self._pending}); retry later",
                self.core.config.queue.retry_after_s))
        self._pending += 1
        self._pending_gauge.set(self._pending)
        status: grpc.StatusCode | None = None
        read = asyncio.ensure_future(self._read(context))
        self._reading.add(read)
        try:
            message = await asyncio.wait_for(read, self.config.receive_timeout_s)
            if isinstance(message, bytes):
                return message
            # grpc.aio.EOF. The transport drops a message over max_request_bytes (after gunzip)
            # and answers RESOURCE_EXHAUSTED itself; a handler cannot tell that from a call that
            # ended without a message (no OTLP exporter does that), so both are counted and
            # answered as the common case.
            status = grpc.StatusCode.RESOURCE_EXHAUSTED
            memory.trim_soon()  # the transport's buffers of a too-big message were just freed
        except TimeoutError:
            status = grpc.StatusCode.DEADLINE_EXCEEDED
        except asyncio.CancelledError:
            if not self._closing:
                raise  # the client went away
            status = grpc.StatusCode.UNAVAILABLE  # stopping: nothing of it is here yet
        finally:
            self._reading.discard(read)
            self._pending -= 1
            self._pending_gauge.set(self._pending)
        self.core.count(signal, status.name)
        if status is grpc.StatusCode.UNAVAILABLE:
            await self._abort_retryable(context, Retryable(
                "the receiver is stopping; retry later", self.core.config.queue.retry_after_s))
        if status is grpc.StatusCode.DEADLINE_EXCEEDED:
            await context.abort(status, f"the request message did not arrive within "
                                        f"{self.config.receive_timeout_s:g} s (receive_timeout)")
        await context.abort(status, "no request message arrived (one over max_request_bytes is "
                                    "refused by the transport)")
        raise AssertionError("unreachable: abort raises")

    async def _read(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> object:
        if self._reads is None:
            return await context.read()
        connection = context.peer()  # "ipv4:10.0.0.7:51234": one TCP connection
        await self._reads.acquire(connection)
        try:
            return await context.read()
        finally:
            self._reads.release(connection)

    @staticmethod
    async def _abort_retryable(context: grpc.aio.ServicerContext[bytes, bytes],
                               exc: Retryable) -> None:
        context.set_trailing_metadata(_retry_trailer(exc.retry_after_s))
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
