"""HTTP/1.1 hosting for an ASGI app: uvicorn (httptools parser) on an event loop of its own thread.

Why uvicorn, and why this module (measurements in docs/design.md): it is the most used ASGI
server, parses with httptools (llhttp, the Node.js parser), holds thousands of keep-alive
connections on one asyncio loop, takes a socket we bound ourselves (so `port 0`, dual-stack
`[::]` and SO_REUSEPORT for `--workers` stay ours) and TLS from the `ssl` module. Any ASGI app
can be served by it — the OTLP/HTTP front door today, the web viewer tomorrow.

Out of the box it does not guard against slow or idle clients: a connection that sends nothing,
or half a header and then nothing, is kept forever, and headers of any size are accepted. The
protocol subclass below adds what the Collector gets from Go's `http.Server`
(ReadHeaderTimeout, IdleTimeout, MaxHeaderBytes) plus a cap on open connections:

    connection opened / next request begins → its headers must be complete within header_timeout_s
    headers larger than max_header_bytes   → 431, connection closed
    idle keep-alive connection             → closed after idle_timeout_s
    more than max_connections open        → 503 + Retry-After, connection closed

Body timeouts belong to the app (it knows what a request is worth waiting for); see
`receivers.otlp_http`. Every refusal is counted in `sluice_http_refused_total{reason}`; nothing
is logged per connection, so a flood of bad clients cannot flood the log either.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sluice_collector.asgi import ASGIApp

log = logging.getLogger("sluice.receiver")

_CANNED = {
    431: b"request header fields too large",
    503: b"too many connections; retry later",
    408: b"request headers not received in time",
}


def canned_response(status: int, *, retry_after_s: int = 0) -> bytes:
    """A complete close-delimited response for refusals made before any ASGI request exists."""
    reason = {408: "Request Timeout", 431: "Request Header Fields Too Large",
              503: "Service Unavailable"}[status]
    body = _CANNED[status]
    head = [f"HTTP/1.1 {status} {reason}", "content-type: text/plain; charset=utf-8",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after_s:
        head.append(f"retry-after: {retry_after_s}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may cost before it is refused or closed."""

    max_connections: int = 1000
    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: clients must present a certificate it signed


class HttpMetrics:
    """The HTTP port's own counters, on the receiver's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "sluice_http_refused",
            "OTLP/HTTP connections or requests refused or closed by a guard, by reason "
            "(connections, header_timeout, idle, header_too_large, malformed, body_timeout, "
            "pending_bytes, busy, closing).",
            ["reason"], registry=registry,
        )
        self.connections = Gauge(
            "sluice_http_connections", "Open OTLP/HTTP connections.", registry=registry,
        )


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request whose headers are too large."""


def _guarded_protocol(limits: ConnectionLimits, metrics: HttpMetrics) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with header/idle timeouts, a header size cap and a cap on
    open connections (uvicorn accepts a protocol class as `Config(http=...)`)."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _in_headers = True
        _header_bytes = 0  # of the request being parsed: raw bytes while its headers arrive
        _parsed_bytes = 0  # of the request being parsed: its URL and headers as parsed
        _too_large = False
        _seen_bytes = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            metrics.connections.set(len(self.connections))
            if len(self.connections) > limits.max_connections:
                metrics.refused.labels("connections").inc()
                self.transport.write(canned_response(503, retry_after_s=1))
                self.transport.close()
                return
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)
            metrics.connections.set(len(self.connections))

        def data_received(self, data: bytes) -> None:
            self._seen_bytes = True
            if self._in_headers:
                self._header_bytes += len(data)
                if self._header_timer is None:
                    # Bytes between requests (even a bare CRLF, which starts no message) stop
                    # uvicorn's keep-alive timer: from here the header timeout runs instead.
                    self._arm_header_timer()
            super().data_received(data)
            # Headers still incomplete after this chunk: the parser buffers them, so stop here.
            if (self._in_headers and self._header_bytes > limits.max_header_bytes
                    and not self.transport.is_closing()):
                self._refuse_headers()

        def send_400_response(self, msg: str) -> None:
            if self._too_large:  # raised from on_headers_complete, reported by the parser
                self._refuse_headers()
                return
            metrics.refused.labels("malformed").inc()
            super().send_400_response(msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True
            self._parsed_bytes = 0
            if self._header_timer is None:
                self._arm_header_timer()

        def on_url(self, url: bytes) -> None:
            self._parsed_bytes += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._parsed_bytes += len(name) + len(value) + 4
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._header_bytes = 0
            self._cancel_header_timer()
            if self._parsed_bytes > limits.max_header_bytes:
                # Headers that came in one chunk: refuse before the request reaches the app.
                self._too_large = True
                raise _HeadersTooLarge
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_headers = True  # the next bytes on this connection are the next request's

        def _refuse_headers(self) -> None:
            metrics.refused.labels("header_too_large").inc()
            self._cancel_header_timer()
            self.transport.write(canned_response(431))
            self.transport.close()

        def _arm_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(limits.header_timeout_s, self._headers_late)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False  # a pipelined request stalls: finish the one in hand
                return
            if self._seen_bytes and self._header_bytes:
                metrics.refused.labels("header_timeout").inc()
                self.transport.write(canned_response(408))
            else:
                metrics.refused.labels("idle").inc()  # opened and never sent a byte
            self.transport.close()

    return GuardedHttpToolsProtocol


def bind_socket(endpoint: str, *, reuse_port: bool) -> socket.socket:
    """A listening TCP socket on HOST:PORT (`[::]` is dual-stack); raises OSError."""
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class AsgiServer:
    """One ASGI app served on one socket by uvicorn, on a thread of its own.

    `start()` binds (raising OSError when it cannot) and returns the bound port once the server
    accepts connections; `stop(grace_s)` stops accepting at once, lets requests in progress
    finish for up to `grace_s`, then closes every connection. Idempotent, safe before start.
    """

    def __init__(
        self, app: ASGIApp, endpoint: str, *, limits: ConnectionLimits, metrics: HttpMetrics,
        tls: ServerTls | None = None, reuse_port: bool = False, name: str = "sluice-http",
    ) -> None:
        self.app = app
        self.endpoint = endpoint
        self.limits = limits
        self.metrics = metrics
        self.tls = tls
        self.reuse_port = reuse_port
        self.name = name
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def start(self, timeout_s: float = 10.0) -> int:
        sock = bind_socket(self.endpoint, reuse_port=self.reuse_port)
        self.port = int(sock.getsockname()[1])
        tls = self.tls
        config = uvicorn.Config(
            self.app,
            http=_guarded_protocol(self.limits, self.metrics),
            loop="asyncio",
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            proxy_headers=False,  # nothing here reads the client address; skip the middleware
            server_header=False,
            timeout_keep_alive=max(1, round(self.limits.idle_timeout_s)),
            ssl_certfile=str(tls.cert_file) if tls else None,
            ssl_keyfile=str(tls.key_file) if tls else None,
            ssl_ca_certs=str(tls.client_ca_file) if tls and tls.client_ca_file else None,
            ssl_cert_reqs=(ssl.CERT_REQUIRED if tls and tls.client_ca_file else ssl.CERT_NONE),
        )
        try:
            config.load()  # here, not on the server thread: a bad certificate fails start()
        except BaseException:
            sock.close()
            raise
        # One bad client is a counter, not a warning line (see `_guarded_protocol`).
        logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
        server = uvicorn.Server(config)
        self._server = server

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # surfaced by start(); uvicorn may sys.exit on failure
                self._failure = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        deadline = timeout_s
        while not server.started:
            if not self._thread.is_alive() or deadline <= 0:
                self.stop(0)
                raise OSError(f"HTTP server on {self.endpoint} did not start: {self._failure!r}")
            self._thread.join(0.01)
            deadline -= 0.01
        return self.port

    def begin_stop(self, grace_s: float) -> None:
        """Stop accepting connections now; requests in progress get `grace_s` to finish."""
        if self._server is not None:
            self._server.config.timeout_graceful_shutdown = max(1, round(grace_s))
            self._server.should_exit = True

    def stop(self, grace_s: float) -> bool:
        """Stop accepting, wait for requests in progress; True when all finished in time."""
        self.begin_stop(grace_s)
        if self._thread is None:
            return True
        self._thread.join(grace_s + 2)
        return not self._thread.is_alive()
