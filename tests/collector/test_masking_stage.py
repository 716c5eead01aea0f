"""The receiver's masking stage on real OTLP protobuf requests: every place a string can hide,
`sluice.masked` marks, drops, counters, per-category overrides, and config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import ConfigError
from sluice_collector.otlpvalues import any_value, attributes, find_attribute
from sluice_collector.processors.masking import MaskingConfig, SecretMasker
from sluice_collector.service.config import parse_config
from sluice_collector.telemetry import ReceiverTelemetry
from tests.otlp_builders import key_values, log_record, logs_request

EMAIL = "jane.roe@example.com"
GH = "gh" + "p_" + "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xYz123"
PW = "hunter2" + "Xyz"


def masker(yaml: str = "", telemetry: ReceiverTelemetry | None = None) -> SecretMasker:
    config = parse_config(yaml, env={}) if yaml else parse_config("masking: {}\n", env={})
    return SecretMasker(config.masking, telemetry)


def run(request: Any, signal: Signal, stage: SecretMasker | None = None) -> Batch:
    """As the receiver runs it: with the encoded request beside the decoded one, so the stage
    takes its raw-scan fast path."""
    batch = Batch(signal=signal, request=request, received_unix_nano=0, raw=request.SerializeToString())
    return (stage or masker())(batch)


def masked_count(kvs: Any) -> Any:
    return find_attribute(kvs, "sluice.masked")


# -- logs -----------------------------------------------------------------------------------------
def test_log_body_string_is_masked_and_the_record_marked() -> None:
    request = logs_request(log_record(f"login ok for {EMAIL} password={PW}"))
    run(request, Signal.LOGS)
    rec = request.resource_logs[0].scope_logs[0].log_records[0]
    assert rec.body.string_value == "login ok for [REDACTED:email] password=[REDACTED:kv_secret]"
    assert masked_count(rec.attributes) == 2


@pytest.mark.parametrize("raw", [True, False], ids=["protobuf", "no-raw-bytes"])
def test_a_mark_already_on_a_record_is_added_to_not_repeated(raw: bool) -> None:
    """A record masked upstream (one sluice forwarding to another) keeps one `sluice.masked`,
    holding the sum; one mark is added where there was none, with or without the raw scan."""
    request = logs_request(
        log_record(f"mail {EMAIL}", attributes={"sluice.masked": 2, "n": 1}),
        log_record(f"mail {EMAIL}", attributes={"n": 2}),
    )
    batch = Batch(signal=Signal.LOGS, request=request, received_unix_nano=0,
                  raw=request.SerializeToString() if raw else b"")
    masker()(batch)
    first, second = request.resource_logs[0].scope_logs[0].log_records
    assert [kv.key for kv in first.attributes].count("sluice.masked") == 1
    assert masked_count(first.attributes) == 3
    assert [kv.key for kv in second.attributes].count("sluice.masked") == 1
    assert masked_count(second.attributes) == 1


def test_nested_kvlist_and_array_bodies_are_masked_at_every_depth() -> None:
    body = {"user": {"contact": [EMAIL, "ok"], "token": 12345}, "msg": f"pushed {GH}"}
    request = logs_request(log_record(body))
    run(request, Signal.LOGS)
    rec = request.resource_logs[0].scope_logs[0].log_records[0]
    assert any_value(rec.body) == {
        "user": {"contact": ["[REDACTED:email]", "ok"], "token": "[REDACTED:sensitive_key]"},
        "msg": "pushed [REDACTED:github_token]",
    }
    assert masked_count(rec.attributes) == 3


def test_log_attributes_sensitive_keys_and_allow_list() -> None:
    request = logs_request(log_record("hi", attributes={
        "http.request.header.authorization": "Basic abc", "db.password": 1234,
        "note": f"mail {EMAIL}", "http.route": f"/u/{EMAIL}", "count": 3,
        "request.id": "4111111111111111",
    }))
    run(request, Signal.LOGS)
    attrs = attributes(request.resource_logs[0].scope_logs[0].log_records[0].attributes)
    assert attrs["http.request.header.authorization"] == "[REDACTED:sensitive_key]"
    assert attrs["db.password"] == "[REDACTED:sensitive_key]"
    assert attrs["note"] == "mail [REDACTED:email]"
    assert attrs["http.route"] == "/u/[REDACTED:email]"  # allow-listed, but an address is an address
    assert attrs["request.id"] == "4111111111111111"  # allow-listed: an id, not taken for a card
    assert attrs["count"] == 3
    assert attrs["sluice.masked"] == 4


def test_resource_and_scope_strings_are_masked_and_marked_where_they_live() -> None:
    request = logs_request(log_record("plain"), scope=f"lib {GH}",
                           resource={"host.ip": "203.0.113.9", "owner": EMAIL})
    request.resource_logs[0].scope_logs[0].scope.attributes.extend(key_values({"api_key": "k" * 12}))
    run(request, Signal.LOGS)
    rl = request.resource_logs[0]
    res = attributes(rl.resource.attributes)
    assert res["host.ip"] == "203.0.113.x"
    assert res["owner"] == "[REDACTED:email]"
    assert res["sluice.masked"] == 2
    scope = rl.scope_logs[0].scope
    assert scope.name == "lib [REDACTED:github_token]"
    assert attributes(scope.attributes) == {"api_key": "[REDACTED:sensitive_key]", "sluice.masked": 2}
    assert masked_count(rl.scope_logs[0].log_records[0].attributes) is None


def test_a_masked_value_keeps_its_closing_bracket_through_the_raw_scan_path() -> None:
    request = logs_request(log_record(f"(password={PW})", attributes={"cfg": f"{{token={PW}}}"}))
    run(request, Signal.LOGS)
    rec = request.resource_logs[0].scope_logs[0].log_records[0]
    assert rec.body.string_value == "(password=[REDACTED:kv_secret])"
    assert attributes(rec.attributes)["cfg"] == "{token=[REDACTED:kv_secret]}"


def test_text_glued_to_a_literal_mask_token_is_masked_by_the_stage() -> None:
    request = logs_request(log_record(f"password=[REDACTED:kv_secret]{PW}",
                                      attributes={"note": f"token=[REDACTED:x]{PW}"}))
    run(request, Signal.LOGS)
    rec = request.resource_logs[0].scope_logs[0].log_records[0]
    assert rec.body.string_value == "password=[REDACTED:kv_secret]"
    assert attributes(rec.attributes)["note"] == "token=[REDACTED:kv_secret]"


def test_unchanged_records_get_no_mark_and_keep_their_bytes() -> None:
    request = logs_request(log_record("GET /api/v1/orders 200 12ms",
                                      attributes={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}))
    before = request.SerializeToString()
    batch = run(request, Signal.LOGS)
    assert request.SerializeToString() == before
    assert not batch.masked


def test_masking_a_masked_batch_again_changes_nothing() -> None:
    request = logs_request(log_record(f"x {EMAIL}", attributes={"password": "p" * 9}))
    run(request, Signal.LOGS)
    once = request.SerializeToString()
    batch = run(request, Signal.LOGS)
    assert request.SerializeToString() == once
    assert not batch.masked


# -- traces ---------------------------------------------------------------------------------------
def traces_request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(key_values({"service.name": "svc"}))
    ss = rs.scope_spans.add()
    ss.scope.name = "tracer"
    span = ss.spans.add(name=f"notify {EMAIL}", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    span.status.message = f"auth failed password={PW}"
    span.attributes.extend(key_values({"db.statement": "SELECT 1 WHERE a = $1", "url.full": f"https://u:{PW}@h/x"}))
    event = span.events.add(name="exception")
    event.attributes.extend(key_values({
        "exception.message": f"bad token {GH}",
        "exception.stacktrace": f'Traceback:\n  File "a.py"\n    login(password="{PW}")\nValueError',
    }))
    link = span.links.add(trace_id=b"\x03" * 16, span_id=b"\x04" * 8)
    link.attributes.extend(key_values({"peer": "10.1.2.3"}))
    ss.spans.add(name="GET /healthz")
    return request


def test_span_name_status_attributes_events_and_links_are_masked() -> None:
    request = traces_request()
    batch = run(request, Signal.TRACES)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.name == "notify [REDACTED:email]"
    assert span.status.message == "auth failed password=[REDACTED:kv_secret]"
    attrs = attributes(span.attributes)
    assert attrs["db.statement"] == "SELECT 1 WHERE a = $1"
    assert attrs["url.full"] == "https://u:[REDACTED:url_credentials]@h/x"
    event = attributes(span.events[0].attributes)
    assert event["exception.message"] == "bad token [REDACTED:github_token]"
    assert PW not in event["exception.stacktrace"]
    assert attributes(span.links[0].attributes) == {"peer": "10.1.2.x"}
    assert attrs["sluice.masked"] == 6
    assert masked_count(request.resource_spans[0].scope_spans[0].spans[1].attributes) is None
    assert batch.masked == {"email": 1, "kv_secret": 2, "url_credentials": 1, "github_token": 1, "ipv4": 1}


# -- metrics --------------------------------------------------------------------------------------
def metrics_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    sm = rm.scope_metrics.add()
    gauge = sm.metrics.add(name="queue.depth")
    point = gauge.gauge.data_points.add(as_int=3)
    point.attributes.extend(key_values({"owner": EMAIL}))
    exemplar = point.exemplars.add(as_int=1)
    exemplar.filtered_attributes.extend(key_values({"client.address": "198.51.100.23"}))
    hist = sm.metrics.add(name="latency")
    hp = hist.histogram.data_points.add(count=1)
    hp.attributes.extend(key_values({"route": "/x", "session": "abc123"}))
    summary = sm.metrics.add(name="sizes")
    summary.summary.data_points.add(count=1).attributes.extend(key_values({"q": f"password={PW}"}))
    exp = sm.metrics.add(name="exp")
    exp.exponential_histogram.data_points.add(count=1).attributes.extend(key_values({"who": EMAIL}))
    total = sm.metrics.add(name="requests")
    total.sum.data_points.add(as_int=9).attributes.extend(key_values({"user.email": EMAIL}))
    return request


def test_metric_point_and_exemplar_attributes_are_masked_with_the_mark_on_metadata() -> None:
    request = metrics_request()
    batch = run(request, Signal.METRICS)
    metrics = {m.name: m for m in request.resource_metrics[0].scope_metrics[0].metrics}
    point = metrics["queue.depth"].gauge.data_points[0]
    assert attributes(point.attributes) == {"owner": "[REDACTED:email]"}
    assert attributes(point.exemplars[0].filtered_attributes) == {"client.address": "198.51.100.x"}
    assert attributes(metrics["latency"].histogram.data_points[0].attributes) == {
        "route": "/x", "session": "[REDACTED:sensitive_key]"}
    assert attributes(metrics["sizes"].summary.data_points[0].attributes) == {
        "q": "password=[REDACTED:kv_secret]"}
    assert attributes(metrics["exp"].exponential_histogram.data_points[0].attributes) == {
        "who": "[REDACTED:email]"}
    assert attributes(metrics["requests"].sum.data_points[0].attributes) == {"user.email": "[REDACTED:email]"}
    assert masked_count(metrics["queue.depth"].metadata) == 2
    assert batch.masked["email"] == 3


# -- drop -----------------------------------------------------------------------------------------
DROP_SSN = "masking:\n  detectors:\n    ssn: {action: drop}\n"


def test_drop_action_removes_only_the_matching_record_and_counts_it() -> None:
    request = logs_request(log_record("first"), log_record("ssn 123-45-6789"), log_record("third"))
    batch = run(request, Signal.LOGS, masker(DROP_SSN))
    records = request.resource_logs[0].scope_logs[0].log_records
    assert [r.body.string_value for r in records] == ["first", "third"]
    assert batch.dropped == 1
    assert batch.masked == {"ssn": 1}
    assert batch.record_count() == 2


def test_drop_in_a_span_event_removes_the_span() -> None:
    request = traces_request()
    event = request.resource_spans[0].scope_spans[0].spans[0].events[0]
    event.attributes.extend(key_values({"note": "ssn 123-45-6789"}))
    batch = run(request, Signal.TRACES, masker(DROP_SSN))
    assert [s.name for s in request.resource_spans[0].scope_spans[0].spans] == ["GET /healthz"]
    assert batch.dropped == 1


def test_drop_in_a_resource_removes_all_its_records_once() -> None:
    request = logs_request(log_record("a"), log_record("ssn 219-09-9999"), resource={"x": "ssn 123-45-6789"})
    batch = run(request, Signal.LOGS, masker(DROP_SSN))
    assert len(request.resource_logs) == 0
    assert batch.dropped == 2


def test_drop_of_a_metric_data_point() -> None:
    request = metrics_request()
    request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points.add(as_int=4).attributes.extend(
        key_values({"who": "ssn 123-45-6789"}))
    batch = run(request, Signal.METRICS, masker(DROP_SSN))
    assert [p.as_int for p in request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points] == [3]
    assert batch.dropped == 1


# -- counters, switches, categories ---------------------------------------------------------------
def test_masks_are_counted_per_detector_on_the_receiver_telemetry() -> None:
    registry = CollectorRegistry()
    telemetry = ReceiverTelemetry(registry)
    stage = masker("masking: {}\n", telemetry)
    run(logs_request(log_record(f"{EMAIL} {EMAIL}"), log_record(f"password={PW}")), Signal.LOGS, stage)
    assert registry.get_sample_value("sluice_masked_values_total", {"detector": "email"}) == 2
    assert registry.get_sample_value("sluice_masked_values_total", {"detector": "kv_secret"}) == 1


def test_disabled_masking_leaves_the_batch_alone() -> None:
    request = logs_request(log_record(f"{EMAIL}"))
    run(request, Signal.LOGS, masker("masking:\n  enabled: false\n"))
    assert request.resource_logs[0].scope_logs[0].log_records[0].body.string_value == EMAIL


def test_category_override_applies_to_records_carrying_log_category() -> None:
    yaml = ("masking:\n  categories:\n    audit:\n      detectors:\n        email: {enabled: false}\n"
            "    debug:\n      enabled: false\n")
    request = logs_request(
        log_record(EMAIL, attributes={"log.category": "audit"}),
        log_record(EMAIL),
        log_record(f"{EMAIL} password={PW}", attributes={"log.category": "debug"}),
        log_record(f"{EMAIL} password={PW}", attributes={"log.category": "audit"}),
    )
    run(request, Signal.LOGS, masker(yaml))
    bodies = [r.body.string_value for r in request.resource_logs[0].scope_logs[0].log_records]
    assert bodies == [EMAIL, "[REDACTED:email]", f"{EMAIL} password={PW}", f"{EMAIL} password=[REDACTED:kv_secret]"]


def test_pseudonymised_keys_from_a_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "masking.key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    stage = masker(f"masking:\n  pseudonymize:\n    keys: [user.id, enduser.id]\n    key_file: {key_file}\n")
    request = logs_request(log_record("a", attributes={"user.id": "alice"}),
                           log_record("b", attributes={"enduser.id": "alice", "user.id": 42}))
    run(request, Signal.LOGS, stage)
    first, second = request.resource_logs[0].scope_logs[0].log_records
    token = attributes(first.attributes)["user.id"]
    assert token.startswith("pseu_")
    assert attributes(second.attributes)["enduser.id"] == token
    assert attributes(second.attributes)["user.id"].startswith("pseu_")
    assert attributes(second.attributes)["user.id"] != token


def test_custom_detectors_and_replacement_from_config() -> None:
    yaml = ("masking:\n  replacement: '***{detector}***'\n  custom:\n"
            "    - {name: order_ref, pattern: 'ORD-[0-9]{6}'}\n")
    request = logs_request(log_record("ref ORD-123456 for " + EMAIL))
    run(request, Signal.LOGS, masker(yaml))
    assert request.resource_logs[0].scope_logs[0].log_records[0].body.string_value == (
        "ref ***order_ref*** for ***email***")


# -- config errors --------------------------------------------------------------------------------
def problems_of(yaml: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml, env={})
    return [str(p) for p in info.value.problems]


def test_default_config_is_valid_and_enabled() -> None:
    config = MaskingConfig()
    assert config.enabled
    assert parse_config("masking: {}\n", env={}).masking.enabled


@pytest.mark.parametrize(("yaml", "expected"), [
    ("masking:\n  custom:\n    - {name: x, pattern: '(a)\\1'}\n",
     "masking.custom[0].pattern: got '(a)\\\\1'; uses '\\\\1': lookarounds and backreferences are not "
     "supported; patterns use RE2 syntax, which runs in linear time"),
    ("masking:\n  custom:\n    - {name: ok, pattern: 'x+'}\n    - {name: y, pattern: 'a(?=b)'}\n",
     "masking.custom[1].pattern: got 'a(?=b)'; uses '(?=': lookarounds and backreferences are not "
     "supported; patterns use RE2 syntax, which runs in linear time"),
    ("masking:\n  custom:\n    - {name: x}\n",
     "masking.custom[0].pattern: missing; expected an RE2 pattern such as 'ACME-[0-9]{8}'"),
    ("masking:\n  custom:\n    - {name: Bad Name, pattern: 'x+'}\n",
     "masking.custom[0].name: got 'Bad Name'; expected lower-case letters, digits and _ (starting with a letter)"),
    ("masking:\n  custom:\n    - {name: email, pattern: 'x+'}\n",
     "masking.custom[0].name: got 'email'; that name is already taken"),
    ("masking:\n  detectors:\n    card: {action: bogus}\n",
     "masking.detectors.card.action: got 'bogus'; expected one of: mask, hash, partial, drop"),
    ("masking:\n  detectors:\n    jwt: {action: partial}\n",
     "masking.detectors.jwt.action: got 'partial'; expected one of: mask, hash, drop"),
    ("masking:\n  detectors:\n    card: {enabeld: false}\n",
     "masking.detectors.card.enabeld: unknown key; did you mean 'enabled'? known keys here: action, enabled"),
    ("masking:\n  replacement: 'gone'\n",
     "masking.replacement: got 'gone'; expected a template containing {detector}, e.g. '[REDACTED:{detector}]'"),
    ("masking:\n  pseudonymize:\n    keys: [user.id]\n",
     "masking.pseudonymize.key_env: environment variable 'SLUICE_MASKING_KEY' is not set or too short: the "
     "hash action and pseudonymize.keys need a secret of at least 16 bytes there or in "
     "masking.pseudonymize.key_file"),
    ("masking:\n  pseudonymize:\n    key_file: /nonexistent/sluice.key\n",
     "masking.pseudonymize.key_file: got '/nonexistent/sluice.key'; cannot read it (No such file or directory)"),
    ("masking:\n  categories:\n    audit:\n      detectors:\n        email: {action: hash}\n",
     "masking.pseudonymize.key_env: environment variable 'SLUICE_MASKING_KEY' is not set or too short: the "
     "hash action and pseudonymize.keys need a secret of at least 16 bytes there or in "
     "masking.pseudonymize.key_file"),
    ("masking:\n  categories:\n    audit:\n      detectors:\n        ssn: {action: partial}\n",
     "masking.categories.audit.detectors.ssn.action: got 'partial'; expected one of: mask, hash, drop"),
])
def test_config_errors_name_the_key_the_value_and_what_is_accepted(
    yaml: str, expected: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SLUICE_MASKING_KEY", raising=False)
    assert problems_of(yaml) == [expected]


def test_hash_key_from_the_environment_variable_named_by_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_MASKING_KEY", "an-hmac-key-of-32-bytes-for-test")
    stage = masker("masking:\n  detectors:\n    email: {action: hash}\n  pseudonymize:\n"
                   "    key_env: MY_MASKING_KEY\n")
    request = logs_request(log_record(f"from {EMAIL}"), log_record(f"to {EMAIL}"))
    run(request, Signal.LOGS, stage)
    first, second = (r.body.string_value for r in request.resource_logs[0].scope_logs[0].log_records)
    assert first.startswith("from [HASH:email:")
    assert first.removeprefix("from ") == second.removeprefix("to ")


def test_a_misspelt_detector_gets_a_did_you_mean() -> None:
    (problem,) = problems_of("masking:\n  detectors:\n    emial: {enabled: false}\n")
    assert problem.startswith("masking.detectors.emial: unknown detector; did you mean 'email'? known")


def test_unknown_detector_lists_the_known_ones() -> None:
    (problem,) = problems_of("masking:\n  detectors:\n    mastercard: {enabled: true}\n")
    assert problem.startswith("masking.detectors.mastercard: unknown detector; known detectors: age_key, ")
    assert "auth_header, " in problem
    assert "card, " in problem


# -- the raw-scan fast path must change exactly what the full walk changes -------------------------
_BENIGN = ["order 42 shipped", "GET /orders/{id}", "took 12.5 ms", "v1.4.2", "4bf92f3577b34da6a3ce929d0e0e4736",
           "550e8400-e29b-41d4-a716-446655440000", "SELECT * FROM t WHERE id = ?", "", "token_count=3"]
_SECRETS = [f"password={PW}", EMAIL, GH, "card 4111 1111 1111 1111", "Bearer abcdefghijklmnop12345",
            "postgres://app:s3cr3tpass@db:5432/x", "IBAN GB82 WEST 1234 5698 7654 32",
            "postgres://u:p#a/s@s@db/x", "ssn=536228874", "mysql -uroot -pS3cret db", "GET /?u=a&pass=x9y8z7",
            "https://hooks.slack.com/services/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",
            "password=[REDACTED:kv_secret]" + PW, "(token=abc123)"]
_KEYS = ["msg", "user.email", "password", "http.route", "api-key", "note", "request.id", "Set-Cookie",
         "pass__word", "a--uth", "X-API- KEY", "Session..Id"]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_raw_scan_path_equals_the_full_walk(data: st.DataObject) -> None:
    text = st.sampled_from(_BENIGN + _SECRETS)
    def attrs() -> dict[str, Any]:
        return data.draw(st.dictionaries(st.sampled_from(_KEYS), st.one_of(text, st.integers(0, 9)), max_size=4))
    signal = data.draw(st.sampled_from([Signal.LOGS, Signal.TRACES, Signal.METRICS]))
    if signal is Signal.LOGS:
        request: Any = logs_request(
            *[log_record(data.draw(text), attributes=attrs()) for _ in range(data.draw(st.integers(1, 12)))],
            resource=attrs(), scope=data.draw(text) or "s",
        )
        extra = request.resource_logs.add()
        extra.scope_logs.add().log_records.add().body.string_value = data.draw(text)
    elif signal is Signal.TRACES:
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(key_values(attrs()))
        ss = rs.scope_spans.add()
        for _ in range(data.draw(st.integers(1, 8))):
            span = ss.spans.add(name=data.draw(text))
            span.attributes.extend(key_values(attrs()))
            span.events.add(name=data.draw(text)).attributes.extend(key_values(attrs()))
            span.status.message = data.draw(text)
    else:
        request = ExportMetricsServiceRequest()
        sm = request.resource_metrics.add().scope_metrics.add()
        for _ in range(data.draw(st.integers(1, 5))):
            point = sm.metrics.add(name="m").sum.data_points.add(as_int=1)
            point.attributes.extend(key_values(attrs()))
    full = type(request)()
    full.CopyFrom(request)
    fast_batch = run(request, signal)
    full_batch = masker()(Batch(signal=signal, request=full, received_unix_nano=0))
    assert request.SerializeToString() == full.SerializeToString()
    assert fast_batch.masked == full_batch.masked
    assert fast_batch.dropped == full_batch.dropped


def test_a_request_with_nothing_to_mask_is_left_untouched_by_the_fast_path() -> None:
    request = logs_request(*[log_record(b, attributes={"http.route": "/x", "n": 1}) for b in _BENIGN])
    before = request.SerializeToString()
    batch = run(request, Signal.LOGS)
    assert request.SerializeToString() == before
    assert not batch.masked


def test_anchored_custom_patterns_fall_back_to_the_full_walk() -> None:
    stage = masker("masking:\n  custom:\n    - {name: ticket, pattern: '^TCK-[0-9]{4}$'}\n")
    request = logs_request(log_record("TCK-1234"), log_record("no ticket"))
    run(request, Signal.LOGS, stage)
    bodies = [r.body.string_value for r in request.resource_logs[0].scope_logs[0].log_records]
    assert bodies == ["[REDACTED:ticket]", "no ticket"]


def test_sensitive_and_pseudonymised_keys_with_repeated_separators_are_found_by_the_raw_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KeyRules ignores any number of `-_. `; the raw scan's key patterns must too."""
    monkeypatch.setenv("SLUICE_MASKING_KEY", "k" * 32)
    stage = masker("masking:\n  pseudonymize: {keys: [user.id]}\n")
    request = logs_request(
        log_record("a", attributes={"pass__word": "hunter2", "a--uth": "x1", "X-API- KEY": "x2",
                                    "user__id": "alice"}),
    )
    run(request, Signal.LOGS, stage)
    attrs = attributes(request.resource_logs[0].scope_logs[0].log_records[0].attributes)
    assert attrs["pass__word"] == "[REDACTED:sensitive_key]"
    assert attrs["a--uth"] == "[REDACTED:sensitive_key]"
    assert attrs["X-API- KEY"] == "[REDACTED:sensitive_key]"
    assert attrs["user__id"].startswith("pseu_")


# -- every detector kind through the stage's raw pre-scan ------------------------------------------
def _corpus_cases() -> list[Any]:
    from tests.sdk import masking_corpus

    return [pytest.param(kind, cases, id=kind) for kind, cases in masking_corpus.POSITIVES.items()]


@pytest.mark.parametrize(("kind", "cases"), _corpus_cases())
def test_a_secret_of_each_kind_in_a_log_body_and_attribute_is_masked_by_the_raw_scan_path(
    kind: str, cases: list[tuple[str, str]],
) -> None:
    """The raw pre-scan over the encoded request decides which records reach the engine; a
    detector it cannot see would let its secrets through untouched. Each corpus secret goes in
    as a log body and as an attribute value (under a key that is not sensitive itself)."""
    from tests.sdk.test_masking_corpus import secret_of

    records = [log_record(text, attributes={"note": f"ctx {text} end", "n": 1}) for text, _ in cases]
    request = logs_request(log_record("nothing here"), *records)
    batch = run(request, Signal.LOGS)
    out = request.resource_logs[0].scope_logs[0].log_records
    assert masked_count(out[0].attributes) is None
    for (text, secret), rec in zip(cases, out[1:], strict=True):
        hidden = secret_of(text, secret)
        note = attributes(rec.attributes)["note"]
        assert hidden not in rec.body.string_value, (kind, rec.body.string_value)
        assert hidden not in note, (kind, note)
        assert masked_count(rec.attributes) >= 2
    assert batch.masked[kind] >= 2 * len(cases)
