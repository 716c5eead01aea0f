"""The `sluice.v1.LogQuery` gRPC service: Query, Stats, Export and Tail over the index.

A thin front door over the read core (`core.QueryCore`), which alone decides who may see what
and audits every read — the viewer's JSON API (`web.py`) calls the very same core. This module
only turns gRPC metadata and request bytes into core calls and the core's typed errors into
status codes.

Handlers take and return raw bytes (as the OTLP handlers do) so a malformed request is answered
with INVALID_ARGUMENT, not grpcio's INTERNAL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from sluice_collector.query._proto import query_pb2 as pb
from sluice_collector.query.config import ApiKeyConfig
from sluice_collector.query.core import (
    ApiKeyAuthenticator,
    QueryCore,
    ReadError,
    audit_request,
    error_name,
    scope_of,
)
from sluice_collector.query.store import InvalidFilter, RecordFilter, StoredRow

__all__ = ["SERVICE_NAME", "ApiKeyAuthenticator", "LogQueryService", "audit_request", "filter_of",
           "scope_of"]

SERVICE_NAME = "sluice.v1.LogQuery"
# How long a Tail waits for the follower before checking that its caller is still there.
TAIL_CHECK_S = 1.0
_FORMATS = {pb.JSONL: "jsonl", pb.CSV: "csv", pb.TXT: "txt"}
_COMPRESSIONS = {pb.NONE: "none", pb.GZIP: "gzip", pb.ZIP: "zip"}
_Req = TypeVar("_Req", bound=Message)
_T = TypeVar("_T")


def filter_of(f: pb.Filter) -> RecordFilter:
    return RecordFilter(
        since_ns=f.since_unix_nano, until_ns=f.until_unix_nano,
        severity_at_least=f.severity_at_least, categories=tuple(f.categories),
        services=tuple(f.services), trace_id=f.trace_id.strip().lower(), user_id=f.user_id,
        event_type=f.event_type, attribute_equals=tuple(sorted(f.attribute_equals.items())),
        text=f.text, regex=f.regex, tenant=f.tenant, include_reads=f.include_reads,
    )


def _record(stored: StoredRow) -> pb.Record:
    return pb.Record(time_unix_nano=stored.row.time_ns, category=stored.row.category,
                     line=stored.row.line)


def _abort(context: grpc.ServicerContext, exc: ReadError | InvalidFilter) -> NoReturn:
    context.abort(getattr(grpc.StatusCode, error_name(exc)), str(exc))
    raise AssertionError("unreachable")  # context.abort raises


class LogQueryService:
    """The four RPCs over one read core."""

    def __init__(self, core: QueryCore) -> None:
        self._core = core

    def generic_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Query": grpc.unary_unary_rpc_method_handler(self.query),
            "Stats": grpc.unary_unary_rpc_method_handler(self.stats),
            "Export": grpc.unary_stream_rpc_method_handler(self.export),
            "Tail": grpc.unary_stream_rpc_method_handler(self.tail),
        })

    # -- RPCs ------------------------------------------------------------------------------
    def query(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        key, request = self._begin(data, context, pb.QueryRequest)
        rows, token = self._call(context, lambda: self._core.query(
            key, filter_of(request.filter), limit=request.limit,
            newest_first=request.order == pb.NEWEST_FIRST, page_token=request.page_token,
            peer=context.peer(), via="grpc"))
        response = pb.QueryResponse(records=[_record(r) for r in rows], next_page_token=token)
        return response.SerializeToString()

    def stats(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        key, request = self._begin(data, context, pb.StatsRequest)
        s = self._call(context, lambda: self._core.stats(
            key, filter_of(request.filter), bucket_s=request.bucket_seconds,
            peer=context.peer(), via="grpc"))
        response = pb.StatsResponse(
            total=s.total, unique_users=s.unique_users,
            error_rate=s.errors / s.total if s.total else 0.0,
            avg_duration_ms=s.avg_duration_ms, with_duration=s.with_duration,
            bucket_seconds=s.bucket_ns // 1_000_000_000,
            by_category=[pb.Count(key=k, count=n) for k, n in s.by_category],
            by_severity=[pb.Count(key=k, count=n) for k, n in s.by_severity],
            by_event_type=[pb.Count(key=k, count=n) for k, n in s.by_event_type],
            by_status=[pb.Count(key=k, count=n) for k, n in s.by_status],
            by_service=[pb.Count(key=k, count=n) for k, n in s.by_service],
            buckets=[pb.Bucket(start_unix_nano=b, count=n, errors=e) for b, n, e in s.buckets],
            category_buckets=[pb.SeriesPoint(start_unix_nano=b, key=k, count=n)
                              for b, k, n in s.category_buckets],
            severity_buckets=[pb.SeriesPoint(start_unix_nano=b, key=k, count=n)
                              for b, k, n in s.severity_buckets],
        )
        return response.SerializeToString()

    def export(self, data: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        key, request = self._begin(data, context, pb.ExportRequest)
        fmt = _FORMATS.get(request.format)
        compression = _COMPRESSIONS.get(request.compression)
        if fmt is None or compression is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown export format or compression")
        with contextlib.ExitStack() as stack:
            chunks = self._call(context, lambda: stack.enter_context(self._core.export(
                key, filter_of(request.filter), fmt=fmt or "jsonl",
                compression=compression or "none", newest_first=request.order == pb.NEWEST_FIRST,
                max_records=request.max_records, peer=context.peer(), via="grpc")))
            for chunk in chunks:
                if not context.is_active():
                    return
                yield pb.ExportChunk(data=chunk).SerializeToString()

    def tail(self, data: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        key, request = self._begin(data, context, pb.TailRequest)
        with contextlib.ExitStack() as stack:
            cursor = self._call(context, lambda: stack.enter_context(self._core.tail(
                key, filter_of(request.filter), peer=context.peer(), via="grpc")))
            # An empty first message confirms the subscription: records indexed from now on
            # will be sent.
            yield b""
            while context.is_active() and not cursor.closing:
                rows = cursor.poll()
                for start in range(0, len(rows), 500):
                    yield pb.TailResponse(
                        records=[_record(r) for r in rows[start:start + 500]]
                    ).SerializeToString()
                if not rows:
                    cursor.wait(TAIL_CHECK_S)

    # -- plumbing --------------------------------------------------------------------------
    def _begin(self, data: bytes, context: grpc.ServicerContext, message: type[_Req]
               ) -> tuple[ApiKeyConfig, Any]:
        """The caller's key and the parsed request; aborts the call when either is bad."""
        key = self._call(context, lambda: self._core.authenticate(context.invocation_metadata()))
        try:
            request = message.FromString(data)
        except ProtobufDecodeError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a sluice.v1.{message.__name__}")
        return key, request

    @staticmethod
    def _call(context: grpc.ServicerContext, work: Callable[[], _T]) -> _T:
        try:
            return work()
        except (ReadError, InvalidFilter) as exc:
            _abort(context, exc)
