"""The compiled hot path (`sluice_collector._fastpath`) against its pure-Python reference.

Differential tests: the same request goes through the router and the line encoders twice, once
with the compiled twin and once on the Python path, and everything the sinks see must be equal:
the routes, the router's attribute dicts (values and their types, key order) and the bytes of
every file line. Hypothesis builds the requests: every AnyValue type and nesting, duplicate
keys, hostile strings, 64-bit extremes, NaN/Inf/-0.0/subnormal doubles, odd timestamps, empty
and missing fields; and, below, encodings that differ from protobuf's own (unknown fields,
wrong wire types, repeated fields, overlong varints) that upb decodes a particular way.

On the Python path (`SLUICE_PURE_PYTHON=1`, or no extension) the differential tests skip; the
build tests at the end say whether that was on purpose.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import struct
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sluice_collector import encode, fastpath
from sluice_collector.batch import Batch, Signal
from sluice_collector.encode import BatchCache, TimestampFormatter, encode_routes, json_lines
from sluice_collector.ingest.decode import decode_request
from sluice_collector.processors.masking import SecretMasker
from sluice_collector.processors.routing import CategoryRouter
from sluice_collector.processors.validate import RecordValidator
from sluice_collector.service.config import parse_config
from tests.otlp_builders import key_values, log_record, logs_request

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_763_900_000_123_456_789
compiled_only = pytest.mark.skipif(not fastpath.COMPILED, reason=f"compiled path off: {fastpath.OFF_REASON}")
DIFF = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies -------------------------------------------------------------------------------

SPECIALS = ['"', "\\", "/", "\n", "\r", "\t", "\b", "\f", "\x00", "\x01", "\x1f", "\x7f", "\x85",
            "\u2028", "\u2029", "\ufeff", "\ud7ff", "\ue000", "\uffff", "é", "ß", "ı", "ﬁ",
            "\U0001f600", "\U0010ffff", "{trace_id}"]
HUGE = "x" * 70_000 + '"\\\n\u2028'
texts = st.one_of(
    st.text(max_size=24),
    st.lists(st.sampled_from(SPECIALS), max_size=12).map("".join),
    st.sampled_from(["", " ", "INFO", "warn", "Error", "WARNING", "critical", "fatal", "debug",
                     "trace", "ınfo", "straße", "ﬁne", "u-1", "AUTH_LOGIN", "/login", HUGE]),
)
keys = st.one_of(
    st.sampled_from(["a", "b", "", "log.category", "http.route", "http.request.method",
                     "exception.type", "event.name", "service.name", "user.id", "é"]),
    texts,
)
U64 = st.one_of(st.sampled_from([0, 1, 999_999_999, 10**9, 2**63 - 1, 2**63, 2**64 - 1]),
                st.integers(0, 2**64 - 1))
U32 = st.one_of(st.sampled_from([0, 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
I32 = st.one_of(st.integers(-2, 26), st.sampled_from([-(2**31), 2**31 - 1]), st.integers(-(2**31), 2**31 - 1))
INT64 = st.one_of(st.sampled_from([0, -1, 2**53 + 1, -(2**63), 2**63 - 1]), st.integers(-(2**63), 2**63 - 1))
doubles = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e16, 1e-5, 1e-6,
                     1.7976931348623157e308, math.nan, -math.nan, math.inf, -math.inf]),
    st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0]),
)
ids = st.one_of(st.sampled_from([b"", b"\x00" * 16, b"\x00" * 8]), st.binary(min_size=16, max_size=16),
                st.binary(min_size=8, max_size=8), st.binary(max_size=20))


def _array(items: list[AnyValue]) -> AnyValue:
    out = AnyValue()
    out.array_value.values.extend(items)
    return out


def _kvlist(items: list[KeyValue]) -> AnyValue:
    out = AnyValue()
    out.kvlist_value.values.extend(items)
    return out


scalar_values = st.one_of(
    texts.map(lambda s: AnyValue(string_value=s)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    INT64.map(lambda i: AnyValue(int_value=i)),
    doubles.map(lambda d: AnyValue(double_value=d)),
    st.binary(max_size=24).map(lambda b: AnyValue(bytes_value=b)),
    st.just(AnyValue()),  # no member set: None
    st.integers(0, 9).map(lambda i: AnyValue(string_value_strindex=i)),
)


def _kv(key: str, value: AnyValue | None) -> KeyValue:
    return KeyValue(key=key) if value is None else KeyValue(key=key, value=value)


def _kvs(children: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[list[KeyValue]]:
    return st.lists(st.builds(_kv, keys, st.one_of(st.none(), children)), max_size=6)


any_values = st.recursive(
    scalar_values,
    lambda children: st.one_of(st.lists(children, max_size=4).map(_array), _kvs(children).map(_kvlist)),
    max_leaves=10,
)
attribute_lists = _kvs(any_values)


@st.composite
def log_records(draw: st.DrawFn) -> LogRecord:
    rec = LogRecord(
        time_unix_nano=draw(U64), observed_time_unix_nano=draw(U64), severity_number=draw(I32),
        severity_text=draw(texts), dropped_attributes_count=draw(U32), flags=draw(U32),
        trace_id=draw(ids), span_id=draw(ids), event_name=draw(texts),
    )
    if draw(st.booleans()):
        rec.body.CopyFrom(draw(any_values))
    rec.attributes.extend(draw(attribute_lists))
    if draw(st.booleans()):  # the explicit category, valid or not
        rec.attributes.add(key="log.category").value.string_value = draw(
            st.sampled_from(["audit", "payments", "traces", "Bad Name", ""]))
    return rec


@st.composite
def spans(draw: st.DrawFn) -> Span:
    out = Span(
        trace_id=draw(ids), span_id=draw(ids), parent_span_id=draw(ids), trace_state=draw(texts),
        name=draw(texts), kind=draw(I32), start_time_unix_nano=draw(U64), end_time_unix_nano=draw(U64),
        dropped_attributes_count=draw(U32), dropped_events_count=draw(U32), dropped_links_count=draw(U32),
        flags=draw(U32),
    )
    out.attributes.extend(draw(attribute_lists))
    if draw(st.booleans()):
        out.status.CopyFrom(Status(code=draw(I32), message=draw(texts)))
    for _ in range(draw(st.integers(0, 2))):
        event = out.events.add(time_unix_nano=draw(U64), name=draw(texts))
        event.attributes.extend(draw(attribute_lists))
    for _ in range(draw(st.integers(0, 2))):
        link = out.links.add(trace_id=draw(ids), span_id=draw(ids), trace_state=draw(texts))
        link.attributes.extend(draw(attribute_lists))
    return out


resource_attribute_lists = st.one_of(
    attribute_lists,
    texts.map(lambda name: [KeyValue(key="service.name", value=AnyValue(string_value=name))]),
)


@st.composite
def logs_requests(draw: st.DrawFn) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(1, 3))):
        rl = request.resource_logs.add()
        rl.resource.attributes.extend(draw(resource_attribute_lists))
        for _ in range(draw(st.integers(0, 2))):
            sl = rl.scope_logs.add()
            sl.scope.CopyFrom(InstrumentationScope(name=draw(texts), version=draw(texts)))
            sl.scope.attributes.extend(draw(attribute_lists))
            sl.log_records.extend(draw(st.lists(log_records(), max_size=4)))
    return request


@st.composite
def traces_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 3))):
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(draw(resource_attribute_lists))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.CopyFrom(InstrumentationScope(name=draw(texts), version=draw(texts)))
            ss.spans.extend(draw(st.lists(spans(), max_size=3)))
    return request


# -- running both paths -------------------------------------------------------------------------

# Rule sets the router runs: the built-in one; conditions the compiled twin decides first
# (values, prefixes, severities, events, on records and resources); and conditions only the
# Python predicates decide (regexes, scope globs) before and among the others.
ROUTINGS = [
    parse_config("", env={}).routing,
    parse_config(
        "categories:\n"
        "  payments: {match: [{attribute: user.id, equals: u-1}, {attribute: b}]}\n"
        "  audit: {match: [{event_name: AUTH_LOGIN}, {attribute_prefix: 'é'}]}\n"
        "  security: {match: [{severity_at_least: WARN, attribute: http.route}, {attribute: a, equals: ''}]}\n"
        "  late: {match: [{scope: 'shop.*'}, {body_matches: 'pass(word)?='}]}\n",
        env={},
    ).routing,
    parse_config(
        "categories:\n"
        "  payments: {match: [{attribute: user.id, equals: u-1}, {scope: 'shop.*'}]}\n"
        "  audit: {match: [{event_name: AUTH_LOGIN}, {body_matches: 'pass(word)?='}]}\n"
        "  security: {match: [{attribute: http.route, matches: '^/login'}, {attribute: b}]}\n",
        env={},
    ).routing,
]
ROUTING = ROUTINGS[2]


def routed(signal: Signal, request: Any, raw: bytes, *, compiled: bool, routing: Any = ROUTING) -> Batch:
    """A batch as the router leaves it, on the chosen path (the request is parsed from `raw`
    afresh, so the two paths never share a message)."""
    parsed = type(request).FromString(raw)
    batch = Batch(signal, parsed, RECEIVED, raw=raw)
    return CategoryRouter(routing, compiled=compiled)(batch)


def lines_of(batch: Batch, trace_url: str = "") -> tuple[dict[str, list[bytes]], list[str]]:
    """Every category's lines (one cache per batch, as the file sink does), and the attribute
    dicts the encoders hand the file sink for path templates."""
    cache = BatchCache()
    cache.trace_url = trace_url
    cache.record_attrs = []
    ts = TimestampFormatter()
    out = {category: json_lines(batch, category, refs, cache=cache, ts=ts)
           for category, refs in batch.routes.items()}
    return out, [canonical(attrs) for attrs in cache.record_attrs]


def canonical(value: Any) -> str:
    """Values with their types and order, and NaN equal to itself (repr does all three)."""
    return repr(value)


def assert_same(signal: Signal, request: Any, raw: bytes, trace_url: str = "",
                *, expect_index: bool = True, routing: Any = ROUTING) -> Batch:
    fast = routed(signal, request, raw, compiled=True, routing=routing)
    pure = routed(signal, request, raw, compiled=False, routing=routing)
    assert pure.wire_index is None
    if expect_index:
        assert fast.wire_index is not None, "the compiled path did not take this batch"
    assert fast.route_positions == pure.route_positions  # every record in the same category
    if fast.wire_index is not None:  # what the access deriver remembers (processors/access.py)
        for category, refs in pure.routes.items():
            assert fast.wire_index.span_ids(fast.route_positions[category]) == [
                rec.span_id for _rl, _sl, rec in refs if rec.span_id]
    assert {c: len(refs) for c, refs in fast.routes.items()} == {c: len(refs) for c, refs in pure.routes.items()}
    # The compiled router builds a category's attribute dicts only when a sink asks for them;
    # the ones it builds are the Python router's (spans: their lines' attributes, below).
    assert not (set(fast.route_attributes) - set(fast.routes))
    if signal is Signal.LOGS:
        assert canonical({c: fast.attributes_of(c) for c in fast.routes}) == canonical(pure.route_attributes)
    fast_lines, fast_attrs = lines_of(fast, trace_url)
    pure_lines, pure_attrs = lines_of(pure, trace_url)
    assert fast_lines == pure_lines
    assert fast_attrs == pure_attrs
    # Text mode: logs are Python's either way but read the router's dicts; spans stay JSON.
    assert encode_routes(fast, "text") == encode_routes(pure, "text")
    for lines in fast_lines.values():
        for line in lines:
            assert line.endswith(b"\n")
            assert line.count(b"\n") == 1
            orjson.loads(line)
    return fast


# Records drawn from the routing rules' own vocabulary, so that every condition (present,
# absent, on the record or its resource, a string or another value, a severity by number or by
# text) is met often.
ROUTING_KEYS = ["user.id", "a", "b", "é", "éx", "exception.", "exception.type", "http.route",
                "http.request.method", "url.path", "event.name", "log.category"]
routing_values = st.one_of(
    st.sampled_from(["u-1", "u-2", "", "AUTH_LOGIN", "/login", "audit", "app"]).map(
        lambda v: AnyValue(string_value=v)),
    st.sampled_from([AnyValue(int_value=1), AnyValue(bool_value=True), AnyValue(), _kvlist([])]),
)
routing_attributes = st.lists(
    st.builds(_kv, st.sampled_from(ROUTING_KEYS[:-1]), st.one_of(st.none(), routing_values)), max_size=4)


@st.composite
def routing_requests(draw: st.DrawFn) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        rl = request.resource_logs.add()
        rl.resource.attributes.extend(draw(routing_attributes))
        sl = rl.scope_logs.add()
        sl.scope.name = draw(st.sampled_from(["shop.api", "other"]))
        for _ in range(draw(st.integers(1, 6))):
            rec = sl.log_records.add(
                severity_number=draw(st.sampled_from([0, 5, 9, 12, 13, 16, 17, 24, 25, -1])),
                severity_text=draw(st.sampled_from(["", "warn", "WARNING", "error", "Fatal", "info",
                                                    "ınfo", "ERROR" * 4, "x" * 20, "ınfo" * 5])),
                event_name=draw(st.sampled_from(["", "", "AUTH_LOGIN", "other"])),
            )
            rec.body.string_value = draw(st.sampled_from(["ok", "password=x"]))
            rec.attributes.extend(draw(routing_attributes))
            if draw(st.integers(0, 9)) == 0:
                rec.attributes.add(key="log.category").value.CopyFrom(draw(routing_values))
    return request


@compiled_only
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=routing_requests(), routing=st.sampled_from(ROUTINGS))
def test_every_record_is_routed_to_the_same_category_on_both_paths(
    request: ExportLogsServiceRequest, routing: Any,
) -> None:
    assert_same(Signal.LOGS, request, request.SerializeToString(), routing=routing)


TRACE_URLS = st.sampled_from(["", "http://jaeger:16686/trace/{trace_id}",
                              'x"{trace_id}\\{trace_id}\n\u2028é', "no placeholder"])

# -- logs and spans, canonical encodings ---------------------------------------------------------


@compiled_only
@DIFF
@given(request=logs_requests(), trace_url=TRACE_URLS, routing=st.sampled_from(ROUTINGS))
def test_log_routes_attributes_and_lines_are_identical_on_both_paths(
    request: ExportLogsServiceRequest, trace_url: str, routing: Any,
) -> None:
    assert_same(Signal.LOGS, request, request.SerializeToString(), trace_url, routing=routing)


@compiled_only
@DIFF
@given(request=traces_requests(), trace_url=TRACE_URLS)
def test_span_lines_and_their_attributes_are_identical_on_both_paths(
    request: ExportTraceServiceRequest, trace_url: str,
) -> None:
    assert_same(Signal.TRACES, request, request.SerializeToString(), trace_url)


@compiled_only
def test_the_documented_example_record_is_identical_and_the_index_is_used() -> None:
    rec = log_record("user logged in", severity=17, trace_id=b"\x01" * 16, span_id=b"\x02" * 8,
                     attributes={"user.id": "u1", "count": 3, "ok": True, "ratio": 0.5,
                                 "tags": ["a", 1], "nested": {"k": "v"}, "raw": b"\x00\x01"})
    request = logs_request(rec, service="checkout", resource={"host.name": "h1"})
    fast = assert_same(Signal.LOGS, request, request.SerializeToString(),
                       "http://jaeger/trace/{trace_id}")
    assert fast.route_positions == {"error": [0]}


# -- metrics: not compiled, and the switch must leave them alone ---------------------------------


def test_metrics_take_the_python_path_on_both_settings() -> None:
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(key_values({"service.name": "svc"}))
    metric = rm.scope_metrics.add().metrics.add(name="requests", unit="1")
    point = metric.sum.data_points.add(as_double=-0.0, time_unix_nano=2**64 - 1)
    point.attributes.extend(key_values({"route": "/a", "n": 1.5e-7}))
    metric.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    raw = request.SerializeToString()
    fast = routed(Signal.METRICS, request, raw, compiled=True)
    pure = routed(Signal.METRICS, request, raw, compiled=False)
    assert fast.wire_index is None
    assert lines_of(fast) == lines_of(pure)
    assert b'"value":-0.0' in lines_of(fast)[0]["metrics"][0]


@st.composite
def metrics_requests(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    """Gauges, sums and histograms with drawn attributes and values: not compiled, so these pin
    that the router and the encoders leave metrics to Python on both settings."""
    request = ExportMetricsServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        rm = request.resource_metrics.add()
        rm.resource.attributes.extend(draw(resource_attribute_lists))
        sm = rm.scope_metrics.add()
        sm.scope.name = draw(texts)
        for _ in range(draw(st.integers(0, 3))):
            metric = sm.metrics.add(name=draw(texts), unit=draw(texts), description=draw(texts))
            kind = draw(st.sampled_from(["gauge", "sum", "histogram"]))
            points = getattr(metric, kind).data_points
            for _ in range(draw(st.integers(0, 2))):
                point = points.add(time_unix_nano=draw(U64), start_time_unix_nano=draw(U64))
                point.attributes.extend(draw(attribute_lists))
                if kind == "histogram":
                    point.count = draw(U64)
                    point.sum = draw(doubles)
                    point.explicit_bounds.extend(draw(st.lists(doubles, max_size=3)))
                    point.bucket_counts.extend(draw(st.lists(U64, max_size=4)))
                elif draw(st.booleans()):
                    point.as_double = draw(doubles)
                else:
                    point.as_int = draw(INT64)
    return request


@DIFF
@given(request=metrics_requests())
def test_metric_lines_are_identical_on_both_paths(request: ExportMetricsServiceRequest) -> None:
    raw = request.SerializeToString()
    fast = routed(Signal.METRICS, request, raw, compiled=True)
    pure = routed(Signal.METRICS, request, raw, compiled=False)
    assert fast.wire_index is None
    assert lines_of(fast) == lines_of(pure)
    assert encode_routes(fast, "text") == encode_routes(pure, "text")


# -- deep and hostile values --------------------------------------------------------------------


def _nested(depth: int) -> Any:
    """A value `depth` levels deep, alternating kvlists and arrays."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value, level] if level % 2 else {"k": value, "n": -0.0}
    return value


UPB_DEEPEST = 38  # the deepest value in a log record's attributes and body that upb decodes


def test_upb_refuses_values_nested_deeper_than_the_compiled_path_is_tested_on() -> None:
    """The decoder bounds nesting before either path runs; the deep tests below sit at its limit."""
    deepest = logs_request(log_record(_nested(UPB_DEEPEST), attributes={"deep": _nested(UPB_DEEPEST)}))
    ExportLogsServiceRequest.FromString(deepest.SerializeToString())
    deeper = logs_request(log_record(attributes={"deep": _nested(UPB_DEEPEST + 1)}))
    with pytest.raises(DecodeError):
        ExportLogsServiceRequest.FromString(deeper.SerializeToString())


@compiled_only
@pytest.mark.parametrize("depth", [0, 1, 2, 7, UPB_DEEPEST])
def test_deep_values_are_identical_on_both_paths(depth: int) -> None:
    deep = _nested(depth)
    request = logs_request(log_record(deep, attributes={"deep": deep, "http.route": "/x"}))
    assert_same(Signal.LOGS, request, request.SerializeToString(), routing=ROUTINGS[0])
    traces = ExportTraceServiceRequest()
    span = traces.resource_spans.add().scope_spans.add().spans.add(name="s", trace_id=b"\x01" * 16)
    span.attributes.extend(key_values({"deep": _nested(min(depth, UPB_DEEPEST - 2))}))
    assert_same(Signal.TRACES, traces, traces.SerializeToString())


@compiled_only
def test_values_nested_past_any_decoder_limit_are_refused_not_followed() -> None:
    """Bytes no decoder would accept (300 levels): Unsupported, never a deep C recursion."""
    value = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(300):
        value = _len(5, _len(1, value))  # array_value { values: [value] }
    rec = _len(6, _len(1, b"k") + _len(2, value))
    raw = _len(1, _len(2, _len(2, rec)))
    with pytest.raises(_ext().Unsupported, match="nested too deeply"):
        _ext().WireIndex(0, raw)


@compiled_only
@pytest.mark.parametrize("bad", [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"a\xf4\x90\x80\x80", b"\xe2\x82"])
def test_invalid_utf8_never_reaches_either_path(bad: bytes) -> None:
    """upb refuses a request with a string that is not UTF-8 (lone surrogates included, as
    CESU bytes; Python cannot even build one), so there is nothing to replace; the compiled
    reader refuses the same bytes itself rather than write them."""
    for rec in (_len(6, _len(1, bad) + _len(2, _len(1, b"v"))),  # a key
                _len(6, _len(1, b"k") + _len(2, _len(1, bad))),  # a string value
                _len(5, _len(1, bad)),  # the body
                _len(3, bad)):  # severity_text
        raw = _len(1, _len(2, _len(2, rec)))
        with pytest.raises(DecodeError):
            ExportLogsServiceRequest.FromString(raw)
        with pytest.raises(_ext().Unsupported):
            _ext().WireIndex(0, raw)
    with pytest.raises(UnicodeEncodeError):
        AnyValue(string_value="\ud800")


@st.composite
def mangled(draw: st.DrawFn) -> tuple[Signal, Any, bytes]:
    """A valid request's encoding with bytes flipped, cut or inserted."""
    signal = draw(st.sampled_from([Signal.LOGS, Signal.TRACES]))
    request = draw(logs_requests() if signal is Signal.LOGS else traces_requests())
    data = bytearray(request.SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return signal, request, bytes(data)


@compiled_only
@DIFF
@given(case=mangled())
def test_mangled_encodings_are_read_as_upb_reads_them_or_refused(case: tuple[Signal, Any, bytes]) -> None:
    """Any bytes at all: the index is built or Unsupported is raised (nothing else, no crash);
    what upb decodes, both paths write alike."""
    signal, request, raw = case
    try:
        _ext().WireIndex(0 if signal is Signal.LOGS else 1, raw)
    except _ext().Unsupported:
        pass
    try:
        type(request).FromString(raw)
    except DecodeError:
        return
    assert_same(signal, request, raw, expect_index=False)


@st.composite
def located_cases(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]]]:
    """An encoding of any signal (valid, or mangled as above) and sorted, disjoint byte spans."""
    signal = draw(st.sampled_from([Signal.LOGS, Signal.TRACES, Signal.METRICS]))
    request = draw({Signal.LOGS: logs_requests(), Signal.TRACES: traces_requests(),
                    Signal.METRICS: metrics_requests()}[signal])
    data = bytearray(request.SerializeToString())
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data)))
            if draw(st.booleans()) and at < len(data):
                data[at] ^= 1 << draw(st.integers(0, 7))
            else:
                data[at:at] = draw(st.binary(min_size=1, max_size=11))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    spans = [(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False) if a < b]
    return bytes(data), spans


@compiled_only
@DIFF
@given(case=located_cases())
def test_the_raw_scan_is_located_alike_on_both_paths(case: tuple[bytes, list[tuple[int, int]]]) -> None:
    """Which resources, scopes, records and record fields a span falls in: the compiled twin
    gives the reference's answer, or refuses (Unsupported) and leaves the answer to it; it
    never accepts an encoding the reference refuses."""
    from sluice_collector.processors.wirescan import Located, WireFormatError, locate, locate_python

    data, spans = case
    try:
        expected: Located | None = locate_python(data, spans)
    except WireFormatError:
        expected = None
    try:
        resources, scopes, records, parts, elsewhere = _ext().locate(data, spans)
    except _ext().Unsupported:
        got = None
    else:
        got = Located(resources, scopes, records, parts, elsewhere)
        assert expected is not None, "the compiled twin accepted what the reference refuses"
        assert got == expected
    if expected is not None:
        assert locate(data, spans) == expected


@compiled_only
def test_error_paths_release_what_they_took() -> None:
    """Every way a call can fail, many times over: memory traced by tracemalloc (objects and
    PyMem buffers alike) does not grow and the arguments' reference counts do not change, so
    no error path keeps a reference or a buffer."""
    import gc
    import tracemalloc

    ext = _ext()
    request = logs_request(*[log_record("x" * 40, attributes={"k": [1, {"a": b"z"}], "s": "v" * 60},
                                        trace_id=b"\x01" * 16) for _ in range(40)])
    raw = request.SerializeToString()
    index = ext.WireIndex(0, raw)
    tables = ([b"{}"], [b'"svc"'], [b"{}"])
    deep = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(250):
        deep = _len(5, _len(1, deep))
    bad_calls: list[Any] = [
        lambda: ext.WireIndex(0, raw[:-3]),  # truncated
        lambda: ext.WireIndex(0, raw + _len(1, _len(2, _len(2, _len(6, _len(1, b"k") + _len(2, deep)))))),
        lambda: ext.WireIndex(0, raw[:200] + b"\xff" * 12),
        lambda: ext.WireIndex(2, raw),
        lambda: ext.WireIndex(0, "not bytes"),
        lambda: index.attributes([0, 1, 10**6]),
        lambda: index.attributes([0, "x"]),
        lambda: index.attributes(5),
        lambda: index.lines([0, 1, 10**6], b'"c"', *tables, 0, None),
        lambda: index.lines([0], b'"c"', [b"{}"], [b'"svc"'], [], 0, None),
        lambda: index.lines([0], b'"c"', [1], [b'"svc"'], [b"{}"], 0, None),
        lambda: index.lines([0], b'"c"', *tables, 0, ("a", "b")),
        lambda: index.classify(([[(0, (b"k",)), (0, "x")]], b"log.category", [])),
        lambda: index.classify(([[(1,)]], b"log.category", [(b"INFO", 9)])),
        lambda: index.classify(([[(3, b"k")]], b"log.category", [])),
        lambda: index.classify(([], b"log.category", [(b"INFO", "nine")])),
        lambda: index.classify("nonsense"),
        lambda: index.classify(([], b"log.category", ["INFO"])),
        lambda: ext.WireIndex(1, raw).classify(([], b"log.category", [])),
        lambda: ext.format_float("x"),
        lambda: ext.json_string(b"x"),
        lambda: ext.rfc3339(-1),
        lambda: ext.locate(raw[:-3], [(0, len(raw))]),
        lambda: ext.locate(raw, [(0, 5), "x"]),
        lambda: ext.locate(raw, [(0,)]),
        lambda: ext.locate(raw, ((0, 5),)),
    ]

    def fail_all() -> None:
        for call in bad_calls:
            with pytest.raises((ValueError, TypeError, IndexError, OverflowError, MemoryError)):
                call()
        index.attributes()
        index.lines(None, b'"c"', *tables, 0, (b"u/", b""))
        index.classify(([[(0, (b"k",))], [(9,)]], b"log.category", [(b"INFO", 9)]))
        ext.locate(raw, [(0, 3), (100, 120), (len(raw) - 9, len(raw))])

    for _ in range(20):  # warm up: caches, interned strings, exception machinery
        fail_all()
    gc.collect()
    watched = [raw, index, *tables, *(item for table in tables for item in table)]
    counts = [sys.getrefcount(obj) for obj in watched]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            fail_all()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # One leaked object or buffer per call would be >= 300 x 16 bytes per failing call.
    assert grown < 16 * 1024, f"{grown} bytes kept by 300 rounds of failing calls"
    # ...and a leaked reference to an argument shows in its count.
    assert [sys.getrefcount(obj) for obj in watched] == counts


# -- encodings that are not protobuf's own: read as upb reads them, or handed back -------------


def _varint(n: int, overlong: bool = False) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n or overlong:
            out.append(byte | 0x80)
            if not n and overlong:
                out.append(0)
                break
        else:
            out.append(byte)
            break
    return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _len(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _fixed64(number: int, value: int) -> bytes:
    return _tag(number, 1) + struct.pack("<Q", value)


# Byte strings appended to an encoded LogRecord: each means something precise to upb.
RECORD_NOISE = [
    _tag(99, 0) + _varint(5),  # unknown varint field
    _tag(98, 5) + b"\x01\x02\x03\x04",  # unknown fixed32
    _fixed64(97, 7),  # unknown fixed64
    _len(96, b"\xff\x00garbage"),  # unknown length-delimited
    _tag(95, 3) + _tag(1, 0) + _varint(1) + _tag(2, 3) + _tag(2, 4) + _tag(95, 4),  # unknown group
    _tag(1, 0) + _varint(123),  # time_unix_nano with the wrong wire type: an unknown field
    _tag(5, 0) + _varint(1),  # body with the wrong wire type
    _tag(6, 5) + b"\x00\x00\x00\x00",  # attributes with the wrong wire type
    _fixed64(1, 2**64 - 1),  # time again: the last one wins
    _tag(2, 0) + _varint(2**64 - 1),  # severity_number as a 10-byte varint: -1
    _tag(2, 0) + _varint(17, overlong=True),  # an overlong varint
    _tag(7, 0) + _varint(2**40 + 3),  # dropped_attributes_count past 32 bits: truncated
    _len(3, "wärning".encode()),  # severity_text again
    _len(9, b"\x07" * 16),  # trace_id again
    _len(12, b"EVT"),  # event_name again
    _len(5, AnyValue(int_value=7).SerializeToString()),  # body again: protobuf merges the two
    _len(6, KeyValue(key="a", value=AnyValue(bool_value=True)).SerializeToString()),  # a duplicate key
    _len(6, _len(1, b"k") + _len(2, AnyValue(string_value="v").SerializeToString())
         + _len(2, AnyValue(int_value=1).SerializeToString())),  # KeyValue.value twice: merged
    _len(6, _len(1, b"k") + _len(2, _len(1, b"s") + _tag(3, 0) + _varint(9))),  # last oneof member wins
    _len(6, _len(1, b"k") + _len(2, _len(6, b"") + _len(1, b"s") + _len(6, _len(1, _len(1, b"x"))))),
    _len(6, _len(1, b"k") + _len(2, _len(5, _len(1, _tag(3, 0) + b"\x01"))
                                   + _len(5, _len(1, _tag(3, 0) + b"\x02")))),  # array_value twice: merged
    _len(6, _len(1, b"k") + _len(2, _len(6, _len(1, _len(1, b"x") + _len(2, _len(1, b"1"))))
                                   + _len(6, _len(1, _len(1, b"y"))))),  # kvlist_value twice: merged
    _len(6, _len(1, b"k") + _len(2, _tag(1, 0) + _varint(3))),  # string_value as a varint: unset
    _len(6, _tag(3, 0) + _varint(4) + _len(1, b"kk")),  # key_strindex, then the key
]


@st.composite
def noisy_logs(draw: st.DrawFn) -> tuple[ExportLogsServiceRequest, bytes]:
    """A request and an encoding of it with noise in records, scopes, resources and the top."""
    request = draw(logs_requests())
    out = b""
    for rl in request.resource_logs:
        body = _len(1, rl.resource.SerializeToString())
        for sl in rl.scope_logs:
            scope = _len(1, sl.scope.SerializeToString())
            for rec in sl.log_records:
                noise = b"".join(draw(st.lists(st.sampled_from(RECORD_NOISE), max_size=3)))
                scope += _len(2, rec.SerializeToString() + noise)
            scope += draw(st.sampled_from([b"", _len(3, b"https://schema"), _tag(99, 0) + b"\x01",
                                           _len(1, InstrumentationScope(name="again").SerializeToString())]))
            body += _len(2, scope)
        body += draw(st.sampled_from([b"", _len(1, Resource(dropped_attributes_count=1).SerializeToString()),
                                      _tag(77, 1) + b"\x00" * 8]))
        out += _len(1, body) + draw(st.sampled_from([b"", _tag(50, 0) + b"\x00"]))
    return request, out


@compiled_only
@DIFF
@given(case=noisy_logs(), trace_url=TRACE_URLS, routing=st.sampled_from(ROUTINGS))
def test_encodings_upb_reads_its_own_way_give_the_same_lines(
    case: tuple[ExportLogsServiceRequest, bytes], trace_url: str, routing: Any,
) -> None:
    request, raw = case
    try:
        ExportLogsServiceRequest.FromString(raw)
    except DecodeError:  # not every combination is a valid request; those never get here
        assume(False)
    assert_same(Signal.LOGS, request, raw, trace_url, routing=routing)


@compiled_only
def test_a_merged_field_on_the_wire_is_read_from_a_fresh_serialisation() -> None:
    rec = log_record("first").SerializeToString() + _len(5, AnyValue(int_value=7).SerializeToString())
    raw = _len(1, _len(2, _len(2, rec)))
    batch = assert_same(Signal.LOGS, ExportLogsServiceRequest(), raw)
    assert batch.wire_index is not None
    lines, _ = lines_of(batch)
    assert b'"body":7' in lines["app"][0]  # merged as upb merges: the last member of the oneof


@compiled_only
@DIFF
@given(request=traces_requests(), noise=st.lists(st.sampled_from([
    _tag(99, 0) + b"\x05", _len(5, b"renamed"), _tag(6, 0) + _varint(2**64 - 1), _fixed64(7, 0),
    _len(15, Status(code=2).SerializeToString()),  # status again: merged
    _len(11, Span.Event(name="late").SerializeToString()), _tag(10, 5) + b"\x00\x00\x00\x00",
]), max_size=3))
def test_span_encodings_upb_reads_its_own_way_give_the_same_lines(
    request: ExportTraceServiceRequest, noise: list[bytes],
) -> None:
    out = b""
    for rs in request.resource_spans:
        body = _len(1, rs.resource.SerializeToString())
        for ss in rs.scope_spans:
            scope = _len(1, ss.scope.SerializeToString())
            for one in ss.spans:
                scope += _len(2, one.SerializeToString() + b"".join(noise))
            body += _len(2, scope)
        out += _len(1, body)
    assert_same(Signal.TRACES, request, out)


# -- masking: the compiled path reads what masking left ---------------------------------------

SECRETS = ["password=hunter2Xyz", "jane.roe@example.com", "card 4111 1111 1111 1111",
           "gh" + "p_" + "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xYz123", "nothing to see"]


@st.composite
def requests_with_secrets(draw: st.DrawFn) -> ExportLogsServiceRequest:
    records = []
    for _ in range(draw(st.integers(1, 5))):
        records.append(log_record(
            draw(st.sampled_from(SECRETS)),
            attributes={"user.email": draw(st.sampled_from(SECRETS)), "n": draw(INT64),
                        "nested": {"dsn": draw(st.sampled_from(SECRETS))}},
        ))
    return logs_request(*records, resource={"owner": draw(st.sampled_from(SECRETS))})


def masked_then_routed(request: Any, *, compiled: bool) -> Batch:
    raw = request.SerializeToString()
    batch = Batch(Signal.LOGS, type(request).FromString(raw), RECEIVED, raw=raw)
    batch = SecretMasker(parse_config("masking: {}\n", env={}).masking)(batch)
    return CategoryRouter(ROUTING, compiled=compiled)(batch)


@compiled_only
@DIFF
@given(request=requests_with_secrets())
def test_masked_values_are_what_the_compiled_path_writes(request: ExportLogsServiceRequest) -> None:
    fast = masked_then_routed(request, compiled=True)
    pure = masked_then_routed(request, compiled=False)
    assert fast.wire_index is not None
    assert lines_of(fast) == lines_of(pure)
    written = b"".join(line for lines in lines_of(fast)[0].values() for line in lines)
    for secret in ("hunter2Xyz", "jane.roe@example.com", "4111 1111 1111 1111", "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xYz123"):
        assert secret.encode() not in written


@DIFF
@given(request=requests_with_secrets())
def test_masking_that_changes_the_request_says_so(request: ExportLogsServiceRequest) -> None:
    """`Batch.encoded` trusts `raw` while masking, validation and dropping counted nothing: a
    masking stage that changed the request without counting it would let raw values through."""
    raw = request.SerializeToString()
    batch = Batch(Signal.LOGS, ExportLogsServiceRequest.FromString(raw), RECEIVED, raw=raw)
    batch = SecretMasker(parse_config("masking: {}\n", env={}).masking)(batch)
    changed = batch.request.SerializeToString() != ExportLogsServiceRequest.FromString(raw).SerializeToString()
    assert changed == bool(batch.masked or batch.dropped)
    assert batch.encoded() == (batch.request.SerializeToString() if changed else raw)


def test_encoded_is_raw_only_while_nothing_changed_the_request() -> None:
    request = logs_request(log_record("a"), log_record("b"))
    raw = request.SerializeToString() + _tag(99, 0) + b"\x01"  # not what serialising gives
    batch = Batch(Signal.LOGS, ExportLogsServiceRequest.FromString(raw), RECEIVED, raw=raw)
    assert batch.encoded() is raw
    batch.request.resource_logs[0].scope_logs[0].log_records[0].body.string_value = "changed"
    batch.request_changed = True
    assert batch.encoded() == batch.request.SerializeToString()
    batch.request_changed = False
    batch.rejected = 1
    assert batch.encoded() == batch.request.SerializeToString()
    assert Batch(Signal.LOGS, request, RECEIVED).encoded() == request.SerializeToString()


# -- the pieces, against their Python counterparts ---------------------------------------------

# The float spelling both paths write: orjson's (>= 3.11.7), pinned here so a change of orjson's
# format fails loudly instead of making the two paths differ.
FLOATS = [(0.0, b"0.0"), (-0.0, b"-0.0"), (1.0, b"1.0"), (100.0, b"100.0"), (0.1, b"0.1"),
          (1e15, b"1000000000000000.0"), (1e16, b"1e+16"), (1.5e300, b"1.5e+300"),
          (1e-5, b"0.00001"), (1.2345e-5, b"0.000012345"), (1e-6, b"1e-6"), (5e-324, b"5e-324"),
          (1.7976931348623157e308, b"1.7976931348623157e+308"), (-2.5, b"-2.5"),
          (math.nan, b"null"), (math.inf, b"null"), (-math.inf, b"null")]


@pytest.mark.parametrize(("value", "spelled"), FLOATS)
def test_float_spelling_is_pinned(value: float, spelled: bytes) -> None:
    assert orjson.dumps(value) == spelled
    if fastpath.COMPILED:
        assert _ext().format_float(value) == spelled


def _ext() -> Any:
    from sluice_collector import _fastpath  # type: ignore[attr-defined]

    return _fastpath


@compiled_only
@settings(max_examples=3000, deadline=None)
@given(value=doubles)
def test_every_float_is_spelled_as_orjson_spells_it(value: float) -> None:
    assert _ext().format_float(value) == orjson.dumps(value)


@compiled_only
@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(), texts))
def test_strings_are_escaped_as_orjson_escapes_them(text: str) -> None:
    assert _ext().json_string(text) == orjson.dumps(text)


@compiled_only
@settings(max_examples=500, deadline=None)
@given(ns=U64)
def test_timestamps_are_spelled_as_the_python_formatter_spells_them(ns: int) -> None:
    assert _ext().rfc3339(ns) == encode.rfc3339(ns)


# -- validation -------------------------------------------------------------------------------


def _rejected_by_python(signal: Signal, raw: bytes) -> int | None:
    """What the validator's walk of the decoded messages rejects (None: upb refuses `raw`)."""
    kind = ExportLogsServiceRequest if signal is Signal.LOGS else ExportTraceServiceRequest
    try:
        request = kind.FromString(raw)
    except DecodeError:
        return None
    return RecordValidator()(Batch(signal, request, 0)).rejected  # no `raw`: the Python walk


def _assert_counted_alike(signal: Signal, raw: bytes) -> None:
    """Where upb decodes `raw` (the validator only ever sees such bytes) and the compiled reader
    answers, both count the same records (Unsupported sends the validator to its walk)."""
    expected = _rejected_by_python(signal, raw)
    if expected is None:
        return
    try:
        found = _ext().count_invalid(0 if signal is Signal.LOGS else 1, raw)
    except _ext().Unsupported:
        return
    assert found == expected


@compiled_only
@DIFF
@given(signal=st.sampled_from([Signal.LOGS, Signal.TRACES]), data=st.data())
def test_invalid_records_are_counted_alike_on_both_paths(signal: Signal, data: st.DataObject) -> None:
    """`count_invalid` (the compiled validator's answer) is the number of records the Python
    walk rejects: ids of every length, times on both sides of 2^63, span events."""
    request = data.draw(logs_requests() if signal is Signal.LOGS else traces_requests())
    _assert_counted_alike(signal, request.SerializeToString())


@compiled_only
@DIFF
@given(case=noisy_logs())
def test_invalid_records_are_counted_alike_in_odd_encodings(case: tuple[ExportLogsServiceRequest, bytes]) -> None:
    _assert_counted_alike(Signal.LOGS, case[1])


@compiled_only
@DIFF
@given(case=mangled())
def test_invalid_records_are_counted_alike_in_mangled_encodings(case: tuple[Signal, Any, bytes]) -> None:
    signal, _request, raw = case
    _assert_counted_alike(signal, raw)


@compiled_only
def test_the_compiled_validator_rejects_what_python_rejects() -> None:
    """End to end through RecordValidator with `raw`: the bad record is found from the bytes,
    then removed by the walk; a valid batch is left untouched."""
    good = ExportLogsServiceRequest()
    records = good.resource_logs.add().scope_logs.add().log_records
    records.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, time_unix_nano=2**63 - 1)
    batch = RecordValidator()(decode_request(Signal.LOGS, good.SerializeToString(), max_bytes=1 << 20))
    assert batch.rejected == 0
    assert _ext().count_invalid(0, good.SerializeToString()) == 0
    records.add(trace_id=b"\x01" * 15)
    records.add(time_unix_nano=2**63)
    batch = RecordValidator()(decode_request(Signal.LOGS, good.SerializeToString(), max_bytes=1 << 20))
    assert _ext().count_invalid(0, good.SerializeToString()) == 2
    assert batch.rejected == 2
    assert len(batch.request.resource_logs[0].scope_logs[0].log_records) == 1  # type: ignore[union-attr]


@compiled_only
@pytest.mark.parametrize(("field", "bad"), [
    ("trace_id", b"\x01" * 15), ("span_id", b"\x02" * 9), ("start_time_unix_nano", 2**63),
    ("end_time_unix_nano", 2**64 - 1), ("event", 2**63),
])
def test_each_span_check_is_made_from_the_bytes(field: str, bad: Any) -> None:
    """One bad span among good ones, each check on its own: found from the bytes alone."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for _ in range(3):
        span = spans.add(name="ok", trace_id=b"\x01" * 16, span_id=b"\x02" * 8,
                         start_time_unix_nano=1, end_time_unix_nano=2)
        span.events.add(name="e", time_unix_nano=1)
    if field == "event":
        spans[1].events.add(name="late", time_unix_nano=bad)
    else:
        setattr(spans[1], field, bad)
    raw = request.SerializeToString()
    assert _ext().count_invalid(1, raw) == 1
    batch = RecordValidator()(decode_request(Signal.TRACES, raw, max_bytes=1 << 20))
    assert batch.rejected == 1


# -- the build --------------------------------------------------------------------------------


def _compiler_here() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return shutil.which(cc) is not None and headers.exists()


def test_the_extension_was_built_where_a_compiler_exists() -> None:
    """`make install` builds `_fastpath` (optional, so a failed build only warns): where gcc and
    the Python headers are, a missing extension is a broken build, not a fallback."""
    if not _compiler_here():
        pytest.skip("no C compiler or Python headers here: the Python path is the installed one")
    _assert_built("sluice_collector._fastpath", ROOT / "collector_ext" / "sluice_collector" / "_fastpath.c")
    if os.environ.get("SLUICE_PURE_PYTHON", "") not in ("", "0"):
        assert not fastpath.COMPILED
        assert "SLUICE_PURE_PYTHON" in fastpath.OFF_REASON
    else:
        assert fastpath.COMPILED, fastpath.OFF_REASON
        assert fastpath.installed_schema_problem() == ""


def test_the_c_source_compiles_without_warnings(tmp_path: Path) -> None:
    """-Wall -Wextra, as setup.py builds it, with warnings as errors."""
    if not _compiler_here():
        pytest.skip("no C compiler or Python headers here")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    source = ROOT / "collector_ext" / "sluice_collector" / "_fastpath.c"
    out = subprocess.run(
        [cc, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-c",
         f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(tmp_path / "fastpath.o")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(("setting", "compiled"), [("1", False), ("yes", False), ("0", True), ("", True)])
def test_sluice_pure_python_chooses_the_path(setting: str, compiled: bool) -> None:
    if compiled and importlib.util.find_spec("sluice_collector._fastpath") is None:
        pytest.skip("the extension is not built here")
    code = (
        "from sluice_collector import fastpath\n"
        "from sluice_collector.batch import Batch, Signal\n"
        "from sluice_collector.processors.routing import CategoryRouter\n"
        "from tests.otlp_builders import log_record, logs_request\n"
        "request = logs_request(log_record('hello', attributes={'http.route': '/a'}))\n"
        "batch = CategoryRouter()(Batch(Signal.LOGS, request, 0, raw=request.SerializeToString()))\n"
        "print(fastpath.COMPILED, batch.wire_index is not None, repr(fastpath.OFF_REASON))\n"
    )
    env = {**os.environ, "SLUICE_PURE_PYTHON": setting}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == [str(compiled), str(compiled)]
    if not compiled:
        assert "SLUICE_PURE_PYTHON is set" in out.stdout


def test_without_the_extension_the_receiver_runs_the_python_path() -> None:
    code = (
        "import sys; sys.modules['sluice_collector._fastpath'] = None\n"
        "from sluice_collector import fastpath\n"
        "from sluice_collector.batch import Batch, Signal\n"
        "from sluice_collector.encode import encode_routes\n"
        "from sluice_collector.processors.routing import CategoryRouter\n"
        "from tests.otlp_builders import log_record, logs_request\n"
        "assert not fastpath.COMPILED, fastpath.OFF_REASON\n"
        "request = logs_request(log_record('hello', attributes={'http.route': '/a'}))\n"
        "batch = CategoryRouter()(Batch(Signal.LOGS, request, 0, raw=request.SerializeToString()))\n"
        "assert batch.wire_index is None\n"
        "print(fastpath.OFF_REASON, list(encode_routes(batch)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_PURE_PYTHON"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "not built" in out.stdout
    assert "['access']" in out.stdout


def test_a_schema_the_extension_was_not_written_for_turns_it_off() -> None:
    changed = dict(fastpath.SCHEMA)
    name = "opentelemetry.proto.logs.v1.LogRecord"
    changed[name] = (*changed[name], ("new_field", 13, 9))
    code = (
        "from sluice_collector import fastpath\n"
        f"fastpath.SCHEMA[{name!r}] = {changed[name]!r}\n"
        "print(repr(fastpath.installed_schema_problem()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LogRecord has fields" in out.stdout


@pytest.mark.slow
def test_the_package_builds_without_a_compiler(tmp_path: Path) -> None:
    """No compiler: the optional extensions fail to build, the wheel is made without them."""
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, tmp_path / name)
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "sdk", tmp_path / "sdk", ignore=ignore)
    shutil.copytree(ROOT / "collector_ext", tmp_path / "collector_ext", ignore=ignore)
    env = {**os.environ, "CC": "/bin/false", "LDSHARED": "/bin/false", "CXX": "/bin/false",
           "LDCXXSHARED": "/bin/false"}
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
         "-w", str(tmp_path / "dist"), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sluice_collector/fastpath.py" in names
    assert not [n for n in names if "_fastpath" in n and not n.endswith(".c")]
    assert not [n for n in names if n.endswith(".so")]  # nor masking's C and C++ twins



def _assert_built(module: str, source: Path) -> None:
    """`module` was built, and not before its `source` was last changed (an editable build)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{module} was not built: run make install"
    assert spec.origin
    if source.exists() and Path(spec.origin).is_relative_to(source.parent):
        assert Path(spec.origin).stat().st_mtime >= source.stat().st_mtime, (
            f"{source.name} is newer than the built extension: run make install")


def test_the_masking_twin_was_built_where_a_compiler_exists() -> None:
    """The same for masking's `_plainmask` (sluice/masking/engine.py picks it up)."""
    from sluice.masking import engine

    if not _compiler_here():
        pytest.skip("no C compiler or Python headers here: the Python path is the installed one")
    _assert_built("sluice.masking._plainmask", ROOT / "sdk" / "sluice" / "masking" / "_plainmask.c")
    pure = os.environ.get("SLUICE_PURE_PYTHON", "") not in ("", "0")
    assert (engine._PLAIN_REWRITE is None) == pure


def test_the_re2_scan_twin_was_built_where_gxx_and_re2_headers_exist() -> None:
    """The same for masking's C++ `_re2scan` (sluice/masking/_prescan.py picks it up), which also
    needs g++ and RE2's headers (libre2-dev: `make` installs both)."""
    from sluice.masking import _prescan

    cxx = (sysconfig.get_config_var("CXX") or "c++").split()[0]
    if not (_compiler_here() and shutil.which(cxx) and Path("/usr/include/re2/re2.h").exists()):
        pytest.skip("no g++ or no RE2 headers here: the RE2 binding is what runs")
    _assert_built("sluice.masking._re2scan", ROOT / "sdk" / "sluice" / "masking" / "_re2scan.cc")
    pure = os.environ.get("SLUICE_PURE_PYTHON", "") not in ("", "0")
    assert (_prescan.COMPILED is None) == pure
