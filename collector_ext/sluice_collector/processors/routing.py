"""Classification: every log record gets exactly one category; spans and metrics get theirs.

Order of decision for a log record:
1. its `log.category` attribute, when set by the SDK (or any client) and a valid category name;
2. the `match` rules of the configured categories, in config order (first match wins);
3. `app`.
Spans always go to `traces`, metrics to `metrics`.

A `log.category` naming a category the config does not list is accepted when the name is valid
(lower-case, `[a-z][a-z0-9_-]*`): the category is created with the defaults of `files`, so
`sluice.get_logger("payments")` just works. At most `MAX_DYNAMIC_CATEGORIES` such categories
are created per receiver, so a client cannot make it open unbounded files; records beyond that,
or with an invalid name, go through the rules as if the attribute were absent.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

from sluice_collector.batch import Batch, RecordRef, Signal
from sluice_collector.otlpvalues import SEVERITY_LEVELS, any_value, body_text
from sluice_collector.service.config import CATEGORY_NAME_RE, CategoryConfig, MatchRule
from sluice_collector.sinks.files.config import RotationConfig

CATEGORY_ATTRIBUTE = "log.category"
DEFAULT_CATEGORY = "app"
TRACES_CATEGORY = "traces"
METRICS_CATEGORY = "metrics"
MAX_DYNAMIC_CATEGORIES = 256
_RESERVED = frozenset({TRACES_CATEGORY, METRICS_CATEGORY})

# (resource-level, scope-level, record, record attributes as a dict, resource attribute keys)
_Condition = Callable[[Any, Any, Any, dict[str, Any], frozenset[str]], bool]


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _find(kvs: Any, key: str) -> Any:
    for kv in kvs:
        if kv.key == key:
            return kv
    return None


def _compile_rule(rule: MatchRule) -> _Condition:
    """Turn one MatchRule into a predicate over (resource-level, scope-level, record, record
    attributes as a dict, resource attribute keys); both are read once per record and once
    per resource, so presence tests are hash lookups."""
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

    if len(conditions) == 1:
        return conditions[0]

    def all_of(rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]) -> bool:
        return all(cond(rl, sl, rec, keys, rkeys) for cond in conditions)
    return all_of


def _compile_rules(rules: tuple[MatchRule, ...]) -> list[_Condition]:
    """Predicates for one category; runs of presence-only rules become one set intersection,
    because the built-in `access` rules are four of them and every record is tested."""
    out: list[_Condition] = []
    pending: set[str] = set()

    def flush() -> None:
        if pending:
            wanted = frozenset(pending)

            def any_present(
                rl: Any, sl: Any, rec: Any, keys: dict[str, Any], rkeys: frozenset[str]
            ) -> bool:
                return not (wanted.isdisjoint(keys) and wanted.isdisjoint(rkeys))
            out.append(any_present)
            pending.clear()

    for rule in rules:
        presence_only = rule.attribute is not None and rule == MatchRule(attribute=rule.attribute)
        if presence_only:
            pending.add(rule.attribute)  # type: ignore[arg-type]
            continue
        flush()
        out.append(_compile_rule(rule))
    flush()
    return out


class CategoryRouter:
    """Stage: fills `batch.routes`. Reads records, never changes them."""

    def __init__(
        self,
        categories: MutableMapping[str, CategoryConfig],
        *,
        default_rotation: RotationConfig | None = None,
        default_retention_days: int | None = 30,
    ) -> None:
        # Shared with the file sink, which looks categories up by name; dynamic categories are
        # added here under a lock and are visible to it at once.
        self.categories = categories
        self._default_rotation = default_rotation or RotationConfig()
        self._default_retention_days = default_retention_days
        self._lock = threading.Lock()
        self._dynamic = 0
        self._rules: list[tuple[str, _Condition]] = []
        for name, category in categories.items():
            self._rules.extend((name, predicate) for predicate in _compile_rules(category.match))

    def __call__(self, batch: Batch) -> Batch:
        if batch.signal is Signal.TRACES:
            batch.routes = {TRACES_CATEGORY: batch.records()}
            return batch
        if batch.signal is Signal.METRICS:
            batch.routes = {METRICS_CATEGORY: batch.records()}
            return batch
        routes: dict[str, list[RecordRef]] = {}
        route_attributes: dict[str, list[dict[str, Any]]] = {}
        rules = self._rules
        categories = self.categories
        for rl in batch.request.resource_logs:  # type: ignore[union-attr]
            rkeys = frozenset([kv.key for kv in rl.resource.attributes])
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    category = None
                    # Read once here and reused by the sinks (see Batch.route_attributes).
                    attrs: dict[str, Any] = {}
                    for kv in rec.attributes:
                        value = kv.value
                        attrs[kv.key] = value.string_value or any_value(value)
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
                        route_attributes[category] = []
                    bucket.append((rl, sl, rec))
                    route_attributes[category].append(attrs)
        batch.routes = routes
        batch.route_attributes = route_attributes
        return batch

    def _explicit_category(
        self, value: Any, categories: MutableMapping[str, CategoryConfig]
    ) -> str | None:
        name = value if isinstance(value, str) else ""
        if name in _RESERVED:
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
            categories[name] = CategoryConfig(
                name=name, rotation=self._default_rotation,
                retention_days=self._default_retention_days,
            )
            self._dynamic += 1
        return name
