"""The viewer: its static page under /ui/ and its JSON API under /api/v1/, as one ASGI app.

A thin front door over the read core (`core.QueryCore`), exactly as the gRPC LogQuery service
is: every read goes through the same `authenticate` → check → audit → read, so the viewer shows
a key what `sluice logs` shows it and nothing more, and every read lands in the audit trail
(with `audit.channel: http`). Served by the receiver on its telemetry port (`service/status.py`).

    GET /api/v1/session         who the key is: name, role, user, tenant, visible categories
    GET /api/v1/logs            Query: filter params, limit, order, page_token
    GET /api/v1/stats           Stats: filter params, bucket (seconds)
    GET /api/v1/tail            Tail as server-sent events (read with fetch: it needs the header)
    GET /api/v1/export          Export: filter params, format, compression, order, limit
    GET /api/v1/audit/chains    hash-chain verdict of each audit file set (admins)

Security model (docs/viewer.md):

- The key travels only in the `X-Api-Key` request header: never in a URL (URLs end up in
  logs and histories) nor in a cookie (the browser would send it with cross-site requests).
  The page keeps it in sessionStorage, for the tab only.
- The API refuses cross-site requests: a request the browser marks `Sec-Fetch-Site`
  cross-site/same-site, or whose `Origin` is not this server, is 403; and without the custom
  header no read happens at all (a cross-origin page cannot add it without a CORS preflight,
  which this server never grants).
- Every response carries a strict Content-Security-Policy (scripts from this origin only, no
  inline script or eval, Trusted Types enforced so no string can reach an HTML sink, not
  framable), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`. The page
  renders records with DOM text APIs only (`ui/`).
- Query work (SQLite, the audit record's trip through ingest) runs on a small pool of its own,
  so a slow query never blocks the event loop; tails hold one of `query.max_streams` slots and
  end when the client stops reading (`SEND_TIMEOUT_S`) or goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson

from sluice_collector.asgi import Receive, Scope, Send, respond
from sluice_collector.otlpvalues import SEVERITY_LEVELS
from sluice_collector.query.config import ApiKeyConfig
from sluice_collector.query.core import (
    ADMIN_ONLY_CATEGORIES,
    QueryCore,
    ReadError,
    ReadUnauthenticated,
    error_name,
    is_admin,
)
from sluice_collector.query.store import InvalidFilter, RecordFilter, Stats, StoredRow

__all__ = ["CSP", "ViewerApp"]

API = "/api/v1/"
UI = "/ui/"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
       "require-trusted-types-for 'script'; trusted-types 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
]
STATUS_OF = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
             "NOT_FOUND": 404, "METHOD_NOT_ALLOWED": 405, "RESOURCE_EXHAUSTED": 429,
             "UNAVAILABLE": 503}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_ASSET_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(?:html|js|css|svg)$")
_INT_RE = re.compile(r"^[0-9]{1,19}$")
READ_THREADS = 4
# A tail whose client has not taken a message for this long is ended (its slot freed).
SEND_TIMEOUT_S = 30.0
# A tail with nothing to send still sends a comment this often (proxies, dead peers).
KEEPALIVE_S = 15.0
TAIL_CHECK_S = 1.0
EXPORT_FORMATS = ("jsonl", "csv", "txt")
EXPORT_COMPRESSIONS = ("none", "gzip", "zip")
_T = TypeVar("_T")


class _Refused(Exception):
    """A request refused before it reaches the core (bad parameter, cross-site, method)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _load_assets() -> dict[str, bytes]:
    root = resources.files("sluice_collector.query") / "ui"
    return {entry.name: entry.read_bytes() for entry in root.iterdir()
            if entry.is_file() and _ASSET_RE.match(entry.name)}


def filter_of_params(params: list[tuple[str, str]]) -> RecordFilter:
    """The filter of `/api/v1/logs?since=…&category=…&attr=k=v…` (every field of LogQuery's)."""
    one: dict[str, str] = {}
    many: dict[str, list[str]] = {}
    for name, value in params:
        if name in ("category", "service", "attr"):
            many.setdefault(name, []).append(value)
        else:
            one[name] = value
    attrs: list[tuple[str, str]] = []
    for item in many.get("attr", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidFilter(f"attr: got {item!r}; expected KEY=VALUE")
        attrs.append((key, value))
    return RecordFilter(
        since_ns=_ns(one, "since"), until_ns=_ns(one, "until"),
        severity_at_least=_severity(one.get("severity", "")),
        categories=tuple(c for c in many.get("category", []) if c),
        services=tuple(s for s in many.get("service", []) if s),
        trace_id=one.get("trace_id", "").strip().lower(), user_id=one.get("user", ""),
        event_type=one.get("event_type", ""), attribute_equals=tuple(sorted(attrs)),
        text=one.get("text", ""), regex=one.get("regex", ""), tenant=one.get("tenant", ""),
        include_reads=one.get("include_reads", "") in ("1", "true"),
    )


def _ns(params: dict[str, str], name: str) -> int:
    value = params.get(name, "")
    if not value:
        return 0
    if not _INT_RE.match(value):
        raise InvalidFilter(f"{name}: got {value!r}; expected Unix nanoseconds")
    return int(value)


def _severity(value: str) -> int:
    if not value:
        return 0
    if value.isdigit() and 0 <= int(value) <= 24:
        return int(value)
    number = SEVERITY_LEVELS.get(value.upper())
    if number is None:
        raise InvalidFilter(f"severity: got {value!r}; expected {', '.join(SEVERITY_LEVELS)} or 1-24")
    return number


def _int(params: dict[str, str], name: str, default: int = 0) -> int:
    value = params.get(name, "")
    if not value:
        return default
    if not _INT_RE.match(value):
        raise InvalidFilter(f"{name}: got {value!r}; expected a whole number")
    return int(value)


def _records(rows: Sequence[StoredRow]) -> list[dict[str, Any]]:
    # The stored line is JSON already: spliced in as it is, never parsed and re-encoded.
    return [{"id": r.id, "time": str(r.row.time_ns), "category": r.row.category,
             "record": orjson.Fragment(r.row.line)} for r in rows]


def _stats(s: Stats) -> dict[str, Any]:
    return {
        "total": s.total, "errors": s.errors, "error_rate": s.errors / s.total if s.total else 0.0,
        "unique_users": s.unique_users, "avg_duration_ms": s.avg_duration_ms,
        "with_duration": s.with_duration, "bucket_seconds": s.bucket_ns // 1_000_000_000,
        "by_category": s.by_category, "by_severity": s.by_severity,
        "by_event_type": s.by_event_type, "by_status": s.by_status, "by_service": s.by_service,
        "buckets": [[str(b), n, e] for b, n, e in s.buckets],
        "category_buckets": [[str(b), k, n] for b, k, n in s.category_buckets],
        "severity_buckets": [[str(b), k, n] for b, k, n in s.severity_buckets],
    }


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "unknown"
    host, port = client[0], client[1]
    return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        out[name.decode("latin-1").lower()] = value.decode("latin-1")
    return out


class ViewerApp:
    """The viewer's ASGI app; `core` decides every access, `categories` only feed hints."""

    def __init__(self, core: QueryCore, *, categories: Sequence[str] = ()) -> None:
        self._core = core
        self._categories = tuple(c for c in categories if c != "metrics")
        self._assets = _load_assets()
        self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="sluice-viewer")
        self._routes: dict[str, Callable[..., Any]] = {
            "session": self._session, "logs": self._logs, "stats": self._stats,
            "tail": self._tail, "export": self._export, "audit/chains": self._chains,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, work: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith(API):
            await self._api(path[len(API):], scope, receive, send)
        elif path in ("/", "/ui"):
            await respond(send, 302, "text/plain; charset=utf-8", b"see /ui/\n",
                          [(b"location", UI.encode()), *SECURITY_HEADERS])
        elif path.startswith(UI):
            await self._asset(path[len(UI):] or "index.html", scope, send)
        else:
            await self._error(send, "NOT_FOUND", "no such page")

    # -- static -----------------------------------------------------------------------------
    async def _asset(self, name: str, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await self._error(send, "METHOD_NOT_ALLOWED", "GET only")
            return
        body = self._assets.get(name)
        if body is None or not _ASSET_RE.match(name):
            await self._error(send, "NOT_FOUND", "no such file")
            return
        content_type = CONTENT_TYPES[Path(name).suffix]
        await respond(send, 200, content_type, b"" if scope["method"] == "HEAD" else body,
                      [(b"cache-control", b"no-cache"), *SECURITY_HEADERS])

    # -- API ----------------------------------------------------------------------------------
    async def _api(self, route: str, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._routes.get(route)
        try:
            headers = _headers(scope)
            self._refuse_cross_site(scope, headers)
            if handler is None:
                raise _Refused("NOT_FOUND", f"no API {API}{route}")
            if scope["method"] != "GET":
                raise _Refused("METHOD_NOT_ALLOWED", "the viewer's API only reads: GET")
            presented = headers.get("x-api-key", "")
            if not presented:
                raise ReadUnauthenticated
            key = self._core.authenticate([("x-api-key", presented)])
            params = parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                               keep_blank_values=False, max_num_fields=200)
            await handler(key, params, scope, receive, send)
        except (ReadError, InvalidFilter) as exc:
            await self._error(send, error_name(exc), str(exc))
        except _Refused as exc:
            await self._error(send, exc.code, str(exc))
        except ValueError as exc:  # parse_qsl: too many fields
            await self._error(send, "INVALID_ARGUMENT", str(exc))

    @staticmethod
    def _refuse_cross_site(scope: Scope, headers: dict[str, str]) -> None:
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise _Refused("PERMISSION_DENIED", f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = headers.get("origin")
        if origin is not None:
            own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
            if origin != own:
                raise _Refused("PERMISSION_DENIED", "cross-origin request refused")

    async def _json(self, send: Send, body: Any, status: int = 200) -> None:
        await respond(send, status, "application/json", orjson.dumps(body),
                      [(b"cache-control", b"no-store"), *SECURITY_HEADERS])

    async def _error(self, send: Send, code: str, message: str) -> None:
        await self._json(send, {"error": {"code": code, "message": message}}, STATUS_OF[code])

    async def _session(self, key: ApiKeyConfig, params: Any, scope: Scope, receive: Receive,
                       send: Send) -> None:
        admin = is_admin(key)
        categories = [c for c in self._categories if admin or c not in ADMIN_ONLY_CATEGORIES]
        await self._json(send, {
            "name": key.name, "role": key.role, "user_id": key.user_id, "tenant": key.tenant,
            "admin": admin, "categories": categories, "max_limit": self._core.config.max_limit,
        })

    async def _logs(self, key: ApiKeyConfig, params: list[tuple[str, str]], scope: Scope,
                    receive: Receive, send: Send) -> None:
        f = filter_of_params(params)
        one = dict(params)
        order = one.get("order", "newest")
        if order not in ("newest", "oldest"):
            raise InvalidFilter(f"order: got {order!r}; expected newest or oldest")
        limit = _int(one, "limit")
        rows, token = await self._run(lambda: self._core.query(
            key, f, limit=limit, newest_first=order == "newest",
            page_token=one.get("page_token", ""), peer=_peer(scope), via="http"))
        await self._json(send, {"records": _records(rows), "next_page_token": token})

    async def _stats(self, key: ApiKeyConfig, params: list[tuple[str, str]], scope: Scope,
                     receive: Receive, send: Send) -> None:
        f = filter_of_params(params)
        bucket_s = _int(dict(params), "bucket")
        s = await self._run(lambda: self._core.stats(key, f, bucket_s=bucket_s, peer=_peer(scope),
                                                     via="http"))
        await self._json(send, _stats(s))

    async def _chains(self, key: ApiKeyConfig, params: Any, scope: Scope, receive: Receive,
                      send: Send) -> None:
        reports = await self._run(lambda: self._core.audit_chains(key, peer=_peer(scope), via="http"))
        root = self._core.files_directory
        out = []
        for r in reports:
            broken = r.broken
            out.append({
                "set": _relative(r.active, root), "files": [_relative(p, root) for p in r.files],
                "records": r.records, "torn": r.torn, "intact": broken is None,
                "broken": None if broken is None else {
                    "file": _relative(broken.path, root), "line": broken.line,
                    "reason": broken.reason},
            })
        await self._json(send, {"sets": out, "keyed": self._core.chain_keyed})

    async def _export(self, key: ApiKeyConfig, params: list[tuple[str, str]], scope: Scope,
                      receive: Receive, send: Send) -> None:
        f = filter_of_params(params)
        one = dict(params)
        fmt = one.get("format", "jsonl")
        compression = one.get("compression", "none")
        if fmt not in EXPORT_FORMATS or compression not in EXPORT_COMPRESSIONS:
            raise InvalidFilter(f"format/compression: expected one of {EXPORT_FORMATS} / "
                                f"{EXPORT_COMPRESSIONS}")
        limit = _int(one, "limit")
        stack = contextlib.ExitStack()
        chunks = await self._run(lambda: stack.enter_context(self._core.export(
            key, f, fmt=fmt, compression=compression, newest_first=one.get("order") == "newest",
            max_records=limit, peer=_peer(scope), via="http")))
        try:
            suffix = {"none": "", "gzip": ".gz", "zip": ".zip"}[compression]
            content_type = {"none": {"jsonl": "application/x-ndjson", "csv": "text/csv",
                                     "txt": "text/plain; charset=utf-8"}[fmt],
                            "gzip": "application/gzip", "zip": "application/zip"}[compression]
            name = f"sluice-export.{fmt}{suffix}"
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", content_type.encode()), (b"x-content-type-options", b"nosniff"),
                (b"content-disposition", f'attachment; filename="{name}"'.encode()),
                (b"cache-control", b"no-store"), *SECURITY_HEADERS]})
            iterator = iter(chunks)
            while True:
                chunk = await self._run(lambda: next(iterator, None))
                if chunk is None:
                    break
                await asyncio.wait_for(send({"type": "http.response.body", "body": chunk,
                                             "more_body": True}), SEND_TIMEOUT_S)
            await send({"type": "http.response.body", "body": b""})
        finally:
            stack.close()

    async def _tail(self, key: ApiKeyConfig, params: list[tuple[str, str]], scope: Scope,
                    receive: Receive, send: Send) -> None:
        """Server-sent events: `ready` once subscribed, then `records` as they are indexed."""
        f = filter_of_params(params)
        stack = contextlib.ExitStack()
        cursor = await self._run(lambda: stack.enter_context(self._core.tail(
            key, f, peer=_peer(scope), via="http")))
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no"),
                (b"x-content-type-options", b"nosniff"), *SECURITY_HEADERS]})

            async def event(data: bytes) -> None:
                await asyncio.wait_for(send({"type": "http.response.body", "body": data,
                                             "more_body": True}), SEND_TIMEOUT_S)

            await event(b"event: ready\ndata: {}\n\n")
            quiet_s = 0.0
            loop = asyncio.get_running_loop()
            while not gone.is_set() and not cursor.closing:
                rows = await self._run(cursor.poll)
                for start in range(0, len(rows), 500):
                    payload = orjson.dumps({"records": _records(rows[start:start + 500])})
                    await event(b"event: records\ndata: " + payload + b"\n\n")
                if rows:
                    quiet_s = 0.0
                    continue
                began = loop.time()
                await cursor.wait_async(TAIL_CHECK_S)
                quiet_s += loop.time() - began
                if quiet_s >= KEEPALIVE_S:
                    await event(b": keep-alive\n\n")
                    quiet_s = 0.0
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b""})
        except TimeoutError:
            return  # the client stopped reading: end the stream, free the slot
        finally:
            watcher.cancel()
            stack.close()


def _relative(path: Path, root: Path | None) -> str:
    if root is None:
        return path.name
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name
