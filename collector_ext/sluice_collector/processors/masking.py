"""The masking stage: every string of a batch through `sluice.masking`, rewritten in place.

The stage walks the decoded protobuf request once, collecting every string the OTLP model can
carry — values and keys alike: log bodies (nested kvlist keys and values, arrays), attributes of
records, events, links, resources, scopes, metrics, data points and exemplars; a log record's
`severity_text` and `event_name`; a span's name, `trace_state` and status message, its events'
names and its links' `trace_state`; a scope's name and version; a metric's name, description,
unit and metadata; `schema_url`s — with its attribute key and the record it belongs to. The
engine then scans all of them in one pre-scan pass and returns only the few that changed; those,
and nothing else, are written back. Fields the receiver does not know (a newer OTLP's, or a
crafted one) are never written by the file, syslog or index sinks, and the forward sink discards
them before it encodes a batch.

A per-category override (`masking.categories.<cat>`) follows where a record is written: spans
always go to `traces` and metric points to `metrics`, so those overrides (and only those) apply
to them; a log record gets the override of the category named by its `log.category` attribute,
which the router always honours for a category that has an override (it counts as configured,
never against the dynamic-category cap), unless the name is reserved (`traces`, `metrics`,
`alerts`: a log record never lands there). Masking runs before classification, so a log record
that a `match` rule would route gets the top-level settings. Resource and scope strings are
shared by records of several categories and always get the top-level settings.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import re2
from google.protobuf.message import DecodeError

from sluice.masking import (
    ACTIONS,
    DEFAULT_REPLACEMENT,
    CustomDetector,
    DetectorSetting,
    KeyRule,
    Masker,
    MaskerConfig,
)
from sluice.masking._prescan import Scan, strip_group_names
from sluice.masking.config import Problem, validate
from sluice_collector.batch import Batch, Signal
from sluice_collector.configreader import Section
from sluice_collector.otlpvalues import find_attribute
from sluice_collector.processors.routing import (
    METRICS_CATEGORY,
    RESERVED_CATEGORIES,
    TRACES_CATEGORY,
)
from sluice_collector.processors.wiremask import AVAILABLE as WIRE_AVAILABLE
from sluice_collector.processors.wiremask import MASKED_ATTRIBUTE, mask_on_wire
from sluice_collector.processors.wirescan import Located, WireFormatError, locate
from sluice_collector.telemetry import ReceiverTelemetry

_MASKED_KEY = MASKED_ATTRIBUTE.encode()
DEFAULT_KEY_ENV = "SLUICE_MASKING_KEY"
# Masking on the wire decodes the whole request once more; the walk costs per record it visits.
# With fewer raw-scan matches than one per this many bytes (a request with a secret here and
# there), the walk is cheaper: on 195 kB requests, 25 matches cost 0.25 ms more on the wire,
# 870 matches 3 ms less (bench/receiver_stages.py, easy and pii loads).
WIRE_BYTES_PER_MATCH = 2048
# Field numbers of the OTLP messages whose strings the walk reads (opentelemetry/proto/logs/v1
# and trace/v1), for the fields a raw-scan match points at.
_LOG_SEVERITY_TEXT, _LOG_BODY, _LOG_ATTRIBUTES, _LOG_EVENT_NAME = 3, 5, 6, 12
_SPAN_TRACE_STATE, _SPAN_NAME, _SPAN_ATTRIBUTES, _SPAN_EVENTS, _SPAN_LINKS, _SPAN_STATUS = 3, 5, 9, 11, 13, 15


@dataclass(frozen=True, slots=True)
class CategoryMasking:
    """Masking for records whose `log.category` attribute names this category."""

    enabled: bool
    engine: MaskerConfig


@dataclass(frozen=True, slots=True)
class MaskingConfig:
    """The `masking:` section, parsed and checked in full before the receiver starts, so a bad
    pattern or a missing key is a start-up error and never a leak or a crash at runtime."""

    enabled: bool = True
    engine: MaskerConfig = field(default_factory=MaskerConfig)
    categories: Mapping[str, CategoryMasking] = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: Section) -> MaskingConfig:
        enabled = section.get_bool("enabled", True)
        detectors = _parse_detectors(section)
        custom = tuple(
            CustomDetector(
                name=item.get_str("name", f"custom_{index}", allow_empty=False),
                pattern=_required_str(item, "pattern"),
                action=item.get_str("action", "mask", choices=("mask", "hash", "drop")),
            )
            for index, item in enumerate(section.section_list("custom"))
        )
        pseudo = section.section("pseudonymize")
        pseudonymize_keys = tuple(pseudo.get_str_list("keys", []))
        hash_key = _read_hash_key(pseudo)
        engine = MaskerConfig(
            detectors=detectors,
            custom=custom,
            sensitive_keys=tuple(section.get_str_list("keys", [])),
            allow_keys=tuple(section.get_str_list("allow_keys", [])),
            pseudonymize_keys=pseudonymize_keys,
            hash_key=hash_key,
            replacement=section.get_str("replacement", DEFAULT_REPLACEMENT),
        )
        key_env = pseudo.get_str("key_env", DEFAULT_KEY_ENV)
        base_problems = validate(engine)
        _report(section, base_problems, key_env, "")
        key_reported = any(p.key == "hash_key" for p in base_problems)
        categories: dict[str, CategoryMasking] = {}
        for name, cat in section.sections("categories").items():
            overrides = _parse_detectors(cat)
            merged = {**detectors}
            for detector, setting in overrides.items():
                base = merged.get(detector, DetectorSetting())
                merged[detector] = DetectorSetting(
                    enabled=base.enabled if setting.enabled is None else setting.enabled,
                    action=base.action if setting.action is None else setting.action,
                )
            cat_engine = replace(engine, detectors=merged)
            # Only the category's own keys can be wrong here; the rest was reported above.
            own = [p for p in validate(cat_engine)
                   if (p.key.startswith("detectors.") and p.key.split(".")[1] in overrides)
                   or (p.key == "hash_key" and not key_reported)]
            key_reported = key_reported or any(p.key == "hash_key" for p in own)
            _report(section, own, key_env, f"categories.{name}.")
            categories[name] = CategoryMasking(cat.get_bool("enabled", True), cat_engine)
        return cls(enabled=enabled, engine=engine, categories=categories)


def _required_str(section: Section, name: str) -> str:
    if not section.has(name):
        section.error(name, "missing; expected an RE2 pattern such as 'ACME-[0-9]{8}'")
        return "x"
    return section.get_str(name, "x")


def _parse_detectors(section: Section) -> dict[str, DetectorSetting]:
    out: dict[str, DetectorSetting] = {}
    for name, item in section.sections("detectors").items():
        enabled = item.get_bool("enabled", True) if item.has("enabled") else None
        action = item.get_str("action", "", choices=ACTIONS) or None if item.has("action") else None
        out[name] = DetectorSetting(enabled=enabled, action=action)
    return out


def _read_hash_key(pseudo: Section) -> bytes | None:
    key_file = pseudo.get_optional_str("key_file")
    if key_file:
        try:
            return Path(key_file).read_bytes().strip()
        except OSError as exc:
            pseudo.error("key_file", f"got {key_file!r}; cannot read it ({exc.strerror})")
            return None
    value = os.environ.get(pseudo.get_str("key_env", DEFAULT_KEY_ENV))
    return value.encode("utf-8") if value else None


def _report(section: Section, problems: Iterable[Problem], key_env: str, prefix: str) -> None:
    for problem in problems:
        if problem.key == "hash_key":
            section.error(
                "pseudonymize.key_env",
                f"environment variable {key_env!r} is not set or too short: the hash action and "
                "pseudonymize.keys need a secret of at least 16 bytes there or in "
                "masking.pseudonymize.key_file",
            )
        else:
            section.error(prefix + problem.key, problem.message)


# --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Owner:
    """Something masking can mark (`sluice.masked`) or drop: a record, a scope, a resource."""

    container: Any  # the repeated field holding it
    index: int  # its position there
    attributes: Any  # where `sluice.masked` goes (for a data point: its metric's metadata)
    records: int  # how many records dropping it removes
    parent: int  # owner id of the scope or resource around it; -1 for a resource


@dataclass(slots=True)
class _Group:
    """The strings of one batch that one engine masks."""

    masker: Masker
    texts: list[str] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    targets: list[tuple[Any, str]] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)


class SecretMasker:
    """Stage: masks every string of a batch in place and returns the batch."""

    def __init__(self, config: MaskingConfig, telemetry: ReceiverTelemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry
        self._masker = Masker(config.engine)
        self._categories: dict[str, Masker | None] = {
            name: Masker(cat.engine) if cat.enabled else None
            for name, cat in config.categories.items()
        }
        self._raw_prescan = _raw_prescan([self._masker, *self._categories.values()])
        # Masking on the encoding covers one engine for every string: with per-category
        # overrides, a record's engine depends on where it is routed, which the walk works out.
        self._on_wire = WIRE_AVAILABLE and not self._categories

    def __call__(self, batch: Batch) -> Batch:
        if not self.config.enabled:
            return batch
        spans = self._spans(batch)
        if spans is not None and not spans:
            return batch  # the common case: nothing in the whole request looks like a secret
        if (spans is not None and self._on_wire and len(spans) * WIRE_BYTES_PER_MATCH >= len(batch.raw)
                and self._mask_on_wire(batch, spans)):
            return batch
        only = self._candidates(batch, spans)
        if only is not None and not (only.records or only.scopes or only.resources):
            return batch
        walk = _Walk(self._masker, self._categories, only)
        # Keys sit verbatim in the protobuf bytes the raw scan read (`only` says it could): when
        # no `sluice.masked` is among them, a mark is appended without a search for an old one.
        walk.marked_before = only is None or _MASKED_KEY in batch.raw
        if batch.signal is Signal.LOGS:
            walk.logs(batch.request)
        elif batch.signal is Signal.TRACES:
            walk.traces(batch.request)
        else:
            walk.metrics(batch.request)
        self._count(batch, walk.finish(), walk.dropped)
        return batch

    def _count(self, batch: Batch, counts: Counter[str], dropped: int) -> None:
        batch.masked.update(counts)
        batch.dropped += dropped
        if self.telemetry is not None:
            for detector, count in counts.items():
                self.telemetry.masked.labels(detector=detector).inc(count)

    def _mask_on_wire(self, batch: Batch, spans: list[tuple[int, int]]) -> bool:
        """Mask `batch` on its encoding (processors/wiremask.py); False: use the walk."""
        done = mask_on_wire(self._masker, batch.signal.value, batch.raw, spans)
        if done is None:
            return False
        if done.data is not None:
            # Decoded once from the masked encoding, which then stays the request's encoding
            # (in place: whoever holds the request holds the masked one).
            try:
                batch.request.ParseFromString(done.data)
            except DecodeError:  # a splice is valid protobuf; were it not, the walk decides
                batch.request.ParseFromString(batch.raw)
                return False
            batch.raw = done.data
            batch.raw_current = True
        self._count(batch, done.counts, done.dropped)
        return True

    def _spans(self, batch: Batch) -> list[tuple[int, int]] | None:
        """Where the raw scan matches the encoded request; None: it cannot tell (no encoded
        bytes, or no safe pattern set), so every string is looked at."""
        if self._raw_prescan is None or not batch.raw:
            return None
        return self._raw_prescan.spans(batch.raw)

    def _candidates(self, batch: Batch, spans: list[tuple[int, int]] | None) -> Located | None:
        """The records, scopes and resources the raw scan's `spans` point at; None means "all
        of them" (no scan, or odd framing)."""
        if spans is None:
            return None
        try:
            found = locate(batch.raw, spans)
        except WireFormatError:
            return None
        # A hit outside resources, scopes and records (a `schema_url`, or a field this receiver
        # does not know): look at everything, which is what the walk covers.
        return None if found.elsewhere else found


def _raw_prescan(maskers: Iterable[Masker | None]) -> Scan | None:
    patterns: list[str] = []
    for masker in maskers:
        if masker is None:
            continue
        found = masker.raw_prescan_patterns()
        if found is None:
            return None
        patterns.extend(found)
    if not patterns:
        return None
    body = "|".join(f"(?:{strip_group_names(p)})" for p in dict.fromkeys(patterns))
    try:
        return Scan(body.encode("utf-8"))
    except re2.error:
        return None  # too large for one program: fall back to looking at every string


class _Walk:
    """One pass over a request: collect strings, mask them per group, write back, drop.

    With `only`, strings are collected from the listed records, scopes and resources alone;
    every other part of the request was shown by the raw scan to hold nothing to mask.
    """

    def __init__(
        self, masker: Masker, categories: Mapping[str, Masker | None], only: Located | None = None,
    ) -> None:
        self._only = only
        self._by_scope: dict[tuple[int, int], list[int]] = {}
        if only is not None:
            for r, sc, i in sorted(only.records):
                self._by_scope.setdefault((r, sc), []).append(i)
        self._default = _Group(masker)
        self._groups: dict[int, _Group] = {id(masker): self._default}
        self._categories = categories
        # A log record's own `log.category` picks its override unless the router would not
        # honour it there (a reserved name); spans and points have a category of their signal.
        self._by_attribute = {name: masker for name, masker in categories.items()
                              if name not in RESERVED_CATEGORIES}
        self._owners: list[_Owner] = []
        self._hits: Counter[int] = Counter()
        self._drop: set[int] = set()
        self._counts: Counter[str] = Counter()
        self.dropped = 0
        self.marked_before = True  # may some attribute list already hold `sluice.masked`?

    # -- collection -----------------------------------------------------------------------------
    def _owner(self, container: Any, index: int, attributes: Any, records: int, parent: int) -> int:
        self._owners.append(_Owner(container, index, attributes, records, parent))
        return len(self._owners) - 1

    def _group_for(self, attributes: Any) -> _Group | None:
        """The group of a log record: its `log.category`'s override, else the default."""
        if not self._by_attribute:
            return self._default
        category = find_attribute(attributes, "log.category")
        if not isinstance(category, str) or category not in self._by_attribute:
            return self._default
        return self._group_of(category)

    def _group_of(self, category: str) -> _Group | None:
        """The group of every record of a category: None when its masking is off."""
        if category not in self._categories:
            return self._default
        masker = self._categories[category]
        if masker is None:
            return None
        group = self._groups.get(id(masker))
        if group is None:
            group = self._groups[id(masker)] = _Group(masker)
        return group

    def _string(self, group: _Group, message: Any, field_name: str, key: str | None, owner: int) -> None:
        text = getattr(message, field_name)
        if text:
            group.texts.append(text)
            group.keys.append(key)
            group.targets.append((message, field_name))
            group.owners.append(owner)

    def _value(self, group: _Group, value: Any, key: str | None, owner: int) -> None:
        kind = value.WhichOneof("value")
        if kind == "string_value":
            if value.string_value:
                group.texts.append(value.string_value)
                group.keys.append(key)
                group.targets.append((value, "string_value"))
                group.owners.append(owner)
            return
        if kind is None:
            return
        rule = group.masker.key_rule(key) if key is not None else KeyRule.SCAN
        if kind == "kvlist_value":
            if rule is KeyRule.SENSITIVE:
                self._whole(group, value, "{...}", rule, owner)
            else:
                self._attributes(group, value.kvlist_value.values, owner)
        elif kind == "array_value":
            if rule is KeyRule.SENSITIVE:
                self._whole(group, value, "[...]", rule, owner)
            else:
                for item in value.array_value.values:
                    self._value(group, item, key, owner)
        elif rule in (KeyRule.SENSITIVE, KeyRule.PSEUDONYMIZE):
            raw = getattr(value, kind)
            self._whole(group, value, raw.hex() if isinstance(raw, bytes) else str(raw), rule, owner)

    def _whole(self, group: _Group, value: Any, text: str, rule: KeyRule, owner: int) -> None:
        """A non-string value that its key alone says to hide: replaced by a string token."""
        new, detector, drop = group.masker.mask_whole(text, rule)
        if new is None:
            return
        value.string_value = new
        self._counts[detector] += 1
        self._hits[owner] += 1
        if drop:
            self._drop.add(owner)

    def _attributes(self, group: _Group, kvs: Any, owner: int) -> None:
        # The hot loop of the stage: keys and string values inline, the rest through _value.
        # A key is scanned as free text (an e-mail used as a map key is still an e-mail); its
        # value's key rule is taken from the key as sent.
        texts, keys, targets, owners = group.texts, group.keys, group.targets, group.owners
        for kv in kvs:
            if kv.key:
                texts.append(kv.key)
                keys.append(None)
                targets.append((kv, "key"))
                owners.append(owner)
            value = kv.value
            if value.WhichOneof("value") == "string_value":
                text = value.string_value
                if text:
                    texts.append(text)
                    keys.append(kv.key)
                    targets.append((value, "string_value"))
                    owners.append(owner)
            else:
                self._value(group, value, kv.key, owner)

    def _parts(self, r_index: int, s_index: int, index: int) -> list[tuple[int, int]] | None:
        """The fields of a record the raw scan hit, or None: look at all of it."""
        if self._only is None:
            return None
        return self._only.parts.get((r_index, s_index, index))

    def _log_parts(self, group: _Group, rec: Any, parts: list[tuple[int, int]], owner: int) -> None:
        """Only the fields of a log record a raw-scan match overlaps: a string that holds no
        match of the raw patterns (a superset of every detector and watched key) cannot change,
        and a value whose key decides its fate shares its KeyValue with that key."""
        done: set[int] = set()  # a singular field read once, however often it is on the wire
        for number, occurrence in parts:
            if number == _LOG_ATTRIBUTES:
                if occurrence < len(rec.attributes):
                    self._attributes(group, (rec.attributes[occurrence],), owner)
            elif number in done:
                continue
            elif number == _LOG_BODY:
                self._value(group, rec.body, None, owner)
            elif number == _LOG_SEVERITY_TEXT:
                self._string(group, rec, "severity_text", None, owner)
            elif number == _LOG_EVENT_NAME:
                self._string(group, rec, "event_name", None, owner)
            done.add(number)

    def _span_parts(self, group: _Group, span: Any, parts: list[tuple[int, int]], owner: int) -> None:
        """Only the fields of a span a raw-scan match overlaps (see `_log_parts`)."""
        done: set[int] = set()
        for number, occurrence in parts:
            if number == _SPAN_ATTRIBUTES:
                if occurrence < len(span.attributes):
                    self._attributes(group, (span.attributes[occurrence],), owner)
            elif number == _SPAN_EVENTS:
                if occurrence < len(span.events):
                    self._event(group, span.events[occurrence], owner)
            elif number == _SPAN_LINKS:
                if occurrence < len(span.links):
                    self._link(group, span.links[occurrence], owner)
            elif number in done:
                continue
            elif number == _SPAN_NAME:
                self._string(group, span, "name", None, owner)
            elif number == _SPAN_TRACE_STATE:
                self._string(group, span, "trace_state", None, owner)
            elif number == _SPAN_STATUS:
                self._string(group, span.status, "message", None, owner)
            done.add(number)

    def _indexes(self, r_index: int, s_index: int, count: int) -> Iterable[int]:
        if self._only is None:
            return range(count)
        return self._by_scope.get((r_index, s_index), ())

    def logs(self, request: Any) -> None:
        for r_index, rl in enumerate(request.resource_logs):
            records = sum(len(sl.log_records) for sl in rl.scope_logs)
            resource = self._resource(request.resource_logs, r_index, rl, records)
            for s_index, sl in enumerate(rl.scope_logs):
                scope = self._scope(rl.scope_logs, s_index, sl, len(sl.log_records), resource, r_index)
                for index in self._indexes(r_index, s_index, len(sl.log_records)):
                    rec = sl.log_records[index]
                    group = self._group_for(rec.attributes)
                    if group is None:
                        continue
                    owner = self._owner(sl.log_records, index, rec.attributes, 1, scope)
                    parts = self._parts(r_index, s_index, index)
                    if parts is None:
                        self._string(group, rec, "severity_text", None, owner)
                        self._string(group, rec, "event_name", None, owner)
                        self._value(group, rec.body, None, owner)
                        self._attributes(group, rec.attributes, owner)
                    else:
                        self._log_parts(group, rec, parts, owner)

    def traces(self, request: Any) -> None:
        group = self._group_of(TRACES_CATEGORY)  # None: masking is off for `traces`
        for r_index, rs in enumerate(request.resource_spans):
            records = sum(len(ss.spans) for ss in rs.scope_spans)
            resource = self._resource(request.resource_spans, r_index, rs, records)
            for s_index, ss in enumerate(rs.scope_spans):
                scope = self._scope(rs.scope_spans, s_index, ss, len(ss.spans), resource, r_index)
                if group is None:
                    continue
                for index in self._indexes(r_index, s_index, len(ss.spans)):
                    span = ss.spans[index]
                    owner = self._owner(ss.spans, index, span.attributes, 1, scope)
                    parts = self._parts(r_index, s_index, index)
                    if parts is None:
                        self._string(group, span, "name", None, owner)
                        self._string(group, span, "trace_state", None, owner)
                        self._string(group, span.status, "message", None, owner)
                        self._attributes(group, span.attributes, owner)
                        for event in span.events:
                            self._event(group, event, owner)
                        for link in span.links:
                            self._link(group, link, owner)
                    else:
                        self._span_parts(group, span, parts, owner)

    def _event(self, group: _Group, event: Any, owner: int) -> None:
        self._string(group, event, "name", None, owner)
        self._attributes(group, event.attributes, owner)

    def _link(self, group: _Group, link: Any, owner: int) -> None:
        self._string(group, link, "trace_state", None, owner)
        self._attributes(group, link.attributes, owner)

    def metrics(self, request: Any) -> None:
        group = self._group_of(METRICS_CATEGORY)  # None: masking is off for `metrics`
        for r_index, rm in enumerate(request.resource_metrics):
            records = sum(_points(m) for sm in rm.scope_metrics for m in sm.metrics)
            resource = self._resource(request.resource_metrics, r_index, rm, records)
            for s_index, sm in enumerate(rm.scope_metrics):
                points_in_scope = sum(_points(m) for m in sm.metrics)
                scope = self._scope(rm.scope_metrics, s_index, sm, points_in_scope, resource, r_index)
                if group is None:
                    continue
                for metric_index in self._indexes(r_index, s_index, len(sm.metrics)):
                    metric = sm.metrics[metric_index]
                    kind = metric.WhichOneof("data")
                    points = getattr(metric, kind).data_points if kind is not None else ()
                    # `sluice.masked` goes on the metric's metadata: on a data point it would split
                    # the series.
                    marks = metric.metadata
                    whole = self._owner(sm.metrics, metric_index, marks, len(points), scope)
                    self._string(group, metric, "name", None, whole)
                    self._string(group, metric, "description", None, whole)
                    self._string(group, metric, "unit", None, whole)
                    self._attributes(group, marks, whole)
                    for index, point in enumerate(points):
                        owner = self._owner(points, index, marks, 1, whole)
                        self._attributes(group, point.attributes, owner)
                        for exemplar in () if kind == "summary" else point.exemplars:
                            self._attributes(group, exemplar.filtered_attributes, owner)

    def _resource(self, container: Any, index: int, resourced: Any, records: int) -> int:
        owner = self._owner(container, index, resourced.resource.attributes, records, -1)
        if self._only is None or index in self._only.resources:
            self._attributes(self._default, resourced.resource.attributes, owner)
        if self._only is None:  # a hit in a schema_url sends every string here (`_candidates`)
            self._string(self._default, resourced, "schema_url", None, owner)
        return owner

    def _scope(
        self, container: Any, index: int, scoped: Any, records: int, parent: int, r_index: int,
    ) -> int:
        owner = self._owner(container, index, scoped.scope.attributes, records, parent)
        if self._only is None or (r_index, index) in self._only.scopes:
            self._string(self._default, scoped.scope, "name", None, owner)
            self._string(self._default, scoped.scope, "version", None, owner)
            self._attributes(self._default, scoped.scope.attributes, owner)
        if self._only is None:
            self._string(self._default, scoped, "schema_url", None, owner)
        return owner

    # -- masking and write-back -----------------------------------------------------------------
    def finish(self) -> Counter[str]:
        for group in self._groups.values():
            if not group.texts:
                continue
            # With the raw scan's fields (`only`), the strings are already the ones near a hit.
            result = group.masker.mask_many(group.texts, group.keys,
                                            prescanned=self._only is not None)
            for index, hits in result.hits.items():
                message, field_name = group.targets[index]
                setattr(message, field_name, result.values[index])
                self._hits[group.owners[index]] += hits
            for index in result.drop:
                self._drop.add(group.owners[index])
            self._counts.update(result.counts)
        # Owners may share where their mark goes (a metric and its points: the metric's
        # metadata), so each container gets one mark, found again here rather than searched.
        marks: dict[int, Any] = {}
        for owner_id, hits in self._hits.items():
            attributes = self._owners[owner_id].attributes
            if attributes is not None and owner_id not in self._drop:
                mark = marks.get(id(attributes))
                if mark is not None:
                    mark.value.int_value += hits
                elif self.marked_before:
                    marks[id(attributes)] = _add_masked(attributes, hits)
                else:
                    mark = marks[id(attributes)] = attributes.add(key=MASKED_ATTRIBUTE)
                    mark.value.int_value = hits
        if self._drop:
            self._remove()
        return self._counts

    def _remove(self) -> None:
        """Delete dropped owners, highest index first so earlier indexes stay valid."""
        doomed: list[_Owner] = []
        for owner_id in self._drop:
            if self._inside_dropped(self._owners[owner_id].parent):
                continue  # its resource or scope goes anyway
            doomed.append(self._owners[owner_id])
        doomed.sort(key=lambda o: o.index, reverse=True)
        for owner in doomed:
            del owner.container[owner.index]
            self.dropped += owner.records

    def _inside_dropped(self, owner_id: int) -> bool:
        while owner_id >= 0:
            if owner_id in self._drop:
                return True
            owner_id = self._owners[owner_id].parent
        return False


def _points(metric: Any) -> int:
    kind = metric.WhichOneof("data")
    return 0 if kind is None else len(getattr(metric, kind).data_points)


def _add_masked(attributes: Any, hits: int) -> Any:
    """Add `hits` to the container's `sluice.masked` (made if missing); returns that KeyValue."""
    for kv in attributes:
        if kv.key == MASKED_ATTRIBUTE:
            kv.value.int_value = kv.value.int_value + hits
            return kv
    mark = attributes.add(key=MASKED_ATTRIBUTE)
    mark.value.int_value = hits
    return mark
