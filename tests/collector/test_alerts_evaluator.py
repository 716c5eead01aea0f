"""The alert evaluator: matching with the category rules' conditions, windows, groups, ratios,
the group bound and saved state — all on times the test passes in (no clock, no waiting)."""

from __future__ import annotations

from typing import Any

import yaml

from sluice_collector.batch import Batch, Signal
from sluice_collector.processors.routing import CategoryRouter
from sluice_collector.service.config import parse_config
from sluice_collector.sinks.alerts.evaluator import AlertEvaluator, AlertEvent
from tests.otlp_builders import log_record, logs_request

T0 = 1_800_000_000.0  # any fixed instant: nothing here reads today's date
FAILED = {"log.category": "security", "event.name": "auth.failure"}
PER_USER: dict[str, Any] = {
    "alert": "FailedLogins", "window": "5m", "threshold": 5, "group_by": ["user.id"],
    "match": [{"category": "security", "event_name": "auth.failure"}],
    "labels": {"severity": "warning"},
    "annotations": {"summary": "{count} failed logins for {user.id} in {window}",
                    "last": "{body} from {client.address}"},
}


class Rig:
    """An evaluator with the real router in front of it, as in the receiver."""

    def __init__(self, *rules: dict[str, Any], max_groups: int = 10_000) -> None:
        config = parse_config(yaml.safe_dump({"alerts": {"rules": list(rules),
                                                         "max_groups": max_groups}}))
        self.router = CategoryRouter(config.routing)
        self.dropped: list[str] = []
        self.evaluator = AlertEvaluator(config.alerts.rules, max_groups=max_groups,
                                        on_group_dropped=self.dropped.append)

    def batch(self, *records: Any, tenant: str = "", resource: dict[str, Any] | None = None) -> Batch:
        batch = Batch(Signal.LOGS, logs_request(*records, resource=resource), 0, tenant=tenant)
        return self.router(batch)

    def send(self, at: float, *records: Any, **kw: Any) -> list[AlertEvent]:
        return self.evaluator.apply(self.evaluator.scan(self.batch(*records, **kw)), at, at)

    def tick(self, at: float) -> list[AlertEvent]:
        return self.evaluator.tick(at, at)


def failed(user: str | None, source: str = "203.0.113.1", **extra: Any) -> Any:
    attrs = {**FAILED, "client.address": source, **extra}
    if user is not None:
        attrs["user.id"] = user
    return log_record("login failed", severity=13, attributes=attrs)


def summary(events: list[AlertEvent]) -> list[tuple[str, str, str]]:
    return [(e.status, e.rule, ",".join(f"{k}={v}" for k, v in e.labels if k != "alertname"))
            for e in events]


def test_five_failures_for_one_user_fire_once_with_the_user_in_the_labels() -> None:
    rig = Rig(PER_USER)
    events = []
    for i in range(6):
        events += rig.send(T0 + 10 * i, failed("alice"))
    assert summary(events) == [("firing", "FailedLogins", "severity=warning,user_id=alice")]
    [event] = events
    assert event.starts_at == T0 + 40  # the fifth
    assert dict(event.annotations) == {"summary": "5 failed logins for alice in 5m",
                                       "last": "login failed from 203.0.113.1"}
    assert rig.evaluator.firing_counts() == {"FailedLogins": 1}


def test_failures_spread_over_users_or_other_records_fire_nothing() -> None:
    rig = Rig(PER_USER)
    events = rig.send(T0, *(failed(f"user{i}") for i in range(5)))
    events += rig.send(T0, *(log_record("login failed", attributes={"user.id": "bob"})
                             for _ in range(5)))  # not in security, no event name
    events += rig.send(T0, *(failed(None) for _ in range(5)))  # no user: not counted per user
    assert events == []


def test_the_alert_resolves_once_the_window_no_longer_holds_the_threshold() -> None:
    rig = Rig(PER_USER)
    for i in range(6):
        rig.send(T0 + 10 * i, failed("alice"))
    # 5 minutes after the second failure (T0+10) only four are left in the window; the window
    # is 30 buckets of 10 s, so the record of T0+10 leaves at T0+310 at the latest.
    assert rig.tick(T0 + 299) == []
    assert summary(rig.tick(T0 + 320)) == [("resolved", "FailedLogins",
                                            "severity=warning,user_id=alice")]
    assert rig.tick(T0 + 10_000) == []
    assert rig.evaluator.group_counts() == {"FailedLogins": 0}  # idle groups are forgotten


def test_a_resolution_keeps_the_start_and_the_last_annotations() -> None:
    rig = Rig(PER_USER)
    fired = rig.send(T0, *(failed("alice") for _ in range(7)))
    [resolved] = rig.tick(T0 + 400)
    assert resolved.starts_at == fired[0].starts_at == T0
    assert resolved.ends_at == T0 + 400
    assert dict(resolved.annotations)["summary"] == "7 failed logins for alice in 5m"
    assert resolved.fingerprint == fired[0].fingerprint


def test_resends_render_annotations_from_the_window_as_it_is_now() -> None:
    rig = Rig(PER_USER)
    rig.send(T0, *(failed("alice") for _ in range(5)))
    rig.send(T0 + 1, failed("alice", source="198.51.100.2"))
    [firing] = rig.evaluator.firing()
    assert dict(firing.annotations) == {"summary": "6 failed logins for alice in 5m",
                                        "last": "login failed from 198.51.100.2"}


def test_groups_are_per_tenant_and_the_tenant_is_a_label() -> None:
    rig = Rig(PER_USER)
    events = rig.send(T0, *(failed("alice") for _ in range(3)), tenant="acme")
    events += rig.send(T0, *(failed("alice") for _ in range(3)), tenant="globex")
    assert events == []
    events = rig.send(T0, *(failed("alice") for _ in range(2)), tenant="acme")
    assert summary(events) == [("firing", "FailedLogins", "severity=warning,tenant=acme,user_id=alice")]
    assert events[0].tenant == "acme"


def test_group_by_reads_the_resource_and_record_fields() -> None:
    rule = {"alert": "Noisy", "window": "1m", "threshold": 2,
            "group_by": ["service.name", "$category", "$severity", "$scope", "$event_name"]}
    rig = Rig(rule)
    events = rig.send(T0, failed("a"), failed("b"), resource={"service.name": "shop"})
    assert summary(events) == [("firing", "Noisy", "category=security,event_name=auth.failure,"
                                "scope=test.scope,service_name=shop,severity=WARN")]


def test_ratio_rules_fire_above_the_share_and_need_a_minimum_total() -> None:
    rule = {"alert": "ErrorRate", "window": "5m", "group_by": ["service.name"],
            "match": [{"severity_at_least": "ERROR"}], "ratio": {"above": "10%", "min_total": 20},
            "annotations": {"summary": "{ratio} errors ({count} of {total})"}}
    rig = Rig(rule)
    ok = [log_record("fine", severity=9) for _ in range(16)]
    errors = [log_record("boom", severity=17) for _ in range(3)]
    assert rig.send(T0, *ok, *errors, resource={"service.name": "shop"}) == []  # 19 < min_total
    events = rig.send(T0 + 1, log_record("fine"), resource={"service.name": "shop"})
    assert summary(events) == [("firing", "ErrorRate", "service_name=shop")]  # 3/20 = 15 %
    assert dict(events[0].annotations) == {"summary": "15% errors (3 of 20)"}
    # Healthy traffic dilutes the errors to 3/30 = 10 %, which is not above 10 %.
    events = rig.send(T0 + 2, *(log_record("fine") for _ in range(10)),
                      resource={"service.name": "shop"})
    assert summary(events) == [("resolved", "ErrorRate", "service_name=shop")]
    assert rig.send(T0 + 2, log_record("x"), resource={"service.name": "other"}) == []


def test_a_ratio_total_can_be_narrowed_to_some_records() -> None:
    rule = {"alert": "ServerErrors", "window": "5m", "ratio": {
        "above": 0.5, "min_total": 2, "of": [{"category": "access"}]},
        "match": [{"attribute": "http.response.status_code", "matches": "^5"}]}
    rig = Rig(rule)
    access = {"http.route": "/x"}
    events = rig.send(T0, log_record("a", attributes={**access, "http.response.status_code": 500}),
                      log_record("b", attributes={**access, "http.response.status_code": 200}),
                      log_record("app noise", attributes={"http.response.status_code": 503}))
    assert events == []  # 1 of 2 access records: not above half; the app record is not counted
    events = rig.send(T0, log_record("c", attributes={**access, "http.response.status_code": 502}))
    assert summary(events) == [("firing", "ServerErrors", "")]


def test_match_items_are_any_of_and_their_conditions_all_of() -> None:
    rule = {"alert": "Audit", "window": "15m", "threshold": 1, "group_by": ["audit.actor"],
            "match": [{"category": "audit", "attribute": "audit.entity.type", "equals": "role"},
                      {"category": "audit", "attribute": "audit.changed_keys",
                       "matches": r"\bpermissions\b"}]}
    rig = Rig(rule)
    audit = {"log.category": "audit", "audit.actor": "root"}
    assert rig.send(T0, log_record("x", attributes={**audit, "audit.entity.type": "invoice"}),
                    log_record("y", attributes={"audit.actor": "root", "audit.entity.type": "role"})
                    ) == []  # wrong entity; right entity but not in the audit category
    events = rig.send(T0, log_record("z", attributes={
        **audit, "audit.entity.type": "user", "audit.changed_keys": ["email", "permissions"]}))
    assert summary(events) == [("firing", "Audit", "audit_actor=root")]


def test_new_groups_past_max_groups_are_not_tracked_and_counted() -> None:
    rig = Rig({**PER_USER, "threshold": 2}, max_groups=2)
    rig.send(T0, failed("a"), failed("b"), failed("c"), failed("c"))
    assert rig.evaluator.group_counts() == {"FailedLogins": 2}
    assert rig.dropped == ["FailedLogins"]
    assert rig.evaluator.firing_counts() == {"FailedLogins": 0}
    rig.tick(T0 + 1000)  # idle groups go, and new ones fit again
    assert summary(rig.send(T0 + 1000, failed("c"), failed("c"))) == [
        ("firing", "FailedLogins", "severity=warning,user_id=c")]


def test_long_group_values_are_capped_but_stay_distinct() -> None:
    rig = Rig({**PER_USER, "threshold": 1})
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    events = rig.send(T0, failed(a), failed(b))
    labels = [e.label("user_id") for e in events]
    assert len(labels) == 2
    assert labels[0] != labels[1]
    assert all(len(v) <= 256 for v in labels)


def test_state_round_trips_and_keeps_firing_alerts_without_new_events() -> None:
    rig = Rig(PER_USER)
    rig.send(T0, *(failed("alice") for _ in range(5)))
    rig.send(T0, *(failed("bob") for _ in range(3)))
    state = rig.evaluator.export_state()

    again = Rig(PER_USER)
    assert again.evaluator.import_state(state, T0 + 60, T0 + 60) == []
    assert again.evaluator.firing_counts() == {"FailedLogins": 1}
    assert again.tick(T0 + 60) == []
    # bob's three carried over: two more fire.
    assert summary(again.send(T0 + 61, failed("bob"), failed("bob"))) == [
        ("firing", "FailedLogins", "severity=warning,user_id=bob")]
    [alice] = [e for e in again.evaluator.firing() if e.label("user_id") == "alice"]
    assert alice.starts_at == T0


def test_a_changed_rule_starts_empty_and_resolves_what_it_fired() -> None:
    rig = Rig(PER_USER)
    rig.send(T0, *(failed("alice") for _ in range(5)))
    state = rig.evaluator.export_state()
    changed = Rig({**PER_USER, "window": "10m"})
    assert summary(changed.evaluator.import_state(state, T0 + 1, T0 + 1)) == [
        ("resolved", "FailedLogins", "severity=warning,user_id=alice")]
    assert changed.evaluator.group_counts() == {"FailedLogins": 0}
    gone = Rig({**PER_USER, "alert": "Other"})
    assert summary(gone.evaluator.import_state(state, T0 + 1, T0 + 1)) == [
        ("resolved", "FailedLogins", "severity=warning,user_id=alice")]


def test_new_label_templates_resolve_the_old_alert_and_fire_under_the_new_labels() -> None:
    rig = Rig(PER_USER)
    rig.send(T0, *(failed("alice") for _ in range(5)))
    relabelled = Rig({**PER_USER, "labels": {"severity": "critical"}})
    events = relabelled.evaluator.import_state(rig.evaluator.export_state(), T0 + 1, T0 + 1)
    events += relabelled.tick(T0 + 1)
    assert summary(events) == [("resolved", "FailedLogins", "severity=warning,user_id=alice"),
                               ("firing", "FailedLogins", "severity=critical,user_id=alice")]


def test_metrics_and_traces_are_never_evaluated() -> None:
    rig = Rig({"alert": "Any", "window": "1m", "threshold": 1})
    batch = Batch(Signal.TRACES, logs_request(failed("a")), 0)
    assert rig.evaluator.scan(batch).records == 0
