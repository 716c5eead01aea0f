"""WSGI and ASGI middleware: per request, one access record, one server span and RED metrics.

    app = sluice.middleware.WSGIMiddleware(app)            # Flask, Django (WSGI), wsgiref, ...
    app = sluice.middleware.ASGIMiddleware(app)            # Starlette, FastAPI, Django (ASGI), ...

Each request gets a request id (the incoming `X-Request-ID`, or a new one), echoed back in the
response and put into `sluice.context`, so every log line and span of the request carries it.

One request is one trace, whatever else instruments the app: when an outer middleware (such as
OpenTelemetry's, which FastAPI's and Starlette's instrumentors put outermost in the app) has
already started the request's server span, this middleware joins that span instead of starting
a second root from the headers; inside other work it starts a child; and a framework
instrumentation inside it (Flask's, Django's, the ASGI one) sees its span as the active one.
Incoming W3C `traceparent`/`baggage` headers are honoured (the server span joins the caller's
trace; `user.id`/`tenant.id` baggage becomes correlation ids). `http.route` defaults to the raw path;
pass `route=` (a callable from the WSGI environ / ASGI scope to a template such as `/orders/{id}`)
to keep metric cardinality low. The request's span carries `sluice.access_record: true`, which
tells the receiver that this request has its access record (it derives one from HTTP server
spans that have none).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import ExitStack
from typing import Any

from opentelemetry import baggage, metrics, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from sluice import _health
from sluice._categories import Category, get_logger
from sluice._context import context

__all__ = ["ASGIMiddleware", "WSGIMiddleware"]

_tracer = trace.get_tracer("sluice.middleware")
_meter = metrics.get_meter("sluice.middleware")
_duration = _meter.create_histogram(
    "http.server.request.duration", unit="s", description="Duration of HTTP server requests")
_requests = _meter.create_counter(
    "http.server.requests", unit="{request}", description="HTTP server requests, by method, route and status")
_access = get_logger(Category.ACCESS)

REQUEST_ID_HEADER = "X-Request-ID"
# On the span this middleware writes the access record for: the receiver derives access records
# from HTTP server spans of apps that send none (zero-code instrumentation), and skips the spans
# so marked — they have their own.
ACCESS_RECORD_MARKER = "sluice.access_record"


class _EnvironGetter(Getter[Mapping[str, Any]]):
    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


class _HeadersGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


class _Request:
    """The telemetry of one request, independent of WSGI/ASGI: start it, then finish it once."""

    def __init__(self, *, method: str, path: str, route: str, request_id: str | None, client: str | None,
                 user_agent: str | None, scheme: str, carrier_context: otel_context.Context) -> None:
        self.method = method
        self.path = path
        self.route = route
        self.request_id = request_id or uuid.uuid4().hex
        self.client = client
        self.user_agent = user_agent
        self.status = 0
        self.error: BaseException | None = None
        self._start = time.perf_counter()
        self._finished = False
        self._stack = ExitStack()
        self.span: Span | None = None
        self.joined = False
        try:
            attributes: dict[str, Any] = {
                "http.request.method": method, "url.path": path, "http.route": route, "url.scheme": scheme,
                "request.id": self.request_id, ACCESS_RECORD_MARKER: True,
            }
            if client:
                attributes["client.address"] = client
            if user_agent:
                attributes["user_agent.original"] = user_agent
            active = trace.get_current_span()
            if active.get_span_context().is_valid and getattr(active, "kind", None) is SpanKind.SERVER:
                # An outer instrumentation (OpenTelemetry's ASGI/WSGI middleware, FastAPI's, ...)
                # already started this request's server span: join it. A second root span from
                # the headers would split the request into two traces.
                self.span, self.joined = active, True
                active.set_attribute("request.id", self.request_id)
                active.set_attribute(ACCESS_RECORD_MARKER, True)
            else:
                kind = SpanKind.SERVER
                if active.get_span_context().is_valid:
                    kind = SpanKind.INTERNAL  # called inside other work: a child, as OTel's own do
                else:
                    self._stack.callback(otel_context.detach, otel_context.attach(carrier_context))
                self.span = self._stack.enter_context(_tracer.start_as_current_span(
                    f"{method} {route}", kind=kind, attributes=attributes,
                    record_exception=False, set_status_on_exception=False, end_on_exit=True))
            incoming = baggage.get_all(carrier_context)
            self._stack.enter_context(context(
                request_id=self.request_id,
                user_id=_str_or_none(incoming.get("user.id")),
                tenant_id=_str_or_none(incoming.get("tenant.id")),
            ))
        except Exception as exc:
            _health.report_once("middleware", "could not start request telemetry", exc)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        duration_s = time.perf_counter() - self._start
        token = None
        try:
            if self.span is not None:
                # The body may be closed after an outer middleware has already left the request's
                # context (OTel's WSGI one does): the access record belongs to the request's span.
                token = otel_context.attach(trace.set_span_in_context(self.span))
            status = self.status or (500 if self.error is not None else 0)
            attrs: dict[str, Any] = {"http.request.method": self.method, "http.route": self.route,
                                     "http.response.status_code": status}
            if status >= 500 or self.error is not None:
                attrs["error.type"] = type(self.error).__qualname__ if self.error is not None else str(status)
            _duration.record(duration_s, attrs)
            _requests.add(1, attrs)
            if self.span is not None and not self.joined:  # a joined span's owner sets its outcome
                self.span.set_attribute("http.response.status_code", status)
                if self.error is not None:
                    self.span.record_exception(self.error)
                if status >= 500 or self.error is not None:
                    self.span.set_status(Status(StatusCode.ERROR))
            extra: dict[str, Any] = {
                "http.request.method": self.method, "url.path": self.path, "http.route": self.route,
                "http.response.status_code": status,
                "http.server.request.duration_ms": round(duration_s * 1000, 3),
            }
            if self.client:
                extra["client.address"] = self.client
            if self.user_agent:
                extra["user_agent.original"] = self.user_agent
            _access.log(40 if status >= 500 else 30 if status >= 400 else 20,
                        '%s "%s %s" %d %.1fms', self.client or "-", self.method, self.path, status,
                        duration_s * 1000, extra=extra)
        except Exception as exc:
            _health.report_once("middleware", "could not finish request telemetry", exc)
        finally:
            try:
                if token is not None:
                    otel_context.detach(token)
                self._stack.close()
            except Exception as exc:
                _health.report_once("middleware_context", "could not restore the request context", exc)


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


# -- WSGI ----------------------------------------------------------------------------------------

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WSGIMiddleware:
    """Wrap a WSGI app; the span and access record end when the response body is closed."""

    def __init__(self, app: WSGIApp, *, route: Callable[[Mapping[str, Any]], str] | None = None) -> None:
        self.app = app
        self.route = route

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        try:
            route = self.route(environ) if self.route else path
        except Exception:
            route = path
        request = _Request(
            method=environ.get("REQUEST_METHOD", "GET"), path=path, route=route,
            request_id=environ.get("HTTP_X_REQUEST_ID"), client=environ.get("REMOTE_ADDR"),
            user_agent=environ.get("HTTP_USER_AGENT"), scheme=environ.get("wsgi.url_scheme", "http"),
            carrier_context=propagate.extract(environ, getter=_EnvironGetter()),
        )

        def our_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            try:
                request.status = int(status.split(" ", 1)[0])
            except ValueError:
                request.status = 0
            if not any(k.lower() == "x-request-id" for k, _ in headers):
                headers = [*headers, (REQUEST_ID_HEADER, request.request_id)]
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, our_start_response)
        except BaseException as exc:
            request.error = exc
            request.finish()
            raise
        return _ClosingBody(body, request)


class _ClosingBody:
    """Passes the body through and finishes the request telemetry when the server closes it."""

    def __init__(self, body: Iterable[bytes], request: _Request) -> None:
        self._body = body
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except BaseException as exc:
            self._request.error = exc
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._request.finish()


# -- ASGI ----------------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGIMiddleware:
    """Wrap an ASGI app (HTTP only; lifespan and websocket pass straight through)."""

    def __init__(self, app: ASGIApp, *, route: Callable[[Scope], str] | None = None) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "/") or "/"
        try:
            route = self.route(scope) if self.route else path
        except Exception:
            route = path
        client = scope.get("client")
        request = _Request(
            method=scope.get("method", "GET"), path=path, route=route,
            request_id=headers.get("x-request-id"), client=client[0] if client else None,
            user_agent=headers.get("user-agent"), scheme=scope.get("scheme", "http"),
            carrier_context=propagate.extract(headers, getter=_HeadersGetter()),
        )

        async def our_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                request.status = int(message.get("status", 0))
                raw = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in raw):
                    raw.append((b"x-request-id", request.request_id.encode("latin-1")))
                message["headers"] = raw
            await send(message)

        try:
            await self.app(scope, receive, our_send)
        except BaseException as exc:
            request.error = exc
            raise
        finally:
            request.finish()
