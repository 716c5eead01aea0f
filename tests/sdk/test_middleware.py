"""WSGI/ASGI middleware: access record, server span, request id, RED metrics, error handling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import pytest

from sluice.middleware import ASGIMiddleware, WSGIMiddleware
from sluice.testing import Captured


def call_wsgi(app: Any, path: str = "/orders/7", headers: dict[str, str] | None = None) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "REMOTE_ADDR": "10.0.0.9",
                               "HTTP_USER_AGENT": "pytest", "wsgi.url_scheme": "http"}
    for k, v in (headers or {}).items():
        environ["HTTP_" + k.upper().replace("-", "_")] = v
    seen: dict[str, Any] = {}

    def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, dict(hdrs)

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        body.close()
    return seen["status"], seen["headers"], data


def hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    logging.getLogger("app.handler").warning("handling")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]


def test_wsgi_request_gets_access_record_server_span_and_metrics(tel: Captured) -> None:
    app = WSGIMiddleware(hello, route=lambda env: "/orders/{id}")
    status, headers, body = call_wsgi(app)
    assert (status, body) == ("200 OK", b"hi")
    request_id = headers["X-Request-ID"]
    [access] = tel.logs_in("access")
    a = dict(access.log_record.attributes or {})
    assert a["http.request.method"] == "GET"
    assert a["http.route"] == "/orders/{id}"
    assert a["url.path"] == "/orders/7"
    assert a["http.response.status_code"] == 200
    assert a["client.address"] == "10.0.0.9"
    assert a["user_agent.original"] == "pytest"
    assert a["request.id"] == request_id
    assert a["http.server.request.duration_ms"] >= 0
    span = tel.span("GET /orders/{id}")
    assert span.kind.name == "SERVER"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200
    handler_log = next(r for r in tel.logs if r.log_record.body == "handling")
    assert handler_log.log_record.trace_id == span.context.trace_id
    assert dict(handler_log.log_record.attributes or {})["request.id"] == request_id
    assert sum(p.value for p in tel.metric_points("http.server.requests")) == 1
    assert sum(p.count for p in tel.metric_points("http.server.request.duration")) == 1


def test_incoming_request_id_and_traceparent_are_honoured(tel: Captured) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    _, headers, _ = call_wsgi(WSGIMiddleware(hello), headers={
        "X-Request-ID": "abc-123", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "baggage": "tenant.id=t9"})
    assert headers["X-Request-ID"] == "abc-123"
    span = tel.span("GET /orders/7")
    assert format(span.context.trace_id, "032x") == trace_id
    [access] = tel.logs_in("access")
    assert dict(access.log_record.attributes or {})["tenant.id"] == "t9"


def test_wsgi_app_exception_is_recorded_as_500_and_re_raised(tel: Captured) -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        call_wsgi(WSGIMiddleware(broken))
    span = tel.span("GET /orders/7")
    assert span.status.status_code.name == "ERROR"
    [access] = tel.logs_in("access")
    assert dict(access.log_record.attributes or {})["http.response.status_code"] == 500
    assert access.log_record.severity_text == "ERROR"


def test_asgi_request_gets_access_record_span_and_request_id_header(tel: Captured) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"nope"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "POST", "path": "/items", "headers": [(b"user-agent", b"ua")],
             "client": ("1.2.3.4", 5555), "scheme": "https"}
    asyncio.run(ASGIMiddleware(app)(scope, receive, send))
    headers = dict(sent[0]["headers"])
    assert b"x-request-id" in headers
    [access] = tel.logs_in("access")
    a = dict(access.log_record.attributes or {})
    assert a["http.response.status_code"] == 404
    assert a["client.address"] == "1.2.3.4"
    assert a["request.id"] == headers[b"x-request-id"].decode()
    assert access.log_record.severity_text == "WARN"
    assert tel.span("POST /items").kind.name == "SERVER"


def test_asgi_non_http_scopes_pass_through(tel: Captured) -> None:
    called: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["type"])

    async def noop(*args: Any) -> Any:
        return None

    asyncio.run(ASGIMiddleware(app)({"type": "lifespan"}, noop, noop))
    assert called == ["lifespan"]
    assert tel.logs == []
