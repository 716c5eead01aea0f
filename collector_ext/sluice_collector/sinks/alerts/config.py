"""Config of the alert sink: `alerts:` — the rules, their state, and the Alertmanager to tell.

Every key is documented in docs/alerting.md. A rule's `match` items take the category rules'
conditions (`processors/routing.py`: parsed by `parse_match_rule`, so a condition means the
same in both places) plus `category`, the category the record was routed to. Every problem is
reported at once with its key path, as everywhere in the config (`configreader.Section`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sluice_collector.configreader import Section
from sluice_collector.processors.routing import CATEGORY_NAME_RE, MatchRule, parse_match_rule
from sluice_collector.sinks._delivery.settings import parse_headers, valid_http_url
from sluice_collector.sinks.alerts.template import SYNTAX_HELP, Template, TemplateError

MiB = 1024 * 1024
_RULE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
# group_by forms that name a field of the record rather than an attribute.
RECORD_FIELDS = ("category", "event_name", "severity", "scope")
GROUP_BY_FORMS = ("KEY (the record's attribute, else its resource's), attributes.KEY, "
                  "resource.KEY, or one of $category, $event_name, $severity, $scope")
# Template names every alert has; `count`, `total`, `ratio`, `body`, ... change with the records,
# so only the stable ones may go into labels (labels are the alert's identity in Alertmanager).
STABLE_NAMES = frozenset({"alertname", "window", "threshold", "tenant"})
VARYING_NAMES = frozenset({"count", "total", "ratio", "body", "category", "event_name", "severity"})
BUILTIN_NAMES = STABLE_NAMES | VARYING_NAMES
RESERVED_LABELS = frozenset({"alertname", "tenant"})


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """One item of a rule's `match` (or `ratio.of`): every condition must hold."""

    categories: tuple[str, ...] = ()  # the routed category is one of these (empty: any)
    rule: MatchRule = field(default_factory=MatchRule)


@dataclass(frozen=True, slots=True)
class GroupKey:
    """One `group_by` entry: where its value comes from and the label it becomes."""

    text: str  # as written: "user.id", "resource.service.name", "$category"
    label: str  # the Alertmanager label name: "user_id", "service_name", "category"
    source: Literal["any", "record", "resource", "field"]
    key: str  # the attribute key, or the record field's name


@dataclass(frozen=True, slots=True)
class RatioThreshold:
    """`ratio`: fire when matching/total of a group is above `above` over the window."""

    above: float  # 0 ≤ above < 1
    above_text: str  # as written, for {threshold}: "5%"
    of: tuple[RuleMatch, ...] = ()  # the records that make the total (empty: every log record)
    min_total: int = 10


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One item of `alerts.rules`."""

    name: str
    window_s: float
    window_text: str
    match: tuple[RuleMatch, ...] = ()  # any of these (empty: every log record)
    threshold: int | None = 1  # count form: fire at this many matching records in the window
    ratio: RatioThreshold | None = None  # ratio form (then threshold is None)
    group_by: tuple[GroupKey, ...] = ()
    labels: tuple[tuple[str, Template], ...] = ()
    annotations: tuple[tuple[str, Template], ...] = ()
    generator_url: Template | None = None

    @property
    def identity(self) -> str:
        """What the window state depends on: state saved under another identity is not
        restored (docs/alerting.md, "What survives a restart")."""
        text = repr((self.window_s, self.match, self.threshold, self.ratio, self.group_by))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def template_names(self) -> frozenset[str]:
        names: set[str] = set()
        for _, template in (*self.labels, *self.annotations):
            names |= template.names
        if self.generator_url is not None:
            names |= self.generator_url.names
        return frozenset(names)

    @property
    def threshold_text(self) -> str:
        return self.ratio.above_text if self.ratio is not None else str(self.threshold)


@dataclass(frozen=True, slots=True)
class AlertmanagerTlsConfig:
    ca_file: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class AlertmanagerConfig:
    """`alerts.alertmanager`: where alerts are POSTed (`{url}/api/v2/alerts`)."""

    url: str
    timeout_s: float = 10.0
    resend_interval_s: float = 60.0
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold credentials
    tls: AlertmanagerTlsConfig = field(default_factory=AlertmanagerTlsConfig)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    spool_max_bytes: int = 16 * MiB

    @property
    def ends_after_s(self) -> float:
        """How far ahead a firing alert's endsAt is put: Prometheus' 4 × resend interval, so
        Alertmanager resolves it by itself if this receiver disappears."""
        return 4 * self.resend_interval_s


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """`alerts:` of the receiver config."""

    enabled: bool = False
    rules: tuple[AlertRule, ...] = ()
    alertmanager: AlertmanagerConfig | None = None
    evaluation_interval_s: float = 1.0
    max_groups: int = 10_000
    state_directory: Path | None = None  # None: <files.directory>/.alerts
    save_interval_s: float = 10.0

    @classmethod
    def from_section(cls, section: Section) -> AlertsConfig:
        rules: list[AlertRule] = []
        names: set[str] = set()
        for item in section.section_list("rules"):
            rule = _parse_rule(item)
            if rule is None:
                continue
            if rule.name in names:
                item.error("alert", f"got {rule.name!r}; another rule already has this name")
                continue
            names.add(rule.name)
            rules.append(rule)
        enabled = section.get_bool("enabled", bool(rules)) if section.has("enabled") else bool(rules)
        am = section.section("alertmanager")
        alertmanager = _parse_alertmanager(am) if am.present else None
        state = section.section("state")
        directory = state.get_optional_str("directory")
        default_generator = section.get_optional_str("generator_url")
        if default_generator is not None:
            template = _template(section, "generator_url", default_generator)
            if template is not None:
                _stable_only(section, "generator_url", template, (), "the generator URL")
                rules = [r if r.generator_url is not None else _with_generator(r, template)
                         for r in rules]
        return cls(
            enabled=enabled,
            rules=tuple(rules),
            alertmanager=alertmanager,
            evaluation_interval_s=section.get_duration("evaluation_interval", 1.0, minimum=0.01),
            max_groups=section.get_int("max_groups", 10_000, minimum=1),
            state_directory=Path(directory) if directory else None,
            save_interval_s=state.get_duration("save_interval", 10.0, minimum=0.1),
        )


def _with_generator(rule: AlertRule, template: Template) -> AlertRule:
    return AlertRule(
        name=rule.name, window_s=rule.window_s, window_text=rule.window_text, match=rule.match,
        threshold=rule.threshold, ratio=rule.ratio, group_by=rule.group_by, labels=rule.labels,
        annotations=rule.annotations, generator_url=template,
    )


# -- rules ---------------------------------------------------------------------------------------
def _parse_rule(s: Section) -> AlertRule | None:
    ok = True
    name = s.get_str("alert", "")
    if not name:
        s.error("alert", "is required: the alert's name (its `alertname` label), e.g. FailedLogins")
        ok = False
    elif not _RULE_NAME_RE.match(name):
        s.error("alert", f"got {name!r}; expected letters, digits and '_', not starting with a digit")
        ok = False
    window_s, window_text = _window(s)
    if window_s is None:
        ok = False
    match = _parse_matches(s, "match")
    threshold: int | None = None
    ratio: RatioThreshold | None = None
    if s.has("ratio"):
        if s.has("threshold"):
            s.error("threshold", "a rule has either threshold (a count) or ratio (a share of "
                                 "a total), not both")
            ok = False
        ratio = _parse_ratio(s.section("ratio"))
        ok = ok and ratio is not None
    else:
        threshold = s.get_int("threshold", 1, minimum=1)
    group_by = _parse_group_by(s)
    ok = ok and group_by is not None
    group = group_by or ()
    labels = _parse_templates(s, "labels", group, stable=True)
    annotations = _parse_templates(s, "annotations", group, stable=False)
    generator_url: Template | None = None
    generator_text = s.get_optional_str("generator_url")
    if generator_text is not None:
        generator_url = _template(s, "generator_url", generator_text)
        if generator_url is not None:
            _stable_only(s, "generator_url", generator_url, group, "the generator URL")
    if not ok or labels is None or annotations is None or window_s is None:
        return None
    return AlertRule(
        name=name, window_s=window_s, window_text=window_text, match=match, threshold=threshold,
        ratio=ratio, group_by=group, labels=labels, annotations=annotations,
        generator_url=generator_url,
    )


def _window(s: Section) -> tuple[float | None, str]:
    raw = s.raw("window")
    if raw is None:
        s.error("window", 'is required: how far back the rule counts, e.g. "5m" (1s to 31d)')
        return None, ""
    before = len(s.problems)
    seconds = s.get_duration("window", 0.0, minimum=1.0)
    if len(s.problems) > before:
        return None, ""
    if seconds > 31 * 86400:
        s.error("window", f"got {raw!r}; expected a duration from 1s to 31d, e.g. \"5m\"")
        return None, ""
    text = raw.strip() if isinstance(raw, str) else f"{raw:g}s"
    return seconds, text


def _parse_matches(s: Section, key: str) -> tuple[RuleMatch, ...]:
    out: list[RuleMatch] = []
    for item in s.section_list(key):
        categories = tuple(item.get_str_list("category", []))
        for category in categories:
            # Any valid name: categories may also come from a client's log.category.
            if not CATEGORY_NAME_RE.match(category):
                item.error("category", f"got {category!r}; expected a category name "
                                       "(lower-case letters, digits, '_' and '-')")
        rule = parse_match_rule(item, allow_empty=True)
        if not item.keys():  # (unknown keys alone are reported as such, at the end)
            item.error("", "an empty match item matches every record; leave `match` out for "
                           "that, or give category or any condition of the category rules")
        out.append(RuleMatch(categories=categories, rule=rule))
    return tuple(out)


def _parse_ratio(s: Section) -> RatioThreshold | None:
    raw = s.raw("above")
    above: float | None = None
    text = ""
    if isinstance(raw, str) and _PERCENT_RE.match(raw):
        above = float(_PERCENT_RE.match(raw).group(1)) / 100  # type: ignore[union-attr]
        text = raw.strip()
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        above = float(raw)
        text = f"{above * 100:g}%"
    if above is None or not 0 <= above < 1:
        s.error("above", f"got {raw!r}; expected a share below 1, as a number (0.05) or a "
                         'percentage ("5%")')
        above = None
    of = _parse_matches(s, "of")
    min_total = s.get_int("min_total", 10, minimum=1)
    if above is None:
        return None
    return RatioThreshold(above=above, above_text=text, of=of, min_total=min_total)


def _parse_group_by(s: Section) -> tuple[GroupKey, ...] | None:
    raw = s.raw("group_by")
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        s.error("group_by", f"got {raw!r}; expected a list of {GROUP_BY_FORMS}")
        return None
    out: list[GroupKey] = []
    labels: set[str] = set()
    ok = True
    for index, text in enumerate(items):
        key = f"group_by[{index}]" if isinstance(raw, list) else "group_by"
        group = _group_key(text)
        if group is None:
            s.error(key, f"got {text!r}; unknown group_by form; expected {GROUP_BY_FORMS}")
            ok = False
            continue
        if group.label in labels:
            s.error(key, f"got {text!r}; another group_by entry already makes the label "
                         f"{group.label!r}")
            ok = False
            continue
        if group.label in RESERVED_LABELS:
            s.error(key, f"got {text!r}; the label {group.label!r} is set by sluice itself")
            ok = False
            continue
        labels.add(group.label)
        out.append(group)
    return tuple(out) if ok else None


def _group_key(text: object) -> GroupKey | None:
    if not isinstance(text, str):
        return None
    if text.startswith("$"):
        name = text[1:]
        return GroupKey(text, name, "field", name) if name in RECORD_FIELDS else None
    source: Literal["any", "record", "resource"] = "any"
    key = text
    for prefix, where in (("attributes.", "record"), ("resource.", "resource")):
        if text.startswith(prefix) and len(text) > len(prefix):
            source, key = where, text[len(prefix):]  # type: ignore[assignment]
            break
    if not _KEY_RE.match(key):
        return None
    label = re.sub(r"[^A-Za-z0-9_]", "_", key)
    return GroupKey(text, label, source, key)


def _parse_templates(s: Section, key: str, group: tuple[GroupKey, ...], *,
                     stable: bool) -> tuple[tuple[str, Template], ...] | None:
    raw = s.raw(key)
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        s.error(key, f"got {raw!r}; expected a mapping of names to templates")
        return None
    out: list[tuple[str, Template]] = []
    ok = True
    group_labels = {g.label for g in group}
    for name, value in raw.items():
        path = f"{key}.{name}"
        if not isinstance(name, str) or not _LABEL_NAME_RE.match(name):
            s.error(path, "names are letters, digits and '_', not starting with a digit")
            ok = False
            continue
        if stable and (name in RESERVED_LABELS or name in group_labels or name.startswith("__")):
            why = ("group_by already sets it" if name in group_labels
                   else "sluice sets it itself" if name in RESERVED_LABELS
                   else "names starting with __ are Alertmanager's own")
            s.error(path, f"cannot be set here: {why}")
            ok = False
            continue
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            s.error(path, f"got {value!r}; expected a template string")
            ok = False
            continue
        template = _template(s, path, str(value))
        if template is None:
            ok = False
            continue
        if stable and not _stable_only(s, path, template, group, "a label"):
            ok = False
            continue
        out.append((name, template))
    return tuple(out) if ok else None


def _template(s: Section, key: str, text: str) -> Template | None:
    try:
        return Template.parse(text)
    except TemplateError as exc:
        s.error(key, f"got {text!r}; bad template: {exc}; {SYNTAX_HELP}")
        return None


def _stable_only(s: Section, key: str, template: Template, group: tuple[GroupKey, ...],
                 what: str) -> bool:
    """Labels (and the generator URL) may only use names that stay the same while the alert
    fires: a label that changed with every record would make a new alert each time."""
    allowed = set(STABLE_NAMES) | {g.text for g in group} | {g.label for g in group}
    bad = sorted(template.names - allowed)
    if bad:
        listing = ", ".join(f"{{{n}}}" for n in sorted(allowed) if not n.startswith("$"))
        s.error(key, f"got {template.text!r}; {what} may use only names that stay the same "
                     f"while the alert fires ({listing}), not {', '.join(f'{{{b}}}' for b in bad)}; "
                     "put changing values into annotations")
        return False
    return True


# -- alertmanager --------------------------------------------------------------------------------
def _parse_alertmanager(s: Section) -> AlertmanagerConfig | None:
    ok = True
    url = s.get_str("url", "")
    if not url:
        s.error("url", "is required: the Alertmanager's base URL, e.g. http://alertmanager:9093")
        ok = False
    elif not valid_http_url(url):
        s.error("url", f"got {url!r}; expected http://HOST:PORT[/PREFIX] or https://... "
                       "(sluice POSTs to <url>/api/v2/alerts)")
        ok = False
    headers = parse_headers(s)
    t = s.section("tls")
    ca_file = t.get_optional_str("ca_file")
    if ca_file and not Path(ca_file).is_file():
        t.error("ca_file", f"got {ca_file!r}; expected the path of a readable file")
        ok = False
    tls = AlertmanagerTlsConfig(ca_file=ca_file or None,
                                insecure_skip_verify=t.get_bool("insecure_skip_verify", False))
    if t.present and url and not url.startswith("https://"):
        t.error("", f"is set but url {url!r} is not https://; use https:// for TLS")
        ok = False
    backoff_initial_s = s.get_duration("backoff_initial_s", 0.5, minimum=0.01)
    backoff_max_s = s.get_duration("backoff_max_s", 30.0, minimum=0.01)
    if backoff_max_s < backoff_initial_s:
        s.error("backoff_max_s", f"got {backoff_max_s:g}s; expected at least backoff_initial_s "
                                 f"({backoff_initial_s:g}s)")
        ok = False
    config = AlertmanagerConfig(
        url=url.rstrip("/"),
        timeout_s=s.get_duration("timeout_s", 10.0, minimum=0.01),
        resend_interval_s=s.get_duration("resend_interval", 60.0, minimum=0.1),
        headers=headers,
        tls=tls,
        backoff_initial_s=backoff_initial_s,
        backoff_max_s=backoff_max_s,
        spool_max_bytes=s.section("spool").get_size("max_bytes", 16 * MiB, minimum=64 * 1024),
    )
    return config if ok else None


__all__ = [
    "AlertRule",
    "AlertmanagerConfig",
    "AlertmanagerTlsConfig",
    "AlertsConfig",
    "GroupKey",
    "RatioThreshold",
    "RuleMatch",
]
