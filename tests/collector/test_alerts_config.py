"""`alerts:` config: typed rules, and every problem named by its key, all at once."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sluice_collector.errors import ConfigError
from sluice_collector.service.config import load_config, parse_config
from sluice_collector.sinks.alerts.config import AlertsConfig


def alerts(settings: dict[str, Any]) -> AlertsConfig:
    return parse_config(yaml.safe_dump({"alerts": settings}), env={}).alerts


def problems(settings: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump({"alerts": settings}), env={})
    return [str(p) for p in info.value.problems]


RULE: dict[str, Any] = {"alert": "Burst", "match": [{"category": "security"}], "window": "5m",
                        "threshold": 5}


def test_no_alerts_section_means_no_rules_and_the_sink_off() -> None:
    config = parse_config("{}").alerts
    assert config.enabled is False
    assert config.rules == ()


def test_a_rule_parses_into_typed_values() -> None:
    config = alerts({"rules": [{
        **RULE, "group_by": ["user.id", "resource.service.name", "$category", "attributes.x-y"],
        "labels": {"severity": "warning", "team": "{service_name}"},
        "annotations": {"summary": "{count} in {window} for {user.id}: {body}"},
    }], "alertmanager": {"url": "http://am:9093/", "resend_interval": "30s"}})
    assert config.enabled
    [rule] = config.rules
    assert (rule.name, rule.window_s, rule.window_text, rule.threshold) == ("Burst", 300.0, "5m", 5)
    assert [(g.text, g.label, g.source, g.key) for g in rule.group_by] == [
        ("user.id", "user_id", "any", "user.id"),
        ("resource.service.name", "service_name", "resource", "service.name"),
        ("$category", "category", "field", "category"),
        ("attributes.x-y", "x_y", "record", "x-y"),
    ]
    assert rule.match[0].categories == ("security",)
    assert config.alertmanager is not None
    assert config.alertmanager.url == "http://am:9093"
    assert config.alertmanager.ends_after_s == 120.0


def test_ratio_rules_accept_a_percentage_or_a_share() -> None:
    config = alerts({"rules": [
        {"alert": "A", "window": "5m", "match": [{"severity_at_least": "ERROR"}],
         "ratio": {"above": "5%", "min_total": 20}},
        {"alert": "B", "window": "5m", "match": [{"severity_at_least": "ERROR"}],
         "ratio": {"above": 0.125, "of": [{"category": "access"}]}},
    ]})
    a, b = config.rules
    assert a.ratio is not None
    assert (a.ratio.above, a.ratio.min_total, a.threshold_text) == (0.05, 20, "5%")
    assert b.ratio is not None
    assert (b.ratio.above, b.ratio.min_total, b.threshold_text) == (0.125, 10, "12.5%")
    assert b.ratio.of[0].categories == ("access",)


def test_the_embedded_default_ships_the_security_rules() -> None:
    config = load_config(None).alerts
    assert config.enabled
    assert config.alertmanager is None
    assert [r.name for r in config.rules] == [
        "FailedLoginsPerUser", "FailedLoginsPerSource", "AuditRoleOrPermissionChange",
        "AuditChainBroken",
    ]


def test_every_problem_is_reported_at_once_with_its_key() -> None:
    found = problems({"rules": [
        {"alert": "Bad-Name", "match": [{"atribute": "x"}], "window": "5 minutes",
         "threshold": 0, "group_by": ["user id", "$nope"],
         "labels": {"who": "{count}", "alertname": "x"},
         "annotations": {"summary": "{count!r}"}},
        {"alert": "NoWindow", "ratio": {"above": "150%"}, "threshold": 3,
         "match": [{"category": "Security", "matches": "("}]},
    ], "alertmanager": {"url": "ftp://am"}, "evaluation_interval": "soon"})
    assert found == [
        "alerts.rules[0].alert: got 'Bad-Name'; expected letters, digits and '_', not starting "
        "with a digit",
        "alerts.rules[0].window: got '5 minutes'; expected a duration ≥ 1s, e.g. 5, \"500ms\", "
        "\"30s\", \"5m\", \"1h\" or \"7d\"",
        "alerts.rules[0].threshold: got 0; expected a whole number ≥ 1",
        "alerts.rules[0].group_by[0]: got 'user id'; unknown group_by form; expected KEY (the "
        "record's attribute, else its resource's), attributes.KEY, resource.KEY, or one of "
        "$category, $event_name, $severity, $scope",
        "alerts.rules[0].group_by[1]: got '$nope'; unknown group_by form; expected KEY (the "
        "record's attribute, else its resource's), attributes.KEY, resource.KEY, or one of "
        "$category, $event_name, $severity, $scope",
        "alerts.rules[0].labels.alertname: cannot be set here: sluice sets it itself",
        "alerts.rules[0].labels.who: got '{count}'; a label may use only names that stay the "
        "same while the alert fires ({alertname}, {tenant}, {threshold}, {window}), not {count}; "
        "put changing values into annotations",
        "alerts.rules[0].annotations.summary: got '{count!r}'; bad template: field {count!r} is "
        "not a plain name at character 1; templates are text with {name} fields (name: letters, "
        "digits, '_', '.', '-', '/'), and {{ }} for literal braces; no format specs, conversions "
        "or expressions",
        "alerts.rules[1].window: is required: how far back the rule counts, e.g. \"5m\" (1s to 31d)",
        "alerts.rules[1].match[0].category: got 'Security'; expected a category name (lower-case "
        "letters, digits, '_' and '-')",
        "alerts.rules[1].match[0].matches: got '('; not a valid regular expression: missing ), "
        "unterminated subpattern at position 0",
        "alerts.rules[1].threshold: a rule has either threshold (a count) or ratio (a share of a "
        "total), not both",
        "alerts.rules[1].ratio.above: got '150%'; expected a share below 1, as a number (0.05) or "
        "a percentage (\"5%\")",
        "alerts.alertmanager.url: got 'ftp://am'; expected http://HOST:PORT[/PREFIX] or "
        "https://... (sluice POSTs to <url>/api/v2/alerts)",
        "alerts.evaluation_interval: got 'soon'; expected a duration ≥ 0.01s, e.g. 5, \"500ms\", "
        "\"30s\", \"5m\", \"1h\" or \"7d\"",
        "alerts.rules[0].match[0].atribute: unknown key; did you mean 'attribute'? known keys "
        "here: attribute, attribute_prefix, body_matches, category, equals, event_name, matches, "
        "scope, severity_at_least",
    ]


def test_an_empty_match_item_is_refused() -> None:
    assert problems({"rules": [{**RULE, "match": [{}]}]}) == [
        "alerts.rules[0].match[0]: an empty match item matches every record; leave `match` out "
        "for that, or give category or any condition of the category rules"]


def test_labels_may_only_use_values_that_stay_the_same_while_firing() -> None:
    """A label that changed with every record would make a new alert each time."""
    [problem] = problems({"rules": [{**RULE, "group_by": ["user.id"],
                                     "labels": {"who": "{user.id}", "n": "{count} {body}"}}]})
    assert problem == (
        "alerts.rules[0].labels.n: got '{count} {body}'; a label may use only names that stay "
        "the same while the alert fires ({alertname}, {tenant}, {threshold}, {user.id}, "
        "{user_id}, {window}), not {body}, {count}; put changing values into annotations")


def test_group_by_labels_must_not_collide() -> None:
    assert problems({"rules": [{**RULE, "group_by": ["user.id", "user_id", "tenant"],
                                "labels": {"user_id": "x"}}]}) == [
        "alerts.rules[0].group_by[1]: got 'user_id'; another group_by entry already makes the "
        "label 'user_id'",
        "alerts.rules[0].group_by[2]: got 'tenant'; the label 'tenant' is set by sluice itself",
    ]


def test_rule_names_are_unique_and_windows_bounded() -> None:
    assert problems({"rules": [RULE, {**RULE, "window": "40d"}]}) == [
        "alerts.rules[1].window: got '40d'; expected a duration from 1s to 31d, e.g. \"5m\"",
    ]
    assert problems({"rules": [RULE, RULE]}) == [
        "alerts.rules[1].alert: got 'Burst'; another rule already has this name",
    ]


def test_unknown_rule_keys_get_a_did_you_mean() -> None:
    [problem] = problems({"rules": [{**RULE, "treshold": 3}]})
    assert problem.startswith("alerts.rules[0].treshold: unknown key; did you mean 'threshold'?")


def test_the_generator_url_is_a_template_of_stable_names() -> None:
    config = alerts({"generator_url": "http://grafana/alerts?name={alertname}",
                     "rules": [RULE, {**RULE, "alert": "Own", "group_by": ["user.id"],
                                      "generator_url": "http://x/{user.id}"}]})
    assert [r.generator_url.text if r.generator_url else None for r in config.rules] == [
        "http://grafana/alerts?name={alertname}", "http://x/{user.id}"]
    [problem] = problems({"generator_url": "http://x/{user.id}", "rules": [RULE]})
    assert problem.startswith("alerts.generator_url: got 'http://x/{user.id}'; the generator URL "
                              "may use only names")


def test_alerts_can_be_turned_off_while_keeping_the_rules() -> None:
    assert alerts({"enabled": False, "rules": [RULE]}).enabled is False


def test_the_documented_examples_parse_and_the_shipped_rules_are_the_defaults() -> None:
    """docs/alerting.md's YAML is a config the receiver accepts, and its shipped rules are the
    embedded default's (plus the error rate, which the default leaves out)."""
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "alerting.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", docs, flags=re.S) if b.startswith("alerts:")]
    assert len(blocks) == 2
    quick, shipped = (parse_config(b).alerts for b in blocks)
    assert quick.alertmanager is not None
    default = load_config(None).alerts.rules
    assert [r.name for r in shipped.rules] == [*(r.name for r in default), "ServiceErrorRate"]
    for documented, embedded in zip(shipped.rules, default, strict=False):
        assert (documented.match, documented.window_s, documented.threshold, documented.group_by,
                documented.labels) == (embedded.match, embedded.window_s, embedded.threshold,
                                       embedded.group_by, embedded.labels), documented.name
