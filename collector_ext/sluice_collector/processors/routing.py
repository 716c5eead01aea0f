"""Classification: every log record gets exactly one category; spans and metrics get theirs.

Order of decision for a log record:
1. its `log.category` attribute, when set by the SDK (or any client) and a valid category name;
2. the `match` rules of the configured categories, in config order (first match wins);
3. `app`.
Spans always go to `traces`, metrics to `metrics`.

A `log.category` naming a category the config does not list is accepted when the name is valid
(lower-case, `[a-z][a-z0-9_-]*`), so `sluice.get_logger("payments")` just works. At most
`MAX_DYNAMIC_CATEGORIES` such categories are accepted per receiver, so a client cannot make the
sinks open unbounded files; records beyond that, or with an invalid name, go through the rules
as if the attribute were absent. Categories with a masking override (`masking.categories`) count
as configured, so the cap never sends a record away from the category it was masked for.

The `alerts` category is reserved like `traces` and `metrics`: only the alert evaluator
(`sinks/alerts/`) writes there, so a client cannot forge alert records with `log.category`.

The match conditions are shared: alert rules (`sinks/alerts/config.py`) parse their `match` with
`parse_match_rule` and evaluate it with `compile_match_rule`, so a condition means the same
thing in a category rule and in an alert rule.

Routing emits category names only. What a category means on disk (path, rotation, retention)
is the file sink's business (`sinks/files/config.py`); both read their keys from the same
`categories.<name>` section of the config.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from sluice_collector import fastpath
from sluice_collector.batch import Batch, RecordRef, Signal
from sluice_collector.configreader import Section
from sluice_collector.errors import ConfigProblem
from sluice_collector.otlpvalues import SEVERITY_LEVELS, any_value, body_text

CATEGORY_ATTRIBUTE = "log.category"
DEFAULT_CATEGORY = "app"
TRACES_CATEGORY = "traces"
METRICS_CATEGORY = "metrics"
ALERTS_CATEGORY = "alerts"
MAX_DYNAMIC_CATEGORIES = 256
RESERVED_CATEGORIES = frozenset({TRACES_CATEGORY, METRICS_CATEGORY, ALERTS_CATEGORY})

CATEGORY_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# Every built-in category, in rule order; `match` of access/error are the defaults the seeds ask
# for. The file sink keeps its own per-category defaults (retention) for the same names.
BUILTIN_MATCH: dict[str, list[dict[str, Any]]] = {
    "access": [
        {"attribute": "http.request.method"}, {"attribute": "http.method"},
        {"attribute": "url.path"}, {"attribute": "http.route"},
    ],
    "error": [{"severity_at_least": "ERROR"}, {"attribute_prefix": "exception."}],
    "security": [],
    "audit": [],
    "system": [],
    "app": [],
    "alerts": [],
    "traces": [],
    "metrics": [],
}


@dataclass(frozen=True, slots=True)
class MatchRule:
    """One item of `categories.<name>.match`: every condition that is set must hold."""

    attribute: str | None = None  # the attribute is present (on the record, else the resource)
    equals: str | None = None  # ... and its value, as text, equals this
    matches: str | None = None  # ... or its value, as text, matches this regex (search)
    attribute_prefix: str | None = None  # some attribute key starts with this (e.g. "exception.")
    severity_at_least: int | None = None  # SeverityNumber lower bound
    scope: str | None = None  # glob on the instrumentation scope (logger) name
    body_matches: str | None = None  # regex searched in the body text
    event_name: str | None = None  # the record's event name (field, else `event.name`) equals this


@dataclass(frozen=True, slots=True)
class CategoryRule:
    name: str
    match: tuple[MatchRule, ...] = ()
    builtin: bool = False


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """The categories in rule order: the user's, in file order, then the built-in ones the
    user did not mention."""

    categories: tuple[CategoryRule, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    @classmethod
    def default(cls) -> RoutingConfig:
        return cls.from_root(Section({}, "", []))

    @classmethod
    def from_root(cls, root: Section) -> RoutingConfig:
        user = root.sections("categories")
        ordered: list[tuple[str, Section | None]] = [(n, s) for n, s in user.items()]
        ordered += [(n, None) for n in BUILTIN_MATCH if n not in user]
        out: list[CategoryRule] = []
        for name, section in ordered:
            builtin = name in BUILTIN_MATCH
            if section is not None and not CATEGORY_NAME_RE.match(name):
                root.problems.append(ConfigProblem(
                    section.path,
                    "category names are lower-case letters, digits, '_' and '-', starting with "
                    "a letter, at most 63 characters",
                ))
                continue
            default = Section({"match": BUILTIN_MATCH.get(name, [])}, f"(built-in {name})",
                              root.problems)
            match = parse_match(section if section is not None and section.has("match") else default)
            out.append(CategoryRule(name=name, match=match, builtin=builtin))
        return cls(tuple(out))


_RULE_KEYS = ("attribute", "equals", "matches", "attribute_prefix", "severity_at_least", "scope",
              "body_matches", "event_name")


def parse_match(section: Section) -> tuple[MatchRule, ...]:
    """`match`: a list of rules, each a mapping of the conditions that must all hold."""
    return tuple(parse_match_rule(item) for item in section.section_list("match"))


def parse_match_rule(item: Section, *, allow_empty: bool = False) -> MatchRule:
    """One rule of a `match` list. `allow_empty`: a rule with none of these conditions is
    accepted (and matches everything) because the caller adds conditions of its own (alert
    rules add `category`)."""
    values = {k: item.get_optional_str(k) for k in _RULE_KEYS if k != "severity_at_least"}
    severity: int | None = None
    if item.has("severity_at_least"):
        raw = item.raw("severity_at_least")
        if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= 24:
            severity = raw
        elif isinstance(raw, str) and raw.upper() in SEVERITY_LEVELS:
            severity = SEVERITY_LEVELS[raw.upper()]
        else:
            item.error("severity_at_least", f"got {raw!r}; expected one of "
                       f"{', '.join(SEVERITY_LEVELS)} or a SeverityNumber from 1 to 24")
    for regex_key in ("matches", "body_matches"):
        pattern = values[regex_key]
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                item.error(regex_key, f"got {pattern!r}; not a valid regular expression: {exc}")
                values[regex_key] = None
    if (values["equals"] is not None or values["matches"] is not None) and not values["attribute"]:
        item.error("attribute", "equals/matches need the attribute they test: add attribute: KEY")
    if not allow_empty and not any(item.has(k) for k in _RULE_KEYS):
        item.error("", f"an empty rule matches nothing; use any of: {', '.join(_RULE_KEYS)}")
    return MatchRule(severity_at_least=severity, **values)


# (resource-level, scope-level, record, record attributes as a dict, resource attribute keys)
RecordPredicate = Callable[[Any, Any, Any, dict[str, Any], frozenset[str]], bool]
_Condition = RecordPredicate


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _find(kvs: Any, key: str) -> Any:
    for kv in kvs:
        if kv.key == key:
            return kv
    return None


def compile_match_rule(rule: MatchRule) -> RecordPredicate:
    """Turn one MatchRule into a predicate over (resource-level, scope-level, record, record
    attributes as a dict, resource attribute keys); both are read once per record and once
    per resource, so presence tests are hash lookups. A rule without conditions holds always."""
    conditions: list[_Condition] = []
    if rule.attribute is not None:
        key = rule.attribute
        if rule.equals is None and rule.matches is None:
            def present(rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]) -> bool:
                return key in keys or key in rkeys
            conditions.append(present)
        else:
            expected = rule.equals
            regex = re.compile(rule.matches) if rule.matches is not None else None

            def value_test(
                rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]
            ) -> bool:
                if key in keys:
                    text = _as_text(keys[key])
                elif key in rkeys:
                    text = _as_text(any_value(_find(rl.resource.attributes, key).value))
                else:
                    return False
                if expected is not None and text != expected:
                    return False
                return regex is None or regex.search(text) is not None
            conditions.append(value_test)
    if rule.attribute_prefix is not None:
        prefix = rule.attribute_prefix

        def prefixed(rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]) -> bool:
            for k in keys:  # noqa: SIM110 - a generator costs more than the test itself
                if k.startswith(prefix):
                    return True
            return False
        conditions.append(prefixed)
    if rule.severity_at_least is not None:
        floor = rule.severity_at_least

        def severe(rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]) -> bool:
            number = rec.severity_number
            if not 0 < number <= 24:  # unset or outside the OTel range: go by the text, if any
                number = SEVERITY_LEVELS.get(rec.severity_text.upper(), 0) if rec.severity_text else 0
            return bool(number >= floor)
        conditions.append(severe)
    if rule.scope is not None:
        scope_re = re.compile(fnmatch.translate(rule.scope))

        def scoped(rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]) -> bool:
            return scope_re.match(sl.scope.name) is not None
        conditions.append(scoped)
    if rule.body_matches is not None:
        body_re = re.compile(rule.body_matches)

        def body(rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]) -> bool:
            return body_re.search(body_text(rec.body)) is not None
        conditions.append(body)
    if rule.event_name is not None:
        wanted_event = rule.event_name

        def named(rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]) -> bool:
            return bool((rec.event_name or keys.get("event.name")) == wanted_event)
        conditions.append(named)

    if len(conditions) == 1:
        return conditions[0]

    def all_of(rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]) -> bool:
        return all(cond(rl, sl, rec, keys, rkeys) for cond in conditions)
    return all_of


# A rule as the compiled twin reads it (`_fastpath.WireIndex.classify`): its conditions, each
# a tuple (kind, arguments as bytes or int) it decides from the encoding, or (PYTHON,) for one
# it leaves to the predicate. Kinds match the C enum.
_PRESENT, _PREFIX, _SEVERITY, _EQUALS, _EVENT, _PYTHON = 0, 1, 2, 3, 4, 9
_Spec = list[tuple[Any, ...]]


def rule_spec(rule: MatchRule) -> _Spec:
    """`rule`'s conditions for the compiled twin; the predicate (`compile_match_rule`) stays
    the reference for what each one means."""
    spec: _Spec = []
    if rule.attribute is not None:
        key = rule.attribute.encode()
        if rule.matches is not None:
            spec.append((_PYTHON,))
        elif rule.equals is not None:
            spec.append((_EQUALS, key, rule.equals.encode()))
        else:
            spec.append((_PRESENT, (key,)))
    if rule.attribute_prefix is not None:
        spec.append((_PREFIX, rule.attribute_prefix.encode()))
    if rule.severity_at_least is not None:
        spec.append((_SEVERITY, rule.severity_at_least))
    if rule.scope is not None or rule.body_matches is not None:
        spec.append((_PYTHON,))
    if rule.event_name is not None:
        spec.append((_EVENT, rule.event_name.encode()))
    return spec


def _compile_rules(rules: tuple[MatchRule, ...]) -> list[tuple[_Condition, _Spec]]:
    """Predicates for one category, each with its spec for the compiled twin; runs of
    presence-only rules become one set intersection, because the built-in `access` rules are
    four of them and every record is tested."""
    out: list[tuple[_Condition, _Spec]] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            wanted = frozenset(pending)

            def any_present(
                rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]
            ) -> bool:
                return not (wanted.isdisjoint(keys) and wanted.isdisjoint(rkeys))
            out.append((any_present, [(_PRESENT, tuple(k.encode() for k in dict.fromkeys(pending)))]))
            pending.clear()

    for rule in rules:
        presence_only = rule.attribute is not None and rule == MatchRule(attribute=rule.attribute)
        if presence_only:
            pending.append(rule.attribute)  # type: ignore[arg-type]
            continue
        flush()
        out.append((compile_match_rule(rule), rule_spec(rule)))
    flush()
    return out


class CategoryRouter:
    """Stage: fills `batch.routes`. Reads records, never changes them."""

    def __init__(self, config: RoutingConfig | None = None, *,
                 known: Collection[str] = (), compiled: bool = True) -> None:
        """`known`: more names a `log.category` may pick beyond the configured ones, never
        counted against the dynamic cap — the categories masking has an override for, so that
        a record masked under a category's settings is always written to that category.
        `compiled=False` keeps this router on the Python reference even when the compiled
        twin is available (the differential tests run both)."""
        config = config or RoutingConfig.default()
        self._compiled = compiled
        # Known names: the configured ones, plus dynamic ones (added under the lock, capped).
        self.categories: set[str] = set(config.names) | {
            name for name in known if CATEGORY_NAME_RE.match(name)}
        self._lock = threading.Lock()
        self._dynamic = 0
        self._rules: list[tuple[str, _Condition]] = []
        specs: list[_Spec] = []
        for category in config.categories:
            for predicate, spec in _compile_rules(category.match):
                self._rules.append((category.name, predicate))
                specs.append(spec)
        # The same rules, in the same order, for the compiled twin.
        levels = [(name.encode(), number) for name, number in SEVERITY_LEVELS.items()]
        self._program = (specs, CATEGORY_ATTRIBUTE.encode(), levels)

    def __call__(self, batch: Batch) -> Batch:
        if batch.signal is Signal.METRICS:
            batch.routes = {METRICS_CATEGORY: batch.records()}
            return batch
        # The last stage before the sinks: the request will not change any more, so this is
        # where the compiled path indexes its encoding (None: the Python path).
        index = fastpath.index_batch(batch) if self._compiled else None
        if index is None:
            batch.wire_index = None
        if batch.signal is Signal.TRACES:
            batch.routes = {TRACES_CATEGORY: batch.records()}
            batch.route_positions = {TRACES_CATEGORY: list(range(len(batch.routes[TRACES_CATEGORY])))}
            return batch
        routes: dict[str, list[RecordRef]] = {}
        route_attributes: dict[str, list[dict[str, Any]]] = {}
        route_positions: dict[str, list[int]] = {}
        rules = self._rules
        rule_names = [name for name, _predicate in rules]
        categories = self.categories
        # With the compiled twin, per record, the rule that holds (-1: none, -2: the predicates
        # below decide), and the attributes of only the records the predicates decide (in one
        # call); the sinks that need the others build them per category
        # (`Batch.attributes_of`). Else every record's attributes, one by one, below.
        codes: list[int] | None = None
        decided_here: dict[int, dict[str, Any]] = {}
        if index is not None:
            codes = index.classify(self._program)
            undecided = [p for p, code in enumerate(codes) if code == -2]
            if undecided:
                decided_here = dict(zip(undecided, index.attributes(undecided), strict=True))
        position = 0
        for rl in batch.request.resource_logs:  # type: ignore[union-attr]
            rkeys = frozenset([kv.key for kv in rl.resource.attributes])
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    category = None
                    if codes is not None:
                        code = codes[position]
                        if code >= 0:
                            category = rule_names[code]
                        elif code == -1:
                            category = DEFAULT_CATEGORY
                        else:
                            attrs: dict[str, Any] = decided_here[position]
                    else:  # read once here and reused by the sinks (Batch.route_attributes)
                        attrs = {}
                        for kv in rec.attributes:
                            value = kv.value
                            attrs[kv.key] = value.string_value or any_value(value)
                    if category is None:
                        if CATEGORY_ATTRIBUTE in attrs:
                            category = self._explicit_category(attrs[CATEGORY_ATTRIBUTE], categories)
                        if category is None:
                            for name, predicate in rules:
                                if predicate(rl, sl, rec, attrs, rkeys):
                                    category = name
                                    break
                            else:
                                category = DEFAULT_CATEGORY
                    bucket = routes.get(category)
                    if bucket is None:
                        bucket = routes[category] = []
                        route_positions[category] = []
                        if codes is None:
                            route_attributes[category] = []
                    bucket.append((rl, sl, rec))
                    if codes is None:
                        route_attributes[category].append(attrs)
                    route_positions[category].append(position)
                    position += 1
        batch.routes = routes
        batch.route_attributes = route_attributes
        batch.route_positions = route_positions
        return batch

    def _explicit_category(self, value: Any, categories: set[str]) -> str | None:
        name = value if isinstance(value, str) else ""
        if name in RESERVED_CATEGORIES:
            return None  # a log record never lands among spans or metric points
        if name in categories:
            return name
        if not name or not CATEGORY_NAME_RE.match(name):
            return None
        with self._lock:
            if name in categories:
                return name
            if self._dynamic >= MAX_DYNAMIC_CATEGORIES:
                return None
            categories.add(name)
            self._dynamic += 1
        return name
