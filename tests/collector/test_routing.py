"""Classification: log.category wins, then rules in config order, then app."""

from __future__ import annotations

import time

from sluice_collector.batch import Batch, Signal
from sluice_collector.processors.routing import MAX_DYNAMIC_CATEGORIES, CategoryRouter
from sluice_collector.service.config import parse_config
from tests.otlp_builders import log_record, logs_request


def route(*records, config_text: str = "", scope: str = "test.scope", resource=None) -> dict[str, list[str]]:
    config = parse_config(config_text or "{}")
    router = CategoryRouter(config.routing)
    batch = Batch(Signal.LOGS, logs_request(*records, scope=scope, resource=resource), time.time_ns())
    router(batch)
    return {cat: [ref[2].body.string_value for ref in refs] for cat, refs in batch.routes.items()}


def test_http_semconv_attributes_route_to_access() -> None:
    routes = route(
        log_record("a", attributes={"http.request.method": "GET"}),
        log_record("b", attributes={"http.method": "POST"}),
        log_record("c", attributes={"url.path": "/x"}),
        log_record("d", attributes={"http.route": "/x/{id}"}),
    )
    assert routes == {"access": ["a", "b", "c", "d"]}


def test_error_severity_and_exception_attributes_route_to_error() -> None:
    routes = route(
        log_record("sev", severity=17),
        log_record("fatal", severity=21),
        log_record("exc", attributes={"exception.type": "ValueError"}),
        log_record("text", severity=0, severity_text="error"),
        log_record("warn", severity=13),
    )
    assert routes == {"error": ["sev", "fatal", "exc", "text"], "app": ["warn"]}


def test_log_category_attribute_wins_over_rules() -> None:
    routes = route(log_record("x", severity=17, attributes={"log.category": "security",
                                                              "http.route": "/login"}))
    assert routes == {"security": ["x"]}


def test_unknown_valid_category_is_accepted_and_invalid_one_falls_back() -> None:
    router = CategoryRouter(parse_config("{}").routing)
    batch = Batch(Signal.LOGS, logs_request(
        log_record("p", attributes={"log.category": "payments"}),
        log_record("bad", attributes={"log.category": "../etc"}),
        log_record("spans", attributes={"log.category": "traces"}),
    ), time.time_ns())
    router(batch)
    routes = {c: [r[2].body.string_value for r in refs] for c, refs in batch.routes.items()}
    assert routes == {"payments": ["p"], "app": ["bad", "spans"]}
    assert "payments" in router.categories


def test_dynamic_categories_are_capped() -> None:
    router = CategoryRouter(parse_config("{}").routing)
    records = [log_record(str(i), attributes={"log.category": f"c{i}"})
               for i in range(MAX_DYNAMIC_CATEGORIES + 5)]
    batch = Batch(Signal.LOGS, logs_request(*records), time.time_ns())
    router(batch)
    assert len(batch.routes) == MAX_DYNAMIC_CATEGORIES + 1
    assert len(batch.routes["app"]) == 5


def test_user_rules_run_in_order_before_builtin_ones() -> None:
    text = """
categories:
  payments:
    match:
      - {attribute: payment.id}
  admin:
    match:
      - {attribute: url.path, matches: '^/admin'}
      - {scope: 'myapp.admin.*'}
  loud:
    match:
      - {body_matches: 'disk (full|failing)', severity_at_least: WARN}
  tenant_a:
    match:
      - {attribute: tenant.id, equals: a}
"""
    routes = route(
        log_record("pay", severity=17, attributes={"payment.id": "p1"}),
        log_record("adm", attributes={"url.path": "/admin/users"}),
        log_record("not-adm", attributes={"url.path": "/shop"}),
        log_record("disk full", severity=13),
        log_record("disk full quiet", severity=9),
        config_text=text,
    )
    assert routes == {
        "payments": ["pay"], "admin": ["adm"], "access": ["not-adm"], "loud": ["disk full"],
        "app": ["disk full quiet"],
    }


def test_scope_glob_and_resource_attributes_are_matched() -> None:
    text = """
categories:
  admin:
    match: [{scope: 'myapp.admin.*'}]
  tenant_a:
    match: [{attribute: tenant.id, equals: a}]
"""
    assert route(log_record("x"), config_text=text, scope="myapp.admin.users") == {"admin": ["x"]}
    assert route(log_record("y"), config_text=text, resource={"tenant.id": "a"}) == {"tenant_a": ["y"]}
    assert route(log_record("z"), config_text=text, resource={"tenant.id": "b"}) == {"app": ["z"]}


def test_overriding_a_builtin_match_replaces_its_rules() -> None:
    text = "categories:\n  access:\n    match: [{attribute: my.http}]\n"
    routes = route(log_record("a", attributes={"http.route": "/x"}),
                   log_record("b", attributes={"my.http": 1}), config_text=text)
    assert routes == {"app": ["a"], "access": ["b"]}


def test_out_of_range_severity_numbers_count_as_unspecified() -> None:
    routes = route(log_record("huge", severity=2147483647), log_record("negative", severity=-5),
                   log_record("by text", severity=99, severity_text="ERROR"))
    assert routes == {"app": ["huge", "negative"], "error": ["by text"]}


def test_event_name_condition_reads_the_field_or_else_the_event_name_attribute() -> None:
    config = "categories:\n  security:\n    match:\n      - event_name: auth.failure\n"
    by_field = log_record("field")
    by_field.event_name = "auth.failure"
    routes = route(
        by_field,
        log_record("attr", attributes={"event.name": "auth.failure"}),
        log_record("other", attributes={"event.name": "auth.login"}),
        config_text=config,
    )
    assert routes == {"security": ["field", "attr"], "app": ["other"]}


def test_a_client_cannot_write_into_the_reserved_alerts_category() -> None:
    """Only the alert evaluator writes `alerts`; a forged log.category is routed as if absent."""
    routes = route(log_record("forged", attributes={"log.category": "alerts"}))
    assert routes == {"app": ["forged"]}
    assert "alerts" in parse_config("{}").routing.names
