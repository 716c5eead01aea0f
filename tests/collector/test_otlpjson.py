"""`ingest.otlpjson` builds exactly the message protobuf's own `json_format` builds — on random
requests of every signal that set every field the OTLP protos have — and refuses what it
refuses, saying where."""

from __future__ import annotations

import base64
import math
import random
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from sluice_collector.ingest.otlpjson import OtlpJsonError, parse_into

REQUESTS = [ExportLogsServiceRequest, ExportTraceServiceRequest, ExportMetricsServiceRequest]
HEX_IDS = {"traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"}
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def random_message(message: Message, rnd: random.Random, depth: int = 0) -> None:
    """Set a random selection of `message`'s fields (one member per oneof), recursively."""
    descriptor = message.DESCRIPTOR
    oneofs_done: set[str] = set()
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None:
            if oneof.name in oneofs_done or rnd.random() < 0.5:
                continue
            oneofs_done.add(oneof.name)
        elif rnd.random() < 0.3:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 6:
                continue
            if field.is_repeated:
                for _ in range(rnd.randint(0, 3)):
                    random_message(getattr(message, field.name).add(), rnd, depth + 1)
            else:
                child = getattr(message, field.name)
                child.SetInParent()
                random_message(child, rnd, depth + 1)
        elif field.is_repeated:
            getattr(message, field.name).extend(random_scalar(field, rnd) for _ in range(rnd.randint(0, 4)))
        else:
            setattr(message, field.name, random_scalar(field, rnd))


def random_scalar(field: FieldDescriptor, rnd: random.Random) -> Any:
    kind = field.type
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        return rnd.choice([low, high, 0, 1, rnd.randint(low, high)])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        value = rnd.choice([0.0, -1.5, 1e300, math.inf, -math.inf, rnd.uniform(-1e6, 1e6)])
        return value if kind == FieldDescriptor.TYPE_DOUBLE or not math.isfinite(value) or abs(value) < 1e30 \
            else 1.25
    if kind == FieldDescriptor.TYPE_BOOL:
        return rnd.random() < 0.5
    if kind == FieldDescriptor.TYPE_STRING:
        return rnd.choice(["", "plain", "ünïcödé ✓ 日本", "with \"quotes\" and \\ and \n", "x" * 300])
    if kind == FieldDescriptor.TYPE_BYTES:
        return rnd.randbytes(rnd.choice([0, 1, 8, 16, 33]))
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return rnd.choice(field.enum_type.values).number
    raise AssertionError(f"unexpected field type {kind}")


def to_otlp_json(message: Message, rnd: random.Random) -> Any:
    """What an OTLP/JSON exporter sends: the protobuf JSON mapping with enums as integers, ids as
    hex, and either field spelling."""
    obj = json_format.MessageToDict(message, use_integers_for_enums=True,
                                    preserving_proto_field_name=rnd.random() < 0.3)
    return hex_ids(obj)


def hex_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: base64.b64decode(v).hex() if k in HEX_IDS and isinstance(v, str) else hex_ids(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [hex_ids(v) for v in value]
    return value


@pytest.mark.parametrize("request_type", REQUESTS, ids=lambda t: t.__name__)
def test_random_requests_of_every_signal_come_back_identical(request_type: Any) -> None:
    for seed in range(120):
        rnd = random.Random(seed)
        original = request_type()
        random_message(original, rnd)
        parsed = request_type()
        parse_into(to_otlp_json(original, rnd), parsed)
        assert parsed == original, f"seed {seed}"
        assert parsed.SerializeToString(deterministic=True) == original.SerializeToString(deterministic=True)


def parse_record(obj: dict[str, Any]) -> LogRecord:
    record = LogRecord()
    parse_into(obj, record)
    return record


def test_the_leniencies_of_the_json_mapping_are_accepted() -> None:
    record = parse_record({
        "timeUnixNano": 1700000000000000000, "observed_time_unix_nano": "1700000000000000001",
        "severityNumber": "SEVERITY_NUMBER_WARN", "flags": 1.0, "droppedAttributesCount": "1e1",
        "body": {"doubleValue": "NaN"}, "unknownField": [1, 2], "severityText": None,
        "attributes": [{"key": "inf", "value": {"doubleValue": "-Infinity"}},
                       {"key": "raw", "value": {"bytesValue": "3q2-7w"}},  # URL-safe, unpadded
                       {"key": "empty", "value": {}}],
    })
    reference = LogRecord()
    json_format.ParseDict({
        "timeUnixNano": 1700000000000000000, "observed_time_unix_nano": "1700000000000000001",
        "severityNumber": "SEVERITY_NUMBER_WARN", "flags": 1, "droppedAttributesCount": 10,
        "attributes": [{"key": "inf", "value": {"doubleValue": "-Infinity"}},
                       {"key": "raw", "value": {"bytesValue": "3q2-7w=="}},
                       {"key": "empty", "value": {}}]}, reference)
    assert math.isnan(record.body.double_value)
    record.ClearField("body")
    assert record == reference
    assert record.attributes[2].HasField("value")  # `{}` sets a message field, as json_format does


def test_unknown_enum_names_are_ignored_as_json_format_does() -> None:
    assert parse_record({"severityNumber": "SEVERITY_NUMBER_FROM_THE_FUTURE"}).severity_number == 0


@pytest.mark.parametrize(("obj", "where", "reason"), [
    ({"timeUnixNano": "soon"}, "timeUnixNano", "expected an integer"),
    ({"timeUnixNano": "1.5"}, "timeUnixNano", "expected an integer"),
    ({"timeUnixNano": True}, "timeUnixNano", "boolean"),
    ({"timeUnixNano": 2**64}, "timeUnixNano", "out of range"),
    ({"severityNumber": 2**40}, "severityNumber", "out of range"),
    ({"severityText": 5}, "severityText", "string"),
    ({"body": "text"}, "body", "JSON object"),
    ({"body": {"stringValue": "a", "intValue": "1"}}, "body.intValue", "oneof"),
    ({"attributes": {"key": "k"}}, "attributes", "list"),
    ({"attributes": [{"key": "k", "value": {"arrayValue": {"values": [{"boolValue": "yes"}]}}}]},
     "attributes[0].value.arrayValue.values[0].boolValue", "true or false"),
    ({"traceId": "not hex"}, "traceId", "hex"),
    ({"attributes": [{"key": "b", "value": {"bytesValue": "%%%"}}]}, "attributes[0].value.bytesValue", "base64"),
    ({"flags": [1]}, "flags", "integer"),
])
def test_what_is_not_otlp_json_is_refused_saying_where(obj: dict[str, Any], where: str, reason: str) -> None:
    """Stricter than json_format in places: it ignores an out-of-range enum, keeps a message field
    given a string, and decodes `%%%` as empty bytes; each of those is a 400 here."""
    with pytest.raises(OtlpJsonError) as info:
        parse_record(obj)
    assert str(info.value).startswith(f"{where}: "), str(info.value)
    assert reason in str(info.value)


def test_nesting_is_bounded() -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(60):  # 3 messages per level: AnyValue → KeyValueList → KeyValue
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    with pytest.raises(OtlpJsonError, match="nested too deeply"):
        parse_record({"body": value})
    shallow: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(20):
        shallow = {"kvlistValue": {"values": [{"key": "k", "value": shallow}]}}
    assert parse_record({"body": shallow}).HasField("body")


def test_a_request_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(OtlpJsonError, match="expected a JSON object, got list"):
        parse_into([1], ExportLogsServiceRequest())
