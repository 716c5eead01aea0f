"""The `sluice.v1.LogQuery` gRPC service: Query, Stats, Export and Tail over the index.

Access is decided here and only here, from the API key in the call's metadata — never from
anything inside the request:

    admin key           every record (of its tenant, when the key names one)
    user key            only records whose user id is the key's `user_id` (and tenant, when
                        set), never the admin-only categories `system` and `audit`
    no / unknown key    UNAUTHENTICATED

Every call is itself audited before it reads anything: an `audit` log record (who, which
method, which filter) goes through the receiver's own pipeline, so it is masked, hash-chained
and stored like any other audit record. A call that cannot be audited is refused (UNAVAILABLE).

Handlers take and return raw bytes (as the OTLP handlers do) so a malformed request is answered
with INVALID_ARGUMENT, not grpcio's INTERNAL.

Capacity of its own. The handlers are async (they share the OTLP port's event loop, see
`receivers/otlp_grpc.py`) and do their blocking work — the audit record, SQLite — on a pool of
this service's own, sized for its limits, so readers and writers never wait for each other's
threads. At most `query.max_queries` Query/Stats calls and `query.max_streams` Export/Tail
streams run at once, and one API key holds at most its share of either
(`max_queries_per_key`, `max_streams_per_key`): a user key cannot lock an admin out. Over a
limit a call is refused with RESOURCE_EXHAUSTED at once, before it is audited or reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import orjson
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from sluice_collector.batch import Signal
from sluice_collector.errors import DecodeError, RequestTooLarge, Retryable
from sluice_collector.ingest import Caller, Encoding, IngestCore
from sluice_collector.loop import run_blocking
from sluice_collector.query._proto import query_pb2 as pb
from sluice_collector.query.config import ApiKeyConfig, QueryConfig
from sluice_collector.query.export import export_chunks
from sluice_collector.query.store import (
    AccessScope,
    IndexStore,
    InvalidFilter,
    RecordFilter,
    StoredRow,
    check_filter,
)

log = logging.getLogger("sluice.receiver")

SERVICE_NAME = "sluice.v1.LogQuery"
ADMIN_ONLY_CATEGORIES = frozenset({"system", "audit"})
DEFAULT_LIMIT = 100
TAIL_POLL_S = 0.2
TAIL_MAX_ROWS = 5000
_FORMATS = {pb.JSONL: "jsonl", pb.CSV: "csv", pb.TXT: "txt"}
_COMPRESSIONS = {pb.NONE: "none", pb.GZIP: "gzip", pb.ZIP: "zip"}
_Req = TypeVar("_Req", bound=Message)
_T = TypeVar("_T")


class ApiKeyAuthenticator:
    """Maps `x-api-key: <key>` (or `authorization: ApiKey <key>`) to the configured key.

    Compared as SHA-256 digests with `hmac.compare_digest` against every key without stopping
    at a match, so neither which key matched nor the length of a guess shows in timing.
    """

    def __init__(self, config: QueryConfig) -> None:
        self._keys = [(hashlib.sha256(k.key.encode()).digest(), k) for k in config.api_keys]

    def __call__(self, metadata: Any) -> ApiKeyConfig | None:
        presented: str | None = None
        for key, value in metadata or ():
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            if key == "x-api-key":
                presented = text.strip()
                break
            if key == "authorization":
                scheme, _, credential = text.strip().partition(" ")
                if scheme.lower() == "apikey":
                    presented = credential.strip()
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: ApiKeyConfig | None = None
        for known, config in self._keys:
            if hmac.compare_digest(digest, known):
                found = config
        return found


def scope_of(key: ApiKeyConfig) -> AccessScope:
    if key.role == "admin":
        return AccessScope(tenant=key.tenant)
    return AccessScope(user_id=key.user_id, tenant=key.tenant,
                       hidden_categories=ADMIN_ONLY_CATEGORIES)


def filter_of(f: pb.Filter) -> RecordFilter:
    return RecordFilter(
        since_ns=f.since_unix_nano, until_ns=f.until_unix_nano,
        severity_at_least=f.severity_at_least, categories=tuple(f.categories),
        services=tuple(f.services), trace_id=f.trace_id.strip().lower(), user_id=f.user_id,
        event_type=f.event_type, attribute_equals=tuple(sorted(f.attribute_equals.items())),
        text=f.text, regex=f.regex, tenant=f.tenant,
    )


def _record(stored: StoredRow) -> pb.Record:
    return pb.Record(time_unix_nano=stored.row.time_ns, category=stored.row.category,
                     line=stored.row.line)


class KeySlots:
    """`total` places shared fairly: one API key holds at most `per_key` of them at a time."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> str:
        """Take a place for `key`; "" when taken, else why not (for the client)."""
        with self._lock:
            mine = self._held.get(key, 0)
            if mine >= self.per_key:
                return f"this key already has {mine} running (its share is {self.per_key})"
            if sum(self._held.values()) >= self.total:
                return f"all {self.total} places are taken"
            self._held[key] = mine + 1
            return ""

    def release(self, key: str) -> None:
        with self._lock:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)


class LogQueryService:
    """The four RPCs, bound to one index store and the receiver's ingest core (for audit)."""

    def __init__(self, config: QueryConfig, store: IndexStore, ingest: IngestCore) -> None:
        self._config = config
        self._store = store
        self._ingest = ingest
        self._authenticate = ApiKeyAuthenticator(config)
        self._queries = KeySlots(config.max_queries, config.max_queries_per_key)
        self._streams = KeySlots(config.max_streams, config.max_streams_per_key)
        # Every running call does its blocking work here, one job at a time: enough threads
        # for every call the limits let run, so none waits for a thread.
        self._executor = ThreadPoolExecutor(max_workers=config.max_queries + config.max_streams,
                                            thread_name_prefix="sluice-query")
        self._closing = threading.Event()

    def open(self) -> None:
        """Create the index (schema) if no index sink did, so reads never meet a bare file."""
        self._store.open()

    def close(self) -> None:
        """End running Tail streams, so the server's stop does not wait out its grace."""
        self._closing.set()

    def shutdown(self) -> None:
        """After the server stopped: release the pool and the store."""
        self._closing.set()
        self._executor.shutdown(wait=True)
        self._store.close()

    def generic_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Query": grpc.unary_unary_rpc_method_handler(self.query),
            "Stats": grpc.unary_unary_rpc_method_handler(self.stats),
            "Export": grpc.unary_stream_rpc_method_handler(self.export),
            "Tail": grpc.unary_stream_rpc_method_handler(self.tail),
        })

    # -- RPCs ------------------------------------------------------------------------------
    async def query(self, data: bytes, context: Any) -> bytes:
        request, key, scope, f = await self._begin("Query", data, context, pb.QueryRequest,
                                                   self._queries)
        try:
            limit = min(request.limit or DEFAULT_LIMIT, self._config.max_limit)
            rows, token = await self._run(context, lambda: self._store.query(
                f, scope, limit=limit, newest_first=request.order == pb.NEWEST_FIRST,
                page_token=request.page_token))
        finally:
            self._queries.release(key.name)
        response = pb.QueryResponse(records=[_record(r) for r in rows], next_page_token=token)
        return response.SerializeToString()

    async def stats(self, data: bytes, context: Any) -> bytes:
        request, key, scope, f = await self._begin("Stats", data, context, pb.StatsRequest,
                                                   self._queries)
        try:
            s = await self._run(context, lambda: self._store.stats(
                f, scope, max(0, request.bucket_seconds)))
        finally:
            self._queries.release(key.name)
        response = pb.StatsResponse(
            total=s.total, unique_users=s.unique_users,
            error_rate=s.errors / s.total if s.total else 0.0,
            avg_duration_ms=s.avg_duration_ms, with_duration=s.with_duration,
            bucket_seconds=s.bucket_ns // 1_000_000_000,
            by_category=[pb.Count(key=k, count=n) for k, n in s.by_category],
            by_severity=[pb.Count(key=k, count=n) for k, n in s.by_severity],
            by_event_type=[pb.Count(key=k, count=n) for k, n in s.by_event_type],
            by_status=[pb.Count(key=k, count=n) for k, n in s.by_status],
            buckets=[pb.Bucket(start_unix_nano=b, count=n, errors=e) for b, n, e in s.buckets],
        )
        return response.SerializeToString()

    async def export(self, data: bytes, context: Any) -> AsyncIterator[bytes]:
        request, key, scope, f = await self._begin("Export", data, context, pb.ExportRequest,
                                                   self._streams, check=_export_format)
        try:
            rows = self._store.iterate(f, scope, newest_first=request.order == pb.NEWEST_FIRST,
                                       max_records=request.max_records)
            chunks = export_chunks(rows, _FORMATS[request.format],
                                   _COMPRESSIONS[request.compression])
            while not self._closing.is_set():
                # One chunk at a time on the pool: the generator reads the index page by page.
                chunk = await self._run(context, lambda: next(chunks, None))
                if chunk is None:
                    return
                yield pb.ExportChunk(data=chunk).SerializeToString()
        finally:
            self._streams.release(key.name)

    async def tail(self, data: bytes, context: Any) -> AsyncIterator[bytes]:
        _request, key, scope, f = await self._begin("Tail", data, context, pb.TailRequest,
                                                    self._streams)
        try:
            last = await self._run(context, self._store.last_id)
            # An empty first message confirms the subscription: records indexed from now on
            # will be sent.
            yield b""
            while not self._closing.is_set():
                newest = await self._run(context, self._store.last_id)
                if newest <= last:
                    await asyncio.sleep(TAIL_POLL_S)
                    continue
                # Bounded by the id range, so rows the filter rejects are read once only; and
                # by TAIL_MAX_ROWS, so a burst is sent in parts rather than all at once.
                rows = await self._run(context, functools.partial(
                    self._store.after, f, scope, last, limit=TAIL_MAX_ROWS, until_id=newest))
                last = rows[-1].id if len(rows) == TAIL_MAX_ROWS else newest
                for start in range(0, len(rows), 500):
                    yield pb.TailResponse(
                        records=[_record(r) for r in rows[start:start + 500]]
                    ).SerializeToString()
        finally:
            self._streams.release(key.name)

    # -- plumbing --------------------------------------------------------------------------
    async def _begin(self, method: str, data: bytes, context: Any, message: type[_Req],
                     slots: KeySlots, check: Callable[[Any], str] | None = None,
                     ) -> tuple[_Req, ApiKeyConfig, AccessScope, RecordFilter]:
        """Authenticate, parse, check, take a place and audit one call; aborts the call on
        any failure (and then holds no place). The caller releases the place."""
        key = self._authenticate(context.invocation_metadata())
        if key is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or unknown API key; send `x-api-key: <key>`")
        assert key is not None
        try:
            request = message.FromString(data)
        except ProtobufDecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"not a sluice.v1.{message.__name__}")
        f = filter_of(request.filter)  # type: ignore[attr-defined]
        scope = scope_of(key)
        try:
            check_filter(f)
        except InvalidFilter as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        problem = check(request) if check is not None else ""
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        denied = sorted(scope.hidden_categories & set(f.categories))
        if denied:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"categories {', '.join(denied)} need an admin key")
        refused = slots.acquire(key.name)
        if refused:
            what = "Export/Tail streams" if slots is self._streams else "Query/Stats calls"
            limit = "max_streams" if slots is self._streams else "max_queries"
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"too many {what}: {refused} (query.{limit}, "
                                f"query.{limit}_per_key); retry later")
        try:
            await self._audit(key, method, f, context)
        except BaseException:
            slots.release(key.name)
            raise
        return request, key, scope, f

    async def _run(self, context: Any, work: Callable[[], _T]) -> _T:
        try:
            return await run_blocking(self._executor, work)
        except InvalidFilter as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable: abort raises") from exc

    async def _audit(self, key: ApiKeyConfig, method: str, f: RecordFilter, context: Any) -> None:
        data = audit_request(key, method, f, context.peer()).SerializeToString()
        try:
            # In-process, past authentication: the reader was authenticated by its API key.
            result = await run_blocking(self._executor, self._ingest.export, Signal.LOGS, data,
                                        Encoding.PROTOBUF, Caller())
        except (DecodeError, RequestTooLarge, Retryable) as exc:
            log.warning("query: cannot audit a %s call, refusing it: %s", method, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "the read could not be audited; retry later")
        # The audit record carries the caller's filter, which masking scans: a `drop` rule that
        # matches it (or validation) must not turn into an unaudited read.
        if result.dropped or result.rejected or not result.routed.get("audit"):
            log.warning("query: the audit record of a %s call was dropped or not routed to "
                        "audit; refusing the call", method)
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "the read could not be audited (its filter matched a masking "
                                "drop rule?); change the filter or ask an admin")


def _export_format(request: pb.ExportRequest) -> str:
    if request.format not in _FORMATS or request.compression not in _COMPRESSIONS:
        return "unknown export format or compression"
    return ""


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def audit_request(key: ApiKeyConfig, method: str, f: RecordFilter, peer: str
                  ) -> ExportLogsServiceRequest:
    """The audit record of one read: who (key name, role, user, tenant), what and from where."""
    now = time.time_ns()
    shown = {fld.name: getattr(f, fld.name) for fld in dataclasses.fields(f) if getattr(f, fld.name)}
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", "sluice-receiver"))
    sl = rl.scope_logs.add()
    sl.scope.name = "sluice.query"
    rec = sl.log_records.add()
    rec.time_unix_nano = now
    rec.observed_time_unix_nano = now
    rec.severity_number = 9  # type: ignore[assignment]
    rec.severity_text = "INFO"
    rec.body.string_value = f"{key.name} read logs: LogQuery/{method}"
    rec.event_name = "audit.logs.read"
    attributes = [
        _kv("log.category", "audit"), _kv("audit.action", f"LogQuery.{method}"),
        _kv("audit.actor", key.name), _kv("audit.actor.role", key.role),
        _kv("audit.entity.type", "logs"), _kv("audit.status", "success"),
        _kv("audit.filter", orjson.dumps(shown).decode()), _kv("client.peer", peer),
    ]
    if key.user_id:
        attributes.append(_kv("audit.actor.user_id", key.user_id))
    if key.tenant:
        attributes.append(_kv("audit.actor.tenant", key.tenant))
    rec.attributes.extend(attributes)
    return request
