"""A small WSGI web service on the standard library's wsgiref, instrumented by sluice.

    python examples/web_service.py                         # http://127.0.0.1:8000
    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 python examples/web_service.py
    python examples/web_service.py --port 0 --requests 3   # any free port; exit after 3 requests

Try:  curl localhost:8000/orders/42   curl -XPOST 'localhost:8000/login?user=alice'   curl localhost:8000/boom

Every request gets an access record (category `access`), a server span and RED metrics from
`sluice.middleware.WSGIMiddleware`; the handlers add a security event, an audit record and an
app log line, all carrying the request's trace id and `request.id`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

import sluice
from sluice.middleware import WSGIMiddleware

log = logging.getLogger("examples.web_service")
ORDER = re.compile(r"^/orders/(\d+)$")


def route_of(environ: dict[str, Any]) -> str:
    """Low-cardinality route templates for metrics and span names."""
    path = environ.get("PATH_INFO", "/")
    return "/orders/{id}" if ORDER.match(path) else path


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    method = environ.get("REQUEST_METHOD", "GET")
    if match := ORDER.match(path):
        log.info("looking up order %s", match.group(1))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [f'{{"order": {match.group(1)}, "status": "shipped"}}'.encode()]
    if path == "/login" and method == "POST":
        user = parse_qs(environ.get("QUERY_STRING", "")).get("user", ["anonymous"])[0]
        ok = user != "mallory"
        sluice.event(sluice.EventType.AUTH_LOGIN if ok else sluice.EventType.AUTH_FAILURE, user_id=user,
                     status="success" if ok else "failure", source_ip=environ.get("REMOTE_ADDR"))
        if ok:
            sluice.audit("session.create", actor=user, entity_type="session", entity_id=user)
        start_response("200 OK" if ok else "401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"welcome\n" if ok else b"denied\n"]
    if path == "/boom":
        raise RuntimeError("the example fails on purpose")
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """sluice's access record replaces wsgiref's stderr line."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--requests", type=int, default=0, help="exit after this many requests (0: never)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s [%(trace_id)s] %(message)s")
    sluice.init(service_name="web-service", service_version="1.0.0")
    wrapped = WSGIMiddleware(app, route=route_of)
    server = make_server(args.host, args.port, wrapped, handler_class=_QuietHandler)
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        if args.requests:
            for _ in range(args.requests):
                server.handle_request()
        else:
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sluice.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
