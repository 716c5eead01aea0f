"""Category loggers, audit records, typed events and correlation, observed through sluice.testing."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace

import sluice
from sluice._audit import changed_keys
from sluice._events import EVENT_CATEGORIES, EventType
from sluice.testing import Captured


def attrs(record: object) -> dict[str, object]:
    return dict(record.log_record.attributes or {})  # type: ignore[attr-defined]


@pytest.mark.parametrize("category", ["access", "security", "audit", "error", "system", "performance", "app",
                                      "billing"])
def test_category_logger_tags_records_with_log_category(tel: Captured, category: str) -> None:
    sluice.get_logger(category).warning("something in %s", category)
    [record] = tel.logs_in(category)
    assert record.log_record.body == f"something in {category}"


def test_category_logger_merges_the_callers_extra_instead_of_replacing_it(tel: Captured) -> None:
    sluice.get_logger("access").warning("hit", extra={"http.route": "/x", "name": "clash"})
    [record] = tel.logs_in("access")
    assert attrs(record)["http.route"] == "/x"
    assert attrs(record)["attr.name"] == "clash"


def test_category_logger_is_a_stdlib_compatible_logger(tel: Captured) -> None:
    log = sluice.get_logger(sluice.Category.SECURITY)
    assert isinstance(log, logging.LoggerAdapter)
    assert log.category == "security"
    assert log.logger.name == "sluice.security"
    assert sluice.get_logger(" Security ") is log


def test_category_loggers_log_info_even_when_root_is_at_warning(tel: Captured) -> None:
    assert logging.getLogger().getEffectiveLevel() >= logging.WARNING
    sluice.get_logger("audit").info("kept")
    assert [r.log_record.body for r in tel.logs_in("audit")] == ["kept"]


def test_audit_record_carries_actor_action_entity_old_new_and_changed_keys(tel: Captured) -> None:
    sluice.audit("user.update", actor="alice", entity_type="user", entity_id=42,
                 old={"role": "dev", "email": "a@x"}, new={"role": "admin", "email": "a@x", "team": "t"},
                 ticket="OPS-1")
    [record] = tel.logs_in("audit")
    a = attrs(record)
    assert a["audit.actor"] == "alice"
    assert a["audit.action"] == "user.update"
    assert a["audit.entity.type"] == "user"
    assert a["audit.entity.id"] == "42"
    assert a["audit.old"] == {"role": "dev", "email": "a@x"}
    assert a["audit.new"] == {"role": "admin", "email": "a@x", "team": "t"}
    assert list(a["audit.changed_keys"]) == ["role", "team"]  # type: ignore[call-overload]
    assert a["audit.status"] == "success"
    assert a["ticket"] == "OPS-1"
    assert record.log_record.event_name == "audit.user.update"
    assert a["code.function.name"] == "test_audit_record_carries_actor_action_entity_old_new_and_changed_keys"


def test_failed_audit_logs_at_warning(tel: Captured) -> None:
    sluice.audit("invoice.delete", actor="bob", entity_type="invoice", entity_id="I-1", status="denied")
    [record] = tel.logs_in("audit")
    assert record.log_record.severity_text == "WARN"
    assert attrs(record)["audit.status"] == "denied"


def test_audit_never_raises_into_the_app(tel: Captured) -> None:
    class Weird:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparisons")

        __hash__ = object.__hash__

    sluice.audit("x", actor="a", entity_type="t", entity_id=1, old={"k": Weird()}, new={"k": 1})


def test_changed_keys_covers_added_removed_and_modified() -> None:
    assert changed_keys({"a": 1, "b": 2}, {"b": 3, "c": 4}) == ["a", "b", "c"]
    assert changed_keys(None, None) == []


@pytest.mark.parametrize(("kind", "category"), [
    (EventType.AUTH_LOGIN, "security"), (EventType.API_REQUEST, "access"), (EventType.SYSTEM_START, "system"),
    (EventType.COMMIT, "audit"), (EventType.CLONE, "app"),
])
def test_event_goes_to_its_category_with_event_name(tel: Captured, kind: EventType, category: str) -> None:
    sluice.event(kind, user_id="u1", status="success", duration_ms=3.5, source_ip="10.1.1.1", files_changed=2,
                 repo="infra")
    [record] = tel.logs_in(category)
    a = attrs(record)
    assert record.log_record.event_name == kind.value == a["event.name"]
    assert a["user.id"] == "u1"
    assert a["event.duration_ms"] == 3.5
    assert a["client.address"] == "10.1.1.1"
    assert a["event.files_changed"] == 2
    assert a["repo"] == "infra"


def test_every_event_type_has_a_category() -> None:
    assert set(EVENT_CATEGORIES) == set(EventType)


def test_failure_events_log_at_warning(tel: Captured) -> None:
    sluice.event(EventType.AUTH_FAILURE, user_id="u1")
    [record] = tel.logs_in("security")
    assert record.log_record.severity_text == "WARN"


def test_unknown_event_type_is_reported_not_raised(tel: Captured) -> None:
    sluice.event("no.such.event")
    assert tel.logs == []


def test_context_puts_ids_on_logs_and_spans_and_in_baggage(tel: Captured) -> None:
    from opentelemetry import baggage

    tracer = trace.get_tracer("t")
    with sluice.context(request_id="r-1", user_id="u-1", tenant_id="t-1", session_id="s-1"):
        assert baggage.get_baggage("request.id") == "r-1"
        with tracer.start_as_current_span("op"):
            logging.getLogger("app").warning("inside")
    logging.getLogger("app").warning("outside")
    inside, outside = tel.logs
    a = attrs(inside)
    assert (a["request.id"], a["enduser.id"], a["user.id"], a["tenant.id"], a["session.id"]) == (
        "r-1", "u-1", "u-1", "t-1", "s-1")
    assert "request.id" not in attrs(outside)
    span = tel.span("op")
    assert span.attributes is not None
    assert span.attributes["request.id"] == "r-1"
    assert span.attributes["tenant.id"] == "t-1"


def test_nested_context_keeps_outer_ids_and_restores_on_exit(tel: Captured) -> None:
    with sluice.context(request_id="r-1", tenant_id="t-1"):
        with sluice.context(user_id="u-2"):
            logging.getLogger("app").warning("inner")
        logging.getLogger("app").warning("outer")
    inner, outer = tel.logs
    assert attrs(inner)["tenant.id"] == "t-1"
    assert attrs(inner)["user.id"] == "u-2"
    assert "user.id" not in attrs(outer)


def test_job_success_emits_span_records_and_metrics(tel: Captured) -> None:
    with sluice.job("msi.generate", job_id="j-1", product="tool"):
        pass
    span = tel.span("job msi.generate")
    assert span.attributes is not None
    assert span.attributes["job.id"] == "j-1"
    events = [r.log_record.event_name for r in tel.logs]
    assert events == ["job.start", "job.finish"]
    assert attrs(tel.logs[1])["job.outcome"] == "success"
    assert sum(p.value for p in tel.metric_points("job.succeeded")) == 1
    assert sum(p.count for p in tel.metric_points("job.duration")) == 1


def test_job_failure_is_recorded_and_re_raised(tel: Captured) -> None:
    @sluice.job("nightly.cleanup")
    def cleanup() -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        cleanup()
    span = tel.span("job nightly.cleanup")
    assert span.status.status_code.name == "ERROR"
    assert any(e.name == "exception" for e in span.events)
    fail = tel.logs[-1]
    assert fail.log_record.event_name == "job.fail"
    assert attrs(fail)["exception.type"] == "OSError"
    assert sum(p.value for p in tel.metric_points("job.failed")) == 1


def test_capture_text_shows_whether_a_secret_leaked(tel: Captured) -> None:
    sluice.audit("password.change", actor="alice", entity_type="user", entity_id=1)
    assert "password.change" in tel.text()
    assert "hunter2" not in tel.text()


def test_records_emitted_through_the_otel_logs_api_get_correlation_ids(tel: Captured) -> None:
    from opentelemetry._logs import get_logger_provider

    with sluice.context(request_id="r-api"):
        get_logger_provider().get_logger("direct").emit(body="via api", attributes={"k": "v"})
    [record] = [r for r in tel.logs if r.log_record.body == "via api"]
    assert attrs(record)["request.id"] == "r-api"
