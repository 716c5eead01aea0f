"""Bytes → Batch, once per Export request.

The gRPC layer hands us the raw request bytes (already gunzipped by gRPC when the client sent
`grpc-encoding: gzip`) so that undecodable input becomes `DecodeError` → `INVALID_ARGUMENT`;
grpcio's own deserializer would answer `INTERNAL`, which OTLP clients treat differently.
"""

from __future__ import annotations

import time

from google.protobuf.message import DecodeError as _ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sluice_collector.batch import Batch, Signal
from sluice_collector.batch import Request as _Request
from sluice_collector.errors import DecodeError, RequestTooLarge

REQUEST_TYPES: dict[Signal, type[_Request]] = {
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
}


def decode_request(signal: Signal, data: bytes, *, max_bytes: int, tenant: str = "") -> Batch:
    """Parse one Export request; raise DecodeError or RequestTooLarge with a client-safe reason."""
    if len(data) > max_bytes:
        raise RequestTooLarge(
            f"request of {len(data)} bytes is over the receiver's limit of {max_bytes} bytes; "
            "send smaller batches"
        )
    request = REQUEST_TYPES[signal]()
    try:
        request.ParseFromString(data)
    except _ProtobufDecodeError as exc:
        raise DecodeError(f"not a valid OTLP {signal.value} Export request: {exc}") from None
    except RecursionError:
        raise DecodeError(
            f"not a valid OTLP {signal.value} Export request: values nested too deeply"
        ) from None
    return Batch(
        signal=signal, request=request, received_unix_nano=time.time_ns(), tenant=tenant, raw=data
    )
