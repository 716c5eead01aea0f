"""Issue 13, items 3 and 4: every string the OTLP model can carry is masked — keys as well as
values, and the fields that are neither bodies nor attributes — and a per-category override
applies where the record is written, not where its `log.category` attribute says.

Each case runs twice: as the receiver runs it (the raw pre-scan of the encoded request picks
the records to walk) and on a request without its encoded bytes (every record walked)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sluice_collector.batch import Batch, Signal
from sluice_collector.otlpvalues import any_value, attributes
from sluice_collector.processors.masking import SecretMasker
from sluice_collector.processors.routing import MAX_DYNAMIC_CATEGORIES, CategoryRouter
from sluice_collector.service.config import parse_config
from tests.otlp_builders import key_values, log_record, logs_request

EMAIL = "jane.roe@example.com"
TOKEN = "[REDACTED:email]"


def stage(yaml: str = "masking: {}\n") -> SecretMasker:
    return SecretMasker(parse_config(yaml, env={}).masking)


@pytest.fixture(params=["raw-scan", "raw-scan-walk", "full-walk"])
def run(request: pytest.FixtureRequest) -> Any:
    """The stage three ways: the raw scan, then masking on the wire where it is built; the raw
    scan, then the walk over the decoded request; the walk over every string."""
    def run(otlp: Any, signal: Signal, masker: SecretMasker | None = None) -> Batch:
        raw = otlp.SerializeToString() if request.param != "full-walk" else b""
        masker = masker or stage()
        if request.param == "raw-scan-walk":
            masker._on_wire = False
        return masker(Batch(signal=signal, request=otlp, received_unix_nano=0, raw=raw))
    return run


def test_every_string_of_a_log_record_its_scope_and_resource(run: Any) -> None:
    rec = log_record({f"by {EMAIL}": {EMAIL: "x"}}, severity_text=f"WARN {EMAIL}",
                     attributes={EMAIL: "a key holds it", "plain": "ok"})
    rec.event_name = f"signup {EMAIL}"
    request = logs_request(rec, resource={f"owner {EMAIL}": "r"})
    request.resource_logs[0].schema_url = f"https://schemas.example.com/{EMAIL}"
    sl = request.resource_logs[0].scope_logs[0]
    sl.scope.version = f"1.0 {EMAIL}"
    sl.schema_url = f"https://schemas.example.com/scope/{EMAIL}"
    run(request, Signal.LOGS)
    assert EMAIL.encode() not in request.SerializeToString()
    out = request.resource_logs[0].scope_logs[0].log_records[0]
    assert out.event_name == f"signup {TOKEN}"
    assert out.severity_text == f"WARN {TOKEN}"
    assert any_value(out.body) == {f"by {TOKEN}": {TOKEN: "x"}}
    assert attributes(out.attributes)[TOKEN] == "a key holds it"
    assert attributes(out.attributes)["plain"] == "ok"
    assert request.resource_logs[0].scope_logs[0].scope.version == f"1.0 {TOKEN}"


def test_span_trace_state_link_trace_state_and_event_names(run: Any) -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = "GET /", bytes(range(16)), bytes(range(8))
    span.trace_state = f"vendor={EMAIL}"
    span.events.add(name=f"mail to {EMAIL}").attributes.extend(key_values({EMAIL: 1}))
    link = span.links.add(trace_id=bytes(range(16)), span_id=bytes(range(8)))
    link.trace_state = f"other={EMAIL}"
    run(request, Signal.TRACES)
    assert EMAIL.encode() not in request.SerializeToString()
    span = request.resource_spans[0].scope_spans[0].spans[0]  # masking may decode it anew
    assert span.trace_state == f"vendor={TOKEN}"
    assert span.links[0].trace_state == f"other={TOKEN}"
    assert span.events[0].name == f"mail to {TOKEN}"


def test_metric_name_description_unit_and_metadata(run: Any) -> None:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = f"logins {EMAIL}"
    metric.description = f"asked by {EMAIL}"
    metric.unit = f"{{{EMAIL}}}"
    metric.metadata.extend(key_values({"owner": EMAIL, EMAIL: "k"}))
    point = metric.sum.data_points.add(as_int=1)
    point.attributes.extend(key_values({"user": EMAIL}))
    empty = request.resource_metrics[0].scope_metrics[0].metrics.add()
    empty.description = f"no points, still {EMAIL}"
    run(request, Signal.METRICS)
    assert EMAIL.encode() not in request.SerializeToString()
    assert (metric.name, metric.description, metric.unit) == (
        f"logins {TOKEN}", f"asked by {TOKEN}", f"{{{TOKEN}}}")
    assert attributes(metric.metadata)["owner"] == TOKEN
    assert attributes(point.attributes)["user"] == TOKEN
    assert attributes(metric.metadata)["sluice.masked"] == 6  # five on the metric, one on its point
    assert empty.description == f"no points, still {TOKEN}"


def test_a_key_that_is_a_secret_key_still_hides_its_value(run: Any) -> None:
    """Scanning keys must not change how a key rules its value."""
    request = logs_request(log_record("x", attributes={"db.password": "hunter2Xyz"}))
    run(request, Signal.LOGS)
    attrs = attributes(request.resource_logs[0].scope_logs[0].log_records[0].attributes)
    assert attrs["db.password"] == "[REDACTED:sensitive_key]"


# -- overrides follow where a record is written ---------------------------------------------------
RELAXED = ("masking:\n  categories:\n    debug:\n      enabled: false\n"
           "    traces:\n      detectors:\n        email: {enabled: false}\n")


def _span_request(attrs: dict[str, Any]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = f"GET /{EMAIL}?password=hunter2Xyz", bytes(16), bytes(8)
    span.attributes.extend(key_values(attrs))
    return request


def test_a_span_claiming_a_relaxed_log_category_gets_the_traces_settings(run: Any) -> None:
    request = _span_request({"log.category": "debug"})
    run(request, Signal.TRACES, stage(RELAXED))
    # `traces` keeps e-mails (its override) but not the password; `debug` would keep both.
    assert request.resource_spans[0].scope_spans[0].spans[0].name == (
        f"GET /{EMAIL}?password=[REDACTED:kv_secret]")


def test_a_metric_point_claiming_a_relaxed_log_category_is_masked() -> None:
    request = ExportMetricsServiceRequest()
    point = request.resource_metrics.add().scope_metrics.add().metrics.add(name="m").gauge.data_points.add()
    point.attributes.extend(key_values({"log.category": "debug", "who": EMAIL}))
    stage(RELAXED)(Batch(Signal.METRICS, request, 0, raw=request.SerializeToString()))
    assert attributes(point.attributes)["who"] == TOKEN


def test_a_log_record_claiming_a_reserved_category_gets_the_top_level_settings(run: Any) -> None:
    request = logs_request(log_record(EMAIL, attributes={"log.category": "traces"}),
                           log_record(EMAIL, attributes={"log.category": "debug"}))
    run(request, Signal.LOGS, stage(RELAXED))
    bodies = [r.body.string_value for r in request.resource_logs[0].scope_logs[0].log_records]
    assert bodies == [TOKEN, EMAIL]  # the router never puts a log record among the spans


def test_a_category_with_an_override_is_honoured_past_the_dynamic_cap() -> None:
    """Masked under `debug`'s settings means written to `debug`, however many dynamic
    categories clients made up before."""
    config = parse_config(RELAXED, env={})
    router = CategoryRouter(config.routing, known=config.masking.categories.keys())
    filler = logs_request(*(log_record("x", attributes={"log.category": f"dyn{i}"})
                            for i in range(MAX_DYNAMIC_CATEGORIES + 5)))
    router(Batch(Signal.LOGS, filler, 0))
    late = router(Batch(Signal.LOGS, logs_request(
        log_record("x", attributes={"log.category": "debug"}),
        log_record("x", attributes={"log.category": "dyn-late"})), 0))
    assert sorted(late.routes) == ["app", "debug"]


# -- the corpus in every field ---------------------------------------------------------------------
ALL_ON = "masking:\n  detectors:\n    phone: {enabled: true}\n"


def _everywhere(text: str) -> list[tuple[Signal, Any]]:
    """One request per signal with `text` in every string field that signal can carry: as a
    key (with an empty value, which a key that ends like `signature` would hide) and as a value
    (under a neutral key)."""
    kvs = {text: "", "k": text}
    rec = log_record({**kvs, "list": [text]}, severity_text=text, attributes=kvs)
    rec.event_name = text
    logs = logs_request(rec, scope=text, resource=kvs)
    logs.resource_logs[0].schema_url = text
    logs.resource_logs[0].scope_logs[0].schema_url = text
    logs.resource_logs[0].scope_logs[0].scope.version = text
    logs.resource_logs[0].scope_logs[0].scope.attributes.extend(key_values(kvs))
    traces = ExportTraceServiceRequest()
    rs = traces.resource_spans.add()
    rs.resource.attributes.extend(key_values(kvs))
    span = rs.scope_spans.add().spans.add(name=text, trace_state=text, trace_id=bytes(16), span_id=bytes(8))
    span.status.message = text
    span.attributes.extend(key_values(kvs))
    span.events.add(name=text).attributes.extend(key_values(kvs))
    span.links.add(trace_state=text).attributes.extend(key_values(kvs))
    metrics = ExportMetricsServiceRequest()
    metric = metrics.resource_metrics.add().scope_metrics.add().metrics.add(
        name=text, description=text, unit=text)
    metric.metadata.extend(key_values(kvs))
    point = metric.histogram.data_points.add()
    point.attributes.extend(key_values(kvs))
    point.exemplars.add().filtered_attributes.extend(key_values(kvs))
    return [(Signal.LOGS, logs), (Signal.TRACES, traces), (Signal.METRICS, metrics)]


def _corpus_cases() -> list[Any]:
    from tests.sdk import masking_corpus as corpus

    return [pytest.param(text, secret, id=kind) for kind, cases in corpus.POSITIVES.items()
            for text, secret in cases[:1]]


@pytest.mark.parametrize(("text", "secret"), _corpus_cases())
def test_a_secret_of_each_kind_leaves_no_field_unmasked(run: Any, text: str, secret: str) -> None:
    from tests.sdk.test_masking_corpus import secret_of

    hidden = secret_of(text, secret).encode()
    masker = stage(ALL_ON)
    for signal, request in _everywhere(text):
        run(request, signal, masker)
        assert hidden not in request.SerializeToString(), (signal, text)


def test_everyday_content_in_every_field_is_left_byte_for_byte(run: Any) -> None:
    from tests.sdk import masking_corpus as corpus

    masker = stage(ALL_ON)
    for text in corpus.BENIGN:
        for signal, request in _everywhere(text):
            before = request.SerializeToString()
            run(request, signal, masker)
            assert request.SerializeToString() == before, (signal, text)
