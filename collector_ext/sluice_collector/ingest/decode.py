"""Request bytes → Batch, once per Export request, from OTLP protobuf or OTLP JSON.

Front doors hand over the raw (already decompressed) body so that undecodable input becomes
`DecodeError` → INVALID_ARGUMENT / HTTP 400; grpcio's own deserializer would answer
`INTERNAL`, which OTLP clients treat differently.

OTLP JSON is the protobuf JSON mapping with the differences the OTLP specification makes:
`traceId`, `spanId` and `parentSpanId` are hex strings (not base64), enums are integers, 64-bit
integers may be strings or numbers, field names may be lowerCamelCase or the proto names, and
unknown fields are ignored. orjson parses the text; `otlpjson` builds the message (protobuf's
generic `json_format` was ten times slower than the whole gRPC path).

`Batch.raw` is what the masking stage's pre-scan reads: the protobuf body as it came, or, for a
JSON body, the decoded request encoded as protobuf (about 1 µs per record, and it lets the
pre-scan find the few records worth masking instead of walking every string of every record).
"""

from __future__ import annotations

import enum
import time
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as _ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sluice_collector.batch import Batch, Signal
from sluice_collector.batch import Request as _Request
from sluice_collector.errors import DecodeError, RequestTooLarge
from sluice_collector.ingest.otlpjson import OtlpJsonError, parse_into


class Encoding(enum.StrEnum):
    """How an Export request body is encoded (OTLP/gRPC is always protobuf)."""

    PROTOBUF = "protobuf"
    JSON = "json"


REQUEST_TYPES: dict[Signal, type[_Request]] = {
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
}
# Messages nested this deep at most, as protobuf's own binary decoder allows.
MAX_JSON_DEPTH = 100


def decode_request(
    signal: Signal, data: bytes, *, max_bytes: int, tenant: str = "",
    encoding: Encoding = Encoding.PROTOBUF,
) -> Batch:
    """Parse one Export request; raise DecodeError or RequestTooLarge with a client-safe reason."""
    if len(data) > max_bytes:
        raise RequestTooLarge(
            f"request of {len(data)} bytes is over the receiver's limit of {max_bytes} bytes; "
            "send smaller batches"
        )
    request = REQUEST_TYPES[signal]()
    if encoding is Encoding.JSON:
        _parse_json(signal, data, request)
        raw = request.SerializeToString()
    else:
        try:
            request.ParseFromString(data)
        except _ProtobufDecodeError as exc:
            raise DecodeError(f"not a valid OTLP {signal.value} Export request: {exc}") from None
        except RecursionError:
            raise DecodeError(
                f"not a valid OTLP {signal.value} Export request: values nested too deeply"
            ) from None
        raw = data
    return Batch(
        signal=signal, request=request, received_unix_nano=time.time_ns(), tenant=tenant, raw=raw,
        body=data,
    )


def _parse_json(signal: Signal, data: bytes, request: _Request) -> None:
    what = f"not a valid OTLP/JSON {signal.value} Export request"
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{what}: {exc}") from None
    try:
        parse_into(obj, request, max_depth=MAX_JSON_DEPTH)
    except OtlpJsonError as exc:
        raise DecodeError(f"{what}: {exc}") from None


def encode_response(response: Any, encoding: Encoding) -> bytes:
    """An Export*ServiceResponse in the request's encoding (OTLP JSON uses lowerCamelCase)."""
    if encoding is Encoding.JSON:
        return json_format.MessageToJson(response, indent=None).encode("utf-8")
    data: bytes = response.SerializeToString()
    return data


__all__ = ["MAX_JSON_DEPTH", "REQUEST_TYPES", "Encoding", "decode_request", "encode_response"]
