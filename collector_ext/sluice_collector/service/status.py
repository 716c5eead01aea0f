"""The receiver's small HTTP port: Prometheus text at /metrics, JSON health at /healthz.

Runs on its own thread so a scrape never waits for ingest and ingest never waits for a scrape.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice_collector.telemetry import ReceiverTelemetry

log = logging.getLogger("sluice.receiver")


class StatusServer:
    """Serves /metrics and /healthz; `health` returns (healthy, JSON-able details)."""

    def __init__(
        self, listen: str, telemetry: ReceiverTelemetry,
        health: Callable[[], tuple[bool, dict[str, Any]]],
    ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        telemetry_ref, health_ref = telemetry, health

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "sluice"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = generate_latest(telemetry_ref.registry)
                    self._send(200, CONTENT_TYPE_LATEST, body)
                elif path in ("/healthz", "/health"):
                    healthy, details = health_ref()
                    body = json.dumps(details, indent=2, sort_keys=True, default=str).encode()
                    self._send(200 if healthy else 503, "application/json", body + b"\n")
                else:
                    self._send(404, "text/plain; charset=utf-8", b"try /metrics or /healthz\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would drown the receiver's own log

        server_class = (
            _IPv6Server if ":" in host else http.server.ThreadingHTTPServer
        )
        self._server = server_class((host, int(port)), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sluice-status", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _IPv6Server(http.server.ThreadingHTTPServer):
    import socket as _socket

    address_family = _socket.AF_INET6
