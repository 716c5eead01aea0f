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


# -- one request, one trace, with the frameworks and their OpenTelemetry instrumentations ---------
#
# OpenTelemetry's FastAPI/Starlette instrumentors put their ASGI middleware outermost in the app, so
# `app.add_middleware(ASGIMiddleware)` runs sluice *inside* an active server span; wrapping the app
# (`ASGIMiddleware(app)`, `app.wsgi_app = WSGIMiddleware(app.wsgi_app)`) puts it outside. Either
# way the access record, the handler's log and every span must share one trace.


def assert_one_trace(tel: Captured, handler_body: str) -> None:
    from opentelemetry.trace import SpanKind

    spans = [(s.name, s.kind.name, format(s.context.trace_id, "032x")) for s in tel.spans]
    servers = [s for s in tel.spans if s.kind is SpanKind.SERVER]
    assert len({s.context.trace_id for s in tel.spans}) == 1, spans
    assert len(servers) == 1, spans
    [access] = tel.logs_in("access")
    handler = next(r for r in tel.logs if r.log_record.body == handler_body)
    assert access.log_record.trace_id == handler.log_record.trace_id == servers[0].context.trace_id
    request_id = dict(access.log_record.attributes or {})["request.id"]
    assert dict(servers[0].attributes or {})["request.id"] == request_id
    assert dict(handler.log_record.attributes or {})["request.id"] == request_id
    # The receiver derives access records from server spans without one; this one has one, and
    # says so on the very span its access record belongs to.
    assert access.log_record.span_id == servers[0].context.span_id
    assert dict(servers[0].attributes or {})["sluice.access_record"] is True


def asgi_get(app: Any, path: str) -> Any:
    import httpx

    async def get() -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            return await client.get(path)

    return asyncio.run(get())


@pytest.mark.parametrize("sluice_position", ["inside", "outside"])
def test_fastapi_with_its_opentelemetry_instrumentor_makes_one_trace_per_request(
        tel: Captured, sluice_position: str) -> None:
    from fastapi import FastAPI
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    api = FastAPI()

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        logging.getLogger("app.handler").warning("fastapi handler %s", item_id)
        return {"id": item_id}

    if sluice_position == "inside":
        api.add_middleware(ASGIMiddleware)
    FastAPIInstrumentor.instrument_app(api)
    try:
        response = asgi_get(api if sluice_position == "inside" else ASGIMiddleware(api), "/items/3")
    finally:
        FastAPIInstrumentor.uninstrument_app(api)
    assert response.status_code == 200
    assert response.json() == {"id": 3}
    assert "x-request-id" in response.headers
    assert_one_trace(tel, "fastapi handler 3")


@pytest.mark.parametrize("sluice_position", ["inside", "outside"])
def test_starlette_with_its_opentelemetry_instrumentor_makes_one_trace_per_request(
        tel: Captured, sluice_position: str) -> None:
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello_endpoint(request: Request) -> PlainTextResponse:
        logging.getLogger("app.handler").warning("starlette handler")
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/hello", hello_endpoint)])
    if sluice_position == "inside":
        app.add_middleware(ASGIMiddleware)
    StarletteInstrumentor.instrument_app(app)
    try:
        response = asgi_get(app if sluice_position == "inside" else ASGIMiddleware(app), "/hello")
    finally:
        StarletteInstrumentor.uninstrument_app(app)
    assert (response.status_code, response.text) == (200, "hi")
    assert_one_trace(tel, "starlette handler")


@pytest.mark.parametrize("outermost", ["sluice", "opentelemetry-wsgi"])
def test_flask_with_its_opentelemetry_instrumentor_makes_one_trace_per_request(
        tel: Captured, outermost: str) -> None:
    from flask import Flask
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    app = Flask("orders")

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> str:
        logging.getLogger("app.handler").warning("flask handler %s", order_id)
        return "ok"

    FlaskInstrumentor().instrument_app(app)
    try:
        if outermost == "sluice":
            app.wsgi_app = WSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
        else:  # the generic OTel WSGI middleware around sluice's
            app.wsgi_app = OpenTelemetryMiddleware(WSGIMiddleware(app.wsgi_app))  # type: ignore[method-assign]
        response = app.test_client().get("/orders/7", buffered=True)  # a server closes the body
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    assert (response.status_code, response.text) == (200, "ok")
    assert_one_trace(tel, "flask handler 7")


def test_wsgi_app_called_inside_other_work_becomes_a_child_not_a_new_trace(tel: Captured) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    with trace.get_tracer("t").start_as_current_span("batch job") as job:
        call_wsgi(WSGIMiddleware(hello))
    request_span = tel.span("GET /orders/7")
    assert request_span.kind is SpanKind.INTERNAL
    assert request_span.parent is not None
    assert request_span.parent.span_id == job.get_span_context().span_id
    [access] = tel.logs_in("access")
    assert access.log_record.trace_id == job.get_span_context().trace_id


SUMMARY = """
def summary(tel, handler_body):
    from opentelemetry.trace import SpanKind
    access = tel.logs_in("access")
    handler = [r for r in tel.logs if r.log_record.body == handler_body]
    return {
        "traces": len({s.context.trace_id for s in tel.spans}),
        "server_spans": [s.name for s in tel.spans if s.kind is SpanKind.SERVER],
        "access_records": len(access),
        "same_trace": bool(access and handler) and access[0].log_record.trace_id == handler[0].log_record.trace_id
                      == next(s.context.trace_id for s in tel.spans if s.kind is SpanKind.SERVER),
    }
"""


def test_django_wsgi_and_asgi_with_the_django_instrumentor_make_one_trace_per_request() -> None:
    """Django (WSGI and ASGI), instrumented by `sluice.init()` itself (instrument=True finds the
    installed DjangoInstrumentor), in a fresh interpreter: Django's settings are process-wide."""
    from tests.sdk.otlp_sink import run_script

    result = run_script(SUMMARY + """
import asyncio, json, logging
import django
from django.conf import settings
settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], MIDDLEWARE=[], SECRET_KEY="test")
from django.http import HttpResponse
from django.urls import path

def order(request, order_id):
    logging.getLogger("app.handler").warning("django handler %s", order_id)
    return HttpResponse("ok")

urlpatterns = [path("orders/<int:order_id>", order)]

import httpx, sluice, werkzeug.test
from sluice.middleware import ASGIMiddleware, WSGIMiddleware
from sluice.testing import capture
sluice.init(service_name="dj", exporter="none", runtime_metrics=False, instrument=["django"])
django.setup()
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

with capture() as tel:
    response = werkzeug.test.Client(WSGIMiddleware(get_wsgi_application())).get("/orders/7", buffered=True)
    assert response.status_code == 200, response.status_code
out = {"wsgi": summary(tel, "django handler 7")}

async def get():
    transport = httpx.ASGITransport(app=ASGIMiddleware(get_asgi_application()))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return await client.get("/orders/8")

with capture() as tel:
    assert asyncio.run(get()).status_code == 200
out["asgi"] = summary(tel, "django handler 8")
print(json.dumps(out))
""", timeout_s=60)
    assert result.returncode == 0, result.stderr
    import json

    out = json.loads(result.stdout.splitlines()[-1])
    expected = {"traces": 1, "server_spans": ["GET /orders/7"], "access_records": 1, "same_trace": True}
    assert out["wsgi"] == expected
    assert out["asgi"] == {**expected, "server_spans": ["GET /orders/8"]}


def test_fastapi_auto_instrumented_by_init_ships_one_trace_to_a_real_otlp_receiver(tmp_path: Any) -> None:
    """The path a user takes: `sluice.init()` (which enables the installed FastAPI instrumentor),
    then `app.add_middleware(ASGIMiddleware)`; what arrives over OTLP is one trace per request."""
    from tests.sdk.otlp_sink import run_script, start_sink

    sink = start_sink()
    try:
        result = run_script(f"""
            import asyncio, logging, httpx, sluice
            sluice.init(service_name="api", endpoint="{sink.endpoint}", runtime_metrics=False,
                        spill_dir="{tmp_path}", instrument=["fastapi"])
            from fastapi import FastAPI
            from sluice.middleware import ASGIMiddleware

            app = FastAPI()

            @app.get("/items/{{item_id}}")
            async def item(item_id: int):
                logging.getLogger("app.handler").warning("handling %s", item_id)
                return {{"id": item_id}}

            app.add_middleware(ASGIMiddleware)

            async def main():
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                    assert (await client.get("/items/3")).status_code == 200

            asyncio.run(main())
            sluice.shutdown()
        """, timeout_s=60)
        assert result.returncode == 0, result.stderr
        spans = sink.spans()
        assert len({s["trace_id"] for s in spans}) == 1, spans
        [server] = [s for s in spans if s["kind"] == 2]  # SPAN_KIND_SERVER
        assert server["name"] == "GET /items/{item_id}"
        [access] = [r for r in sink.log_records() if r["attributes"].get("log.category") == "access"]
        [handler] = [r for r in sink.log_records() if r["body"] == "handling 3"]
        assert access["trace_id"] == handler["trace_id"] == server["trace_id"]
        assert access["span_id"] == server["span_id"]
    finally:
        sink.stop()
