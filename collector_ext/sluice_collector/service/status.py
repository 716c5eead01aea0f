"""The receiver's telemetry port: Prometheus text at /metrics, JSON health at /healthz and, when
the query API is on, the viewer (/ui/ and its JSON API /api/v1/, see `query/web.py`).

One plain ASGI app (`StatusApp`), so any ASGI server can serve it; the receiver runs it with
uvicorn on a thread of its own (`StatusServer`), so a scrape never waits for ingest and ingest
never waits for a scrape. /metrics and /healthz do their (short, blocking) work on worker
threads, and the viewer reads the index on its own bounded pool, so neither a slow query nor
a stuck health probe stalls the event loop that answers everyone else.

Idle, slow or unauthenticated clients cannot starve the port (uvicorn alone has no header
timeout, hence `_GuardedH11Protocol`):

- a connection that has not sent a whole request head within `HEADER_TIMEOUT_S` of opening
  (or of its previous response) is closed — slowloris-style partial headers included;
- idle keep-alive connections are closed after `KEEP_ALIVE_S`;
- beyond `MAX_CONNECTIONS` open connections a new one is closed at once, and beyond
  `MAX_CONCURRENCY` requests in flight uvicorn answers 503;
- request heads are capped at `MAX_HEAD_BYTES`; viewer streams (live tail) count against
  `query.max_streams` and end when a client stops reading (`query/web.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice_collector.asgi import ASGIApp, Receive, Scope, Send, respond
from sluice_collector.telemetry import ReceiverTelemetry

log = logging.getLogger("sluice.receiver")

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5.0
MAX_CONNECTIONS = 256
MAX_CONCURRENCY = 128
MAX_HEAD_BYTES = 16 * 1024
GRACEFUL_STOP_S = 2.0


class StatusApp:
    """/metrics, /healthz (and /health), and the viewer under /ui/ and /api/ when given one."""

    def __init__(self, telemetry: ReceiverTelemetry,
                 health: Callable[[], tuple[bool, dict[str, Any]]],
                 viewer: ASGIApp | None = None) -> None:
        self._telemetry = telemetry
        self._health = health
        self._viewer = viewer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if self._viewer is not None and (path in {"/", "/ui"} or path.startswith(("/ui/", "/api/"))):
            await self._viewer(scope, receive, send)
        elif scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, "text/plain; charset=utf-8", b"GET only\n",
                          [(b"allow", b"GET, HEAD")])
        elif path == "/metrics":
            body = await asyncio.to_thread(generate_latest, self._telemetry.registry)
            await respond(send, 200, CONTENT_TYPE_LATEST, body)
        elif path in ("/healthz", "/health"):
            healthy, details = await asyncio.to_thread(self._health)
            body = json.dumps(details, indent=2, sort_keys=True, default=str).encode()
            await respond(send, 200 if healthy else 503, "application/json", body + b"\n")
        elif self._viewer is None and (path in {"/", "/ui"} or path.startswith(("/ui/", "/api/"))):
            await respond(send, 404, "text/plain; charset=utf-8", VIEWER_OFF)
        else:
            hint = b"try /metrics or /healthz" + (b" or /ui/" if self._viewer else b"") + b"\n"
            await respond(send, 404, "text/plain; charset=utf-8", hint)


VIEWER_OFF = (b"The viewer is off: it comes with the query API. Give the receiver a key in its "
              b"config -\n\n  query:\n    api_keys:\n      me: {key: \"<32 random characters>\", "
              b"role: admin}\n\nand restart it (docs/viewer.md). /metrics and /healthz are here.\n")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _guarded_protocol() -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a request-head timeout and a hard connection cap."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > MAX_CONNECTIONS:
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                self._disarm()  # a whole request head arrived: the app has it now

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request's head gets the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                self.transport.close()

    return _GuardedH11Protocol


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on `listen` (``host:port``, ``[v6]:port``; port 0 = any free)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(512)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class StatusServer:
    """Serves `StatusApp` with uvicorn on its own thread and event loop.

    Binds in the constructor, so a port in use fails the receiver's start (OSError) and `port`
    is the real port when `listen` asked for port 0.
    """

    def __init__(
        self, listen: str, telemetry: ReceiverTelemetry,
        health: Callable[[], tuple[bool, dict[str, Any]]], *, viewer: ASGIApp | None = None,
    ) -> None:
        import uvicorn

        self.app = StatusApp(telemetry, health, viewer)
        self._socket = bind(listen)
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.app, http=_guarded_protocol(), ws="none", lifespan="off", loop="asyncio",
            log_config=None, log_level="warning", access_log=False, server_header=False,
            timeout_keep_alive=int(KEEP_ALIVE_S), limit_concurrency=MAX_CONCURRENCY,
            timeout_graceful_shutdown=int(GRACEFUL_STOP_S),
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="sluice-status", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except Exception:  # the port must never take the receiver down with it
            log.exception("telemetry port stopped unexpectedly")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(GRACEFUL_STOP_S + 5)
        self._socket.close()
