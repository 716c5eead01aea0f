"""The unit of work of every pipeline stage: one decoded OTLP Export request.

A batch is decoded once. Masking rewrites strings in the request — on the decoded messages, or
on its encoding (`raw`), which is then decoded once more in place — the router fills `routes`,
and sinks serialise what they need from the same messages. Records are
addressed by reference triples (resource-level message, scope-level message, record) so that a
sink can read the resource and scope of a record without copying them per record.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Signal(enum.StrEnum):
    """The three OTLP signals; the value is the name used in config, paths and metrics."""

    LOGS = "logs"
    TRACES = "traces"
    METRICS = "metrics"


Request: TypeAlias = ExportLogsServiceRequest | ExportTraceServiceRequest | ExportMetricsServiceRequest

# (ResourceLogs, ScopeLogs, LogRecord) | (ResourceSpans, ScopeSpans, Span)
# | (ResourceMetrics, ScopeMetrics, Metric). The protobuf classes are generated, hence Any.
RecordRef: TypeAlias = tuple[Any, Any, Any]


@dataclass(slots=True, eq=False)
class Batch:
    """One Export request on its way through the pipeline.

    `routes` maps a category name to the records of that category, in request order; it is
    filled by the router and read by sinks. Stages that drop records remove them from `request`
    before routing and count them in `dropped`.
    """

    signal: Signal
    request: Request
    received_unix_nano: int
    tenant: str = ""
    # The request as protobuf: as it arrived (after gunzip), or re-encoded from OTLP JSON. Stages
    # may scan it (one RE2 pass finds the few records worth masking) but never re-parse it;
    # `request` is the decoded truth.
    raw: bytes = b""
    # The request body exactly as received, in any encoding: a retry sends the same bytes, so
    # this is what tells a retry apart from new data (`Pipeline`, "refused means nothing kept").
    body: bytes = b""
    # Set by a stage that changes `request` without it showing in `masked`, `dropped` or
    # `rejected`: from then on `raw` no longer encodes the request (see `encoded`).
    request_changed: bool = False
    # Set by the masking stage when it rewrote `raw` itself (masking on the wire, see
    # processors/wiremask.py) and decoded `request` from it: `raw` still encodes the request
    # after what that stage masked and dropped.
    raw_current: bool = False
    routes: dict[str, list[RecordRef]] = field(default_factory=dict)
    # Each routed log record's attributes (key → plain value), parallel to `routes[category]`:
    # read them through `attributes_of`. The Python router fills it as it reads every record;
    # on the compiled path a category's dicts are built on first use from `wire_index`, so a
    # config whose sinks need none (JSON lines to fixed paths, no alert rules) builds none.
    # Read-only for sinks: they serialise from it instead of walking the protobuf attributes.
    route_attributes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # The position of each routed record in request order, parallel to `routes[category]`, and
    # the compiled path's index of the request's encoding (`fastpath.index_batch`, built by the
    # router after the last stage that changes the request; None on the Python path).
    route_positions: dict[str, list[int]] = field(default_factory=dict)
    wire_index: Any = None
    # Records refused as invalid (reported to the client as OTLP partial_success).
    rejected: int = 0
    rejected_reason: str = ""
    # Records removed on purpose by a processor (e.g. a masking rule whose action is `drop`).
    dropped: int = 0
    # Masked values per detector name, for /metrics.
    masked: Counter[str] = field(default_factory=Counter)
    # Batches a stage derived from this one (the access records of HTTP server spans, a LOGS
    # batch born from a TRACES one), already routed. They flow on with this batch: every sink
    # takes the whole `family()` in one `consume`, and they are acknowledged or refused with it.
    derived: list[Batch] = field(default_factory=list)

    def attributes_of(self, category: str) -> list[dict[str, Any]] | None:
        """The attribute dicts of the records routed to `category` (parallel to
        `routes[category]`), built from the wire index on first use; None when neither the
        router nor an index has them (the caller then reads the records)."""
        ready = self.route_attributes.get(category)
        if ready is None and self.wire_index is not None:
            positions = self.route_positions.get(category)
            if positions is not None:
                ready = self.route_attributes[category] = self.wire_index.attributes(positions)
        return ready

    def records(self) -> list[RecordRef]:
        """Every record of the request as a reference triple, in request order."""
        return list(iter_records(self.signal, self.request))

    def record_count(self) -> int:
        return count_records(self.signal, self.request)

    def encoded(self) -> bytes:
        """The protobuf encoding of `request` as it is now: `raw` while no stage changed the
        request (nothing masked, dropped, rejected or otherwise changed) or masking rewrote `raw`
        itself (`raw_current`), else a fresh serialisation. Whatever reads records from bytes
        must read these."""
        masked = (self.masked or self.dropped) and not self.raw_current
        if self.raw and not (self.request_changed or masked or self.rejected):
            return self.raw if type(self.raw) is bytes else bytes(self.raw)
        data: bytes = self.request.SerializeToString()
        return data

    def family(self) -> list[Batch]:
        """This batch, then the batches derived from it: what a sink's `consume` stores."""
        return [self, *self.derived] if self.derived else [self]


def iter_records(signal: Signal, request: Request) -> Any:
    """Yield (resource-level, scope-level, record) for every record of `request`."""
    if signal is Signal.LOGS:
        for rl in request.resource_logs:  # type: ignore[union-attr]
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    yield (rl, sl, rec)
    elif signal is Signal.TRACES:
        for rs in request.resource_spans:  # type: ignore[union-attr]
            for ss in rs.scope_spans:
                for span in ss.spans:
                    yield (rs, ss, span)
    else:
        for rm in request.resource_metrics:  # type: ignore[union-attr]
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    yield (rm, sm, metric)


def count_records(signal: Signal, request: Request) -> int:
    """Records as OTLP counts them: log records, spans, or metric data points."""
    if signal is Signal.LOGS:
        n = 0
        for rl in request.resource_logs:  # type: ignore[union-attr]
            for sl in rl.scope_logs:
                n += len(sl.log_records)
        return n
    if signal is Signal.TRACES:
        n = 0
        for rs in request.resource_spans:  # type: ignore[union-attr]
            for ss in rs.scope_spans:
                n += len(ss.spans)
        return n
    total = 0
    for rm in request.resource_metrics:  # type: ignore[union-attr]
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                total += count_data_points(metric)
    return total


def count_data_points(metric: Any) -> int:
    kind = metric.WhichOneof("data")
    if kind is None:
        return 0
    return len(getattr(metric, kind).data_points)
