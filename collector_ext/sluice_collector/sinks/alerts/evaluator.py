"""`AlertEvaluator`: log alert rules over the routed, masked stream — windows, groups, firing.

Pure logic: no I/O, no threads, no clock of its own (every call is given `now`, the receiver's
clock in Unix seconds), so tests drive windows by passing times. `AlertsSink` owns the lock,
the clock and what happens to the events this returns.

How a rule counts:

- `scan(batch)` reads a batch without changing anything (and without a lock): for each rule
  it tests the records of the categories the rule can match, with the category rules' own
  compiled predicates (`routing.compile_match_rule`), and adds them up per group — the
  tenant plus the `group_by` values — into a `Tally`. A record that lacks a `group_by`
  value is not counted by that rule.
- `apply(tally, now)` adds a tally to each group's window and evaluates the touched groups;
  `tick(now)` evaluates all of them (windows slide even when nothing arrives) and forgets
  groups with nothing in their window and nothing firing.

A window is 30 buckets of `window / 30`; a record counts for between 29/30 of the window and the
whole window after the receiver took it (by the receiver's clock, never the record's own
timestamp, which the client sets). A group holds a running sum, so evaluating it costs the
buckets that expire, not the window's length.

A count rule is active while the window holds at least `threshold` matching records; a ratio
rule while it holds at least `min_total` records of the total and matching/total is above
`above`. An inactive group that becomes active fires (`startsAt` now); a firing group that
becomes inactive resolves (`endsAt` now).

At most `max_groups` groups per rule are tracked; records of further groups are not counted
and each refused group is counted (`groups_dropped`), so a spray of distinct users cannot grow
memory without bound.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from sluice_collector.batch import Batch, Signal
from sluice_collector.otlpvalues import any_value, body_text, severity_name
from sluice_collector.processors.routing import ALERTS_CATEGORY, RecordPredicate, compile_match_rule
from sluice_collector.sinks.alerts.config import BUILTIN_NAMES, AlertRule, RuleMatch

BUCKETS = 30
MAX_LABEL_CHARS = 256
MAX_ANNOTATION_CHARS = 2048
_SEVERITY_FIELDS = frozenset({"body", "category", "event_name", "severity"})

# group key: (tenant, value of each group_by entry)
GroupKey = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One change of one alert: it started firing, or it resolved."""

    status: Literal["firing", "resolved"]
    rule: str
    group: GroupKey
    labels: tuple[tuple[str, str], ...]  # sorted by name
    annotations: tuple[tuple[str, str], ...]
    starts_at: float
    ends_at: float | None  # when it resolved; None while firing
    generator_url: str = ""
    # The same instants on the machine's monotonic clock (valid while `boot` is this boot):
    # what Alertmanager is told is measured from these, so a receiver clock that steps (NTP,
    # a test's clock) never moves an alert's start there.
    starts_mono: float | None = None
    ends_mono: float | None = None
    boot: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    @property
    def tenant(self) -> str:
        return self.group[0] if self.group else ""

    def label(self, name: str) -> str:
        return dict(self.labels).get(name, "")

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "rule": self.rule, "group": list(self.group),
                "labels": dict(self.labels), "annotations": dict(self.annotations),
                "starts_at": self.starts_at, "ends_at": self.ends_at,
                "generator_url": self.generator_url, "starts_mono": self.starts_mono,
                "ends_mono": self.ends_mono, "boot": self.boot}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertEvent:
        status = data["status"]
        if status not in ("firing", "resolved"):
            raise ValueError(f"unknown alert status {status!r}")
        ends_at = data.get("ends_at")
        starts_mono, ends_mono = data.get("starts_mono"), data.get("ends_mono")
        return cls(
            status=status, rule=str(data["rule"]), group=tuple(str(v) for v in data["group"]),
            labels=tuple(sorted((str(k), str(v)) for k, v in data["labels"].items())),
            annotations=tuple(sorted((str(k), str(v)) for k, v in data["annotations"].items())),
            starts_at=float(data["starts_at"]),
            ends_at=float(ends_at) if ends_at is not None else None,
            generator_url=str(data.get("generator_url") or ""),
            starts_mono=float(starts_mono) if starts_mono is not None else None,
            ends_mono=float(ends_mono) if ends_mono is not None else None,
            boot=str(data.get("boot") or ""),
        )


def fingerprint(labels: Iterable[tuple[str, str]]) -> str:
    """A short stable id of a label set (what Alertmanager deduplicates on)."""
    return hashlib.sha256(orjson.dumps(sorted(labels))).hexdigest()[:16]


def _boot_id() -> str:
    """This boot of the machine: monotonic times compare only within one (CLOCK_MONOTONIC is
    machine-wide on Linux, so they do across a restart of the receiver)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return uuid.uuid4().hex


BOOT_ID = _boot_id()


@dataclass(slots=True, eq=False)
class _Firing:
    starts_at: float
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    generator_url: str
    starts_mono: float | None = None  # None: from another boot (Alertmanager is told by age)


@dataclass(slots=True, eq=False)
class _Group:
    key: GroupKey
    buckets: deque[list[int]] = field(default_factory=deque)  # [index, matched, total], oldest first
    matched: int = 0
    total: int = 0
    ctx: dict[str, str] = field(default_factory=dict)  # template values of the last matching record
    firing: _Firing | None = None

    def add(self, index: int, matched: int, total: int) -> None:
        if self.buckets and self.buckets[-1][0] >= index:
            # Same bucket, or a clock that stepped back: count into the newest bucket.
            bucket = self.buckets[-1]
            bucket[1] += matched
            bucket[2] += total
        else:
            self.buckets.append([index, matched, total])
        self.matched += matched
        self.total += total

    def expire(self, index: int) -> None:
        """Drop buckets that left the window ending at bucket `index`."""
        oldest = index - BUCKETS
        buckets = self.buckets
        while buckets and buckets[0][0] <= oldest:
            _, matched, total = buckets.popleft()
            self.matched -= matched
            self.total -= total


@dataclass(slots=True)
class Tally:
    """What one batch adds: per rule index, per group, [matched, total, template values]."""

    counts: dict[int, dict[GroupKey, list[Any]]] = field(default_factory=dict)
    records: int = 0  # log records looked at
    matched: dict[str, int] = field(default_factory=dict)  # rule → matching records


# One `match` item compiled: (categories or None for any, predicate or None for always).
_Item = tuple[frozenset[str] | None, RecordPredicate | None]


def _compile_items(items: tuple[RuleMatch, ...]) -> list[_Item]:
    out: list[_Item] = []
    for item in items:
        categories = frozenset(item.categories) if item.categories else None
        predicate = None if item.rule == type(item.rule)() else compile_match_rule(item.rule)
        out.append((categories, predicate))
    return out


def _categories_of(items: list[_Item]) -> frozenset[str] | None:
    """The categories any item can match (None: any category)."""
    if not items:
        return None
    out: set[str] = set()
    for categories, _ in items:
        if categories is None:
            return None
        out |= categories
    return frozenset(out)


class _CompiledRule:
    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.width_s = rule.window_s / BUCKETS
        self.match = _compile_items(rule.match)
        self.of = _compile_items(rule.ratio.of) if rule.ratio is not None else []
        matched_in = _categories_of(self.match)
        total_in = _categories_of(self.of)
        # A ratio rule sees every record that may count for the total; a count rule only those
        # that may match.
        if rule.ratio is not None:
            self.categories = None if total_in is None else total_in
        else:
            self.categories = matched_in
        group_names = {g.text for g in rule.group_by} | {g.label for g in rule.group_by}
        names = rule.template_names
        self.capture_fields = frozenset(names & _SEVERITY_FIELDS)
        self.capture_attrs = tuple(sorted(names - BUILTIN_NAMES - group_names))
        self.groups: dict[GroupKey, _Group] = {}

    def index(self, now: float) -> int:
        return int(now // self.width_s)

    def active(self, group: _Group) -> bool:
        ratio = self.rule.ratio
        if ratio is None:
            return group.matched >= (self.rule.threshold or 1)
        return group.total >= ratio.min_total and group.matched > ratio.above * group.total


def _matches(items: list[_Item], category: str, rl: Any, sl: Any, rec: Any,
             attrs: dict[str, Any], rkeys: frozenset[str]) -> bool:
    if not items:
        return True
    for categories, predicate in items:
        if categories is not None and category not in categories:
            continue
        if predicate is None or predicate(rl, sl, rec, attrs, rkeys):
            return True
    return False


def _scalar(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = value if isinstance(value, str) else str(value)
    return text or None


def cap(text: str, limit: int) -> str:
    """`text` cut to `limit` characters; a cut value keeps a hash of the whole, so two long
    values that share a prefix stay distinct."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{text[:limit - 14]}…~{digest}"


class AlertEvaluator:
    """Counts the rules' records per group and window; returns firing/resolved events."""

    def __init__(self, rules: Iterable[AlertRule], *, max_groups: int = 10_000,
                 on_group_dropped: Callable[[str], None] | None = None) -> None:
        self.rules = [_CompiledRule(rule) for rule in rules]
        self.by_name = {cr.rule.name: cr for cr in self.rules}
        self.max_groups = max_groups
        self._on_group_dropped = on_group_dropped
        self._for_category: dict[str, list[tuple[int, _CompiledRule]]] = {}

    # -- counting -----------------------------------------------------------------------------
    def _rules_for(self, category: str) -> list[tuple[int, _CompiledRule]]:
        rules = self._for_category.get(category)
        if rules is None:
            rules = [(i, cr) for i, cr in enumerate(self.rules)
                     if category != ALERTS_CATEGORY and (cr.categories is None or category in cr.categories)]
            if len(self._for_category) < 4096:  # dynamic categories are bounded by routing too
                self._for_category[category] = rules
        return rules

    def scan(self, batch: Batch) -> Tally:
        """Read `batch` (routed log records) into a tally; changes nothing, needs no lock."""
        tally = Tally()
        if batch.signal is not Signal.LOGS or not self.rules:
            return tally
        tenant = batch.tenant
        counts = tally.counts
        group_key = self._group_key
        for category, refs in batch.routes.items():
            rules = self._rules_for(category)
            tally.records += len(refs)
            if not rules or not refs:
                continue
            ready = batch.attributes_of(category)
            if ready is not None and len(ready) != len(refs):
                ready = None
            todo = [(counts.setdefault(index, {}), cr, cr.rule.ratio is not None, cr.match, cr.of)
                    for index, cr in rules]
            last_rl: Any = None
            rkeys: frozenset[str] = frozenset()
            res_attrs: dict[str, Any] = {}
            for position, (rl, sl, rec) in enumerate(refs):
                if ready is not None:
                    attrs = ready[position]
                else:
                    attrs = {kv.key: kv.value.string_value or any_value(kv.value)
                             for kv in rec.attributes}
                if rl is not last_rl:  # records of one resource come together
                    res_attrs = {kv.key: any_value(kv.value) for kv in rl.resource.attributes}
                    rkeys = frozenset(res_attrs)
                    last_rl = rl
                for groups, cr, ratio, match, of in todo:
                    if ratio and of and not _matches(of, category, rl, sl, rec, attrs, rkeys):
                        continue
                    is_match = not match or _matches(match, category, rl, sl, rec, attrs, rkeys)
                    if not is_match and not ratio:
                        continue
                    key = group_key(cr, tenant, category, sl, rec, attrs, res_attrs)
                    if key is None:
                        continue
                    entry = groups.get(key)
                    if entry is None:
                        entry = groups[key] = [0, 0, None]
                    entry[1] += 1
                    if is_match:
                        entry[0] += 1
                        entry[2] = (category, rec, attrs, res_attrs)  # the last one counts
        for index in [i for i, groups in counts.items() if not groups]:
            del counts[index]
        # Template values of each group's last matching record: once per group, not per record.
        for index, by_group in counts.items():
            cr = self.rules[index]
            matched = 0
            capture = bool(cr.capture_fields or cr.capture_attrs)
            for entry in by_group.values():
                matched += entry[0]
                last = entry[2]
                entry[2] = self._capture(cr, *last) if capture and last is not None else None
            if matched:
                tally.matched[cr.rule.name] = matched
        return tally

    @staticmethod
    def _group_key(cr: _CompiledRule, tenant: str, category: str, sl: Any, rec: Any,
                   attrs: dict[str, Any], res_attrs: dict[str, Any]) -> GroupKey | None:
        values = [tenant]
        for g in cr.rule.group_by:
            value: Any
            if g.source == "field":
                if g.key == "category":
                    value = category
                elif g.key == "event_name":
                    value = rec.event_name or attrs.get("event.name")
                elif g.key == "severity":
                    value = severity_name(rec.severity_number, rec.severity_text)
                else:
                    value = sl.scope.name
            elif g.source == "record":
                value = attrs.get(g.key)
            elif g.source == "resource":
                value = res_attrs.get(g.key)
            else:
                value = attrs.get(g.key)
                if value is None or value == "":
                    value = res_attrs.get(g.key)
            if value.__class__ is str and 0 < len(value) <= MAX_LABEL_CHARS:
                values.append(value)  # the common case
                continue
            text = _scalar(value)
            if text is None:
                return None
            values.append(cap(text, MAX_LABEL_CHARS))
        return tuple(values)

    @staticmethod
    def _capture(cr: _CompiledRule, category: str, rec: Any, attrs: dict[str, Any],
                 res_attrs: dict[str, Any]) -> dict[str, str]:
        ctx: dict[str, str] = {}
        for name in cr.capture_fields:
            if name == "body":
                value: Any = body_text(rec.body)
            elif name == "category":
                value = category
            elif name == "event_name":
                value = rec.event_name or attrs.get("event.name")
            else:
                value = severity_name(rec.severity_number, rec.severity_text)
            if value:
                ctx[name] = cap(str(value), MAX_ANNOTATION_CHARS)
        for name in cr.capture_attrs:
            value = attrs.get(name)
            if value is None:
                value = res_attrs.get(name)
            if value is None:
                continue
            if isinstance(value, dict | list):
                text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
            else:
                text = value if isinstance(value, str) else str(value)
            ctx[name] = cap(text, MAX_ANNOTATION_CHARS)
        return ctx

    def apply(self, tally: Tally, now: float, mono: float) -> list[AlertEvent]:
        """Add a tally to the windows and evaluate the groups it touched (`now` on the
        receiver's clock, `mono` the same instant on the monotonic one)."""
        events: list[AlertEvent] = []
        for index, per_group in tally.counts.items():
            cr = self.rules[index]
            bucket = cr.index(now)
            for key, (matched, total, ctx) in per_group.items():
                group = cr.groups.get(key)
                if group is None:
                    if len(cr.groups) >= self.max_groups:
                        if self._on_group_dropped is not None:
                            self._on_group_dropped(cr.rule.name)
                        continue
                    group = cr.groups[key] = _Group(key)
                group.add(bucket, matched, total)
                if ctx:
                    group.ctx = ctx
                event = self._evaluate(cr, group, now, mono, bucket)
                if event is not None:
                    events.append(event)
        return events

    def tick(self, now: float, mono: float) -> list[AlertEvent]:
        """Slide every window to `now`, evaluate every group, forget idle ones."""
        events: list[AlertEvent] = []
        for cr in self.rules:
            bucket = cr.index(now)
            idle: list[GroupKey] = []
            for key, group in cr.groups.items():
                event = self._evaluate(cr, group, now, mono, bucket)
                if event is not None:
                    events.append(event)
                if not group.buckets and group.firing is None:
                    idle.append(key)
            for key in idle:
                del cr.groups[key]
        return events

    def _evaluate(self, cr: _CompiledRule, group: _Group, now: float, mono: float,
                  bucket: int) -> AlertEvent | None:
        group.expire(bucket)
        active = cr.active(group)
        if active and group.firing is None:
            labels = self._labels(cr, group)
            annotations = self._annotations(cr, group)
            group.firing = _Firing(now, labels, annotations, self._generator_url(cr, group), mono)
            return self._event(cr, group, "firing", None, None)
        if not active and group.firing is not None:
            # Annotations stay as last rendered while firing: "0 failed logins" says nothing.
            event = self._event(cr, group, "resolved", now, mono)
            group.firing = None
            return event
        return None

    @staticmethod
    def _event(cr: _CompiledRule, group: _Group, status: Literal["firing", "resolved"],
               ends_at: float | None, ends_mono: float | None) -> AlertEvent:
        firing = group.firing
        assert firing is not None
        return _event_of(cr.rule.name, group.key, firing, status, ends_at, ends_mono)

    # -- templates ----------------------------------------------------------------------------
    @staticmethod
    def _lookup(cr: _CompiledRule, group: _Group) -> Callable[[str], str | None]:
        rule = cr.rule
        values = dict(group.ctx)
        for g, value in zip(rule.group_by, group.key[1:], strict=True):
            values[g.text] = value
            values[g.label] = value
        ratio = ""
        if rule.ratio is not None and group.total:
            ratio = f"{100 * group.matched / group.total:.3g}%"
        values.update({
            "alertname": rule.name, "window": rule.window_text, "threshold": rule.threshold_text,
            "tenant": group.key[0], "count": str(group.matched), "total": str(group.total),
            "ratio": ratio,
        })
        return values.get

    def _labels(self, cr: _CompiledRule, group: _Group) -> tuple[tuple[str, str], ...]:
        labels = {"alertname": cr.rule.name}
        for g, value in zip(cr.rule.group_by, group.key[1:], strict=True):
            labels[g.label] = value
        if group.key[0]:
            labels["tenant"] = group.key[0]
        lookup = self._lookup(cr, group)
        for name, template in cr.rule.labels:
            value = cap(template.render(lookup), MAX_LABEL_CHARS)
            if value:  # an empty label is no label, in Alertmanager as here
                labels[name] = value
        return tuple(sorted(labels.items()))

    def _annotations(self, cr: _CompiledRule, group: _Group) -> tuple[tuple[str, str], ...]:
        lookup = self._lookup(cr, group)
        out = ((name, cap(template.render(lookup), MAX_ANNOTATION_CHARS))
               for name, template in cr.rule.annotations)
        return tuple(sorted((k, v) for k, v in out if v))

    def _generator_url(self, cr: _CompiledRule, group: _Group) -> str:
        from urllib.parse import quote

        template = cr.rule.generator_url
        if template is None:
            return ""
        return template.render(self._lookup(cr, group), escape=lambda v: quote(v, safe=""))

    # -- reading the state --------------------------------------------------------------------
    def firing(self) -> list[AlertEvent]:
        """Every firing alert, annotations rendered from the windows as they are now."""
        out: list[AlertEvent] = []
        for cr in self.rules:
            for group in cr.groups.values():
                if group.firing is not None:
                    group.firing.annotations = self._annotations(cr, group)
                    out.append(self._event(cr, group, "firing", None, None))
        return out

    def group_counts(self) -> dict[str, int]:
        return {cr.rule.name: len(cr.groups) for cr in self.rules}

    def firing_counts(self) -> dict[str, int]:
        return {cr.rule.name: sum(1 for g in cr.groups.values() if g.firing is not None)
                for cr in self.rules}

    def window_of(self, rule: str, group: GroupKey) -> list[list[int]]:
        cr = self.by_name.get(rule)
        found = cr.groups.get(group) if cr is not None else None
        return [list(b) for b in found.buckets] if found is not None else []

    # -- saving and restoring -----------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart, JSON-able and compact: per rule its
        identity and, per tracked group, its buckets, template values and firing alert."""
        rules: dict[str, Any] = {}
        for cr in self.rules:
            groups = []
            for group in cr.groups.values():
                firing = group.firing
                groups.append([
                    list(group.key), [list(b) for b in group.buckets], group.ctx,
                    None if firing is None else [firing.starts_at, dict(firing.labels),
                                                 dict(firing.annotations), firing.generator_url,
                                                 firing.starts_mono, BOOT_ID],
                ])
            rules[cr.rule.name] = {"identity": cr.rule.identity, "groups": groups}
        return {"rules": rules}

    def import_state(self, state: dict[str, Any], now: float, mono: float) -> list[AlertEvent]:
        """Restore `export_state` output. A rule that is gone, or whose identity changed (its
        match, window, threshold or group_by), starts empty, and its firing alerts resolve;
        a firing alert whose labels the current label templates no longer produce resolves
        too (the group fires again under the new labels if it is still active). Returns
        those resolutions; call `tick(now)` next so windows that emptied meanwhile resolve."""
        events: list[AlertEvent] = []
        for name, saved in (state.get("rules") or {}).items():
            cr = self.by_name.get(name)
            same = cr is not None and saved.get("identity") == cr.rule.identity
            for key_list, buckets, ctx, firing in saved.get("groups") or []:
                key = tuple(str(v) for v in key_list)
                restored = _restore_firing(firing) if firing is not None else None
                if not same or cr is None or len(key) != len(cr.rule.group_by) + 1:
                    if restored is not None:
                        events.append(_event_of(name, key, restored, "resolved", now, mono))
                    continue
                if key not in cr.groups and len(cr.groups) >= self.max_groups:
                    continue
                group = _Group(key, ctx=dict(ctx))
                for index, matched, total in buckets:
                    group.add(int(index), int(matched), int(total))
                if restored is not None and restored.labels != self._labels(cr, group):
                    events.append(_event_of(name, key, restored, "resolved", now, mono))
                    restored = None
                group.firing = restored
                cr.groups[key] = group
        return events

    def replay(self, event: AlertEvent, buckets: list[list[int]] | None) -> None:
        """Apply a journaled event on top of a restored state (idempotent)."""
        cr = self.by_name.get(event.rule)
        if cr is None or len(event.group) != len(cr.rule.group_by) + 1:
            return
        group = cr.groups.get(event.group)
        if event.status == "resolved":
            if group is not None and group.firing is not None \
                    and group.firing.labels == event.labels:
                group.firing = None
            return
        if group is None:
            if len(cr.groups) >= self.max_groups:
                return
            group = cr.groups[event.group] = _Group(event.group)
        if buckets and not group.buckets:
            for index, matched, total in buckets:
                group.add(int(index), int(matched), int(total))
        group.firing = _Firing(event.starts_at, event.labels, event.annotations,
                               event.generator_url,
                               event.starts_mono if event.boot == BOOT_ID else None)


def _restore_firing(saved: list[Any]) -> _Firing:
    starts_mono = saved[4] if len(saved) > 5 and saved[5] == BOOT_ID else None
    return _Firing(float(saved[0]), tuple(sorted(saved[1].items())), tuple(sorted(saved[2].items())),
                   str(saved[3]), float(starts_mono) if starts_mono is not None else None)


def _event_of(rule: str, key: GroupKey, firing: _Firing, status: Literal["firing", "resolved"],
              ends_at: float | None, ends_mono: float | None) -> AlertEvent:
    return AlertEvent(status=status, rule=rule, group=key, labels=firing.labels,
                      annotations=firing.annotations, starts_at=firing.starts_at, ends_at=ends_at,
                      generator_url=firing.generator_url, starts_mono=firing.starts_mono,
                      ends_mono=ends_mono, boot=BOOT_ID)


__all__ = ["BOOT_ID", "BUCKETS", "AlertEvaluator", "AlertEvent", "Tally", "cap", "fingerprint"]
