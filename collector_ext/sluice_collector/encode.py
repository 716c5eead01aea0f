"""Serialising routed records into file lines: JSON lines (the record of truth) or human text.

This is the receiver's hot path, so the shape of the code follows the cost model of `upb`
protobuf messages, where every attribute access allocates a Python object:

- Everything shared by many records — a resource's attributes, `service.name`, a scope's
  name/version/attributes — is converted and serialised once per batch and spliced into each
  record's line as an `orjson.Fragment` (already-encoded JSON), not rebuilt per record.
- Attribute lists take a string fast path (`string_value or ...`) because most attribute values
  are strings, and `WhichOneof` costs as much as the rest of the loop body.
- Timestamps are formatted from a per-second cache: records of a batch share their second.
- A line is `orjson.dumps(obj) + b"\n"`, a copy of exactly the line's size. orjson's own result
  keeps the capacity it grew while writing — at least 4 KiB, 64 KiB for a 5 KB line — for as long
  as it lives, and a batch's lines all live until they are written: one 59 MiB request of 55,000
  records held 853 MiB of lines (RSS peak 775 MiB; with the copy ~100 MiB). The copy costs
  ~0.6 µs a record.

This Python code is the reference. When the compiled twin is on (`fastpath.py`), log and span
lines come from `_fastpath` instead, read straight from the request's encoding, with the same
bytes (tests/collector/test_fastpath.py); resources and scopes are still serialised here, once
per batch, and handed to it. Metrics and the text format are always Python.

Every function returns whole lines ending in ``\\n``; a line is never split across records,
so a file holds exactly one record per line.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeAlias

import orjson

from sluice_collector.batch import Batch, RecordRef, Signal
from sluice_collector.otlpvalues import SEVERITY_NAMES, any_value

__all__ = [
    "BatchCache",
    "Encoder",
    "TimestampFormatter",
    "encode_routes",
    "json_lines",
    "make_encoder",
    "rfc3339",
    "text_lines",
]

# (batch, category, refs) → one line (bytes, ending in b"\n") per ref, in order.
Encoder: TypeAlias = Callable[[Batch, str, list[RecordRef]], list[bytes]]

_Fragment = orjson.Fragment
_dumps = orjson.dumps
_NEWLINE = b"\n"
_EMPTY_OBJECT = _Fragment(b"{}")

SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")
TEMPORALITIES = ("unspecified", "delta", "cumulative")
_NS = 1_000_000_000
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


class TimestampFormatter:
    """RFC 3339 UTC with nanoseconds (``2026-11-23T08:57:35.123456789Z``), cached per second.

    One instance per encoding call: the cache is bounded by the seconds seen in one batch.
    """

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, unix_nano: int) -> str:
        sec, frac = divmod(unix_nano, _NS)
        return f"{self.prefix(sec)}.{frac:09d}Z"

    def prefix(self, sec: int) -> str:
        """``YYYY-MM-DDTHH:MM:SS`` of a Unix second."""
        prefix = self._cache.get(sec)
        if prefix is None:
            prefix = (_EPOCH + _dt.timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S")
            self._cache[sec] = prefix
        return prefix


def rfc3339(unix_nano: int) -> str:
    """One timestamp in the files' format (for callers outside the hot path)."""
    return TimestampFormatter()(unix_nano)


def _attrs(kvs: Any) -> dict[str, Any]:
    # String fast path; falls back to the full AnyValue conversion for everything else
    # (including the empty string, which `any_value` returns unchanged).
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = v.string_value or any_value(v)
    return out


def _hex(raw: bytes) -> str:
    return raw.hex() if raw and any(raw) else ""


class BatchCache:
    """Per-batch cache of the JSON of resources and scopes, keyed by message identity.

    The router's reference triples hold the very same resource-/scope-level objects for every
    record of one resource/scope, and they stay alive for the whole batch, so `id()` is a
    stable key for the duration of one batch. Create one per batch, never keep it longer.

    When `record_attrs` is a list, the JSON encoders append each record's attribute dict to it
    (spans and logs), so the file sink can fill path templates without converting the
    attributes a second time; `resource_attrs` likewise keeps each resource's dict.
    """

    __slots__ = ("_json", "_tables", "record_attrs", "resource_attrs", "resources", "scopes",
                 "services", "trace_url")

    def __init__(self) -> None:
        self.resources: dict[int, _Fragment] = {}
        self.resource_attrs: dict[int, dict[str, Any]] = {}
        self.services: dict[int, str] = {}
        self.scopes: dict[int, tuple[_Fragment, str]] = {}
        self.record_attrs: list[dict[str, Any]] | None = None
        # `files.trace_url` template ("" = none): lines with a trace id get a `trace_url`.
        self.trace_url = ""
        self._json: dict[int, bytes] = {}  # the bytes of each fragment above, by message identity
        self._tables: dict[int, tuple[list[bytes], list[bytes], list[bytes]]] = {}

    def resource_attributes(self, rl: Any) -> dict[str, Any]:
        self.resource(rl)
        return self.resource_attrs[id(rl)]

    def resource(self, rl: Any) -> tuple[_Fragment, str]:
        key = id(rl)
        frag = self.resources.get(key)
        if frag is None:
            attrs = _attrs(rl.resource.attributes)
            name = attrs.get("service.name")
            self.services[key] = name if isinstance(name, str) and name else "unknown_service"
            self.resource_attrs[key] = attrs
            data = self._json[key] = _dumps(attrs, option=orjson.OPT_NON_STR_KEYS)
            frag = self.resources[key] = _Fragment(data)
        return frag, self.services[key]

    def scope(self, sl: Any) -> tuple[_Fragment, str]:
        """The scope as a JSON fragment, and its name (the logger name of text lines)."""
        key = id(sl)
        hit = self.scopes.get(key)
        if hit is None:
            scope = sl.scope
            obj = {"name": scope.name, "version": scope.version, "attributes": _attrs(scope.attributes)}
            data = self._json[key] = _dumps(obj, option=orjson.OPT_NON_STR_KEYS)
            hit = self.scopes[key] = (_Fragment(data), scope.name)
        return hit

    def tables(self, batch: Batch) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """For the compiled encoder: the JSON of every resource, of its service name, and of
        every scope of `batch`, in request order (the positions its index counts)."""
        hit = self._tables.get(id(batch))
        if hit is None:
            resources: list[bytes] = []
            services: list[bytes] = []
            scopes: list[bytes] = []
            traces = batch.signal is Signal.TRACES
            request: Any = batch.request
            for rl in request.resource_spans if traces else request.resource_logs:
                service = self.resource(rl)[1]
                resources.append(self._json[id(rl)])
                services.append(_dumps(service))
                for sl in rl.scope_spans if traces else rl.scope_logs:
                    self.scope(sl)
                    scopes.append(self._json[id(sl)])
            hit = self._tables[id(batch)] = (resources, services, scopes)
        return hit


def _compiled_lines(batch: Batch, category: str, refs: list[RecordRef] | Iterable[RecordRef],
                    shared: BatchCache) -> list[bytes] | None:
    """The lines of `refs` from the compiled twin, or None where it does not apply: no index
    (the Python path, or a batch the router did not index) or refs that are not the routed ones."""
    index = batch.wire_index
    if index is None or batch.routes.get(category) is not refs:
        return None
    positions = batch.route_positions.get(category)
    if positions is None or len(positions) != len(batch.routes[category]):
        return None
    resources, services, scopes = shared.tables(batch)
    if len(resources) != index.resource_count or len(scopes) != index.scope_count:
        return None
    trace_url = shared.trace_url
    parts = tuple(_dumps(p)[1:-1] for p in trace_url.split("{trace_id}")) if trace_url else None
    lines: list[bytes] = index.lines(positions, _dumps(category), resources, services, scopes,
                                     batch.received_unix_nano, parts)
    keep = shared.record_attrs
    if keep is not None:
        ready = batch.attributes_of(category)
        if ready is not None and len(ready) == len(positions):
            keep.extend(ready)
        else:
            keep.extend(index.attributes(positions))
    return lines


# -- logs -----------------------------------------------------------------------------------


def _log_lines(batch: Batch, category: str, refs: Iterable[RecordRef], shared: BatchCache,
               ts: TimestampFormatter) -> list[bytes]:
    compiled = _compiled_lines(batch, category, refs, shared)
    if compiled is not None:
        return compiled
    # Deliberately one flat loop: function calls and attribute lookups are the cost here.
    out: list[bytes] = []
    append = out.append
    dumps = _dumps
    newline = _NEWLINE
    received = batch.received_unix_nano
    sev_names = SEVERITY_NAMES
    n_sev = len(sev_names)
    resource_of = shared.resource
    scope_of = shared.scope
    last_rl: Any = None
    last_sl: Any = None
    resource: _Fragment = _EMPTY_OBJECT
    scope: _Fragment = _EMPTY_OBJECT
    service = ""
    last_sec = -1
    prefix = ""
    keep = shared.record_attrs
    trace_url = shared.trace_url
    # The router already read every record's attributes into dicts (Batch.route_attributes);
    # use them when they line up with `refs`, else read the protobuf here.
    ready = batch.attributes_of(category)
    if ready is None or batch.routes.get(category) is not refs or len(ready) != len(refs):
        ready = None
    for index, (rl, sl, rec) in enumerate(refs):
        if rl is not last_rl:
            resource, service = resource_of(rl)
            last_rl = rl
        if sl is not last_sl:
            scope = scope_of(sl)[0]
            last_sl = sl
        observed = rec.observed_time_unix_nano or received
        t = rec.time_unix_nano or observed
        sec, frac = divmod(t, _NS)
        if sec != last_sec:
            prefix = ts.prefix(sec)
            last_sec = sec
        sev = rec.severity_number
        if 0 < sev < n_sev:
            level = sev_names[sev]
        else:
            text = rec.severity_text
            level = text.upper() if text else "UNSPECIFIED"
        body = rec.body
        if ready is not None:
            attrs = ready[index]
        else:
            attrs = {}
            for kv in rec.attributes:
                v = kv.value
                attrs[kv.key] = v.string_value or any_value(v)
        if keep is not None:
            keep.append(attrs)
        trace_id = rec.trace_id
        span_id = rec.span_id
        obj: dict[str, Any] = {
            "timestamp": f"{prefix}.{frac:09d}Z",
            "observed_timestamp": ts(observed) if observed != t else f"{prefix}.{frac:09d}Z",
            "severity": level,
            "severity_number": sev,
            "body": body.string_value or any_value(body),
            "category": category,
            "service.name": service,
            "trace_id": trace_id.hex() if trace_id and any(trace_id) else "",
            "span_id": span_id.hex() if span_id and any(span_id) else "",
            "attributes": attrs,
            "resource": resource,
            "scope": scope,
        }
        event_name = rec.event_name
        if event_name:
            obj["event_name"] = event_name
        flags = rec.flags
        if flags:
            obj["flags"] = flags
        dropped = rec.dropped_attributes_count
        if dropped:
            obj["dropped_attributes_count"] = dropped
        if trace_url and obj["trace_id"]:
            obj["trace_url"] = trace_url.replace("{trace_id}", obj["trace_id"])
        append(dumps(obj) + newline)  # an exact-size copy: see the module docstring
    return out


# -- spans ----------------------------------------------------------------------------------


def _span_lines(batch: Batch, category: str, refs: Iterable[RecordRef], shared: BatchCache,
                ts: TimestampFormatter) -> list[bytes]:
    compiled = _compiled_lines(batch, category, refs, shared)
    if compiled is not None:
        return compiled
    out: list[bytes] = []
    keep = shared.record_attrs
    for rs, ss, span in refs:
        resource, service = shared.resource(rs)
        attrs = _attrs(span.attributes)
        if keep is not None:
            keep.append(attrs)
        scope = shared.scope(ss)[0]
        start = span.start_time_unix_nano
        end = span.end_time_unix_nano
        kind = span.kind
        status = span.status
        obj: dict[str, Any] = {
            "timestamp": ts(start or batch.received_unix_nano),
            "name": span.name,
            "trace_id": _hex(span.trace_id),
            "span_id": _hex(span.span_id),
            "parent_span_id": _hex(span.parent_span_id),
            "kind": SPAN_KINDS[kind] if 0 <= kind < len(SPAN_KINDS) else str(kind),
            "start_time": ts(start),
            "end_time": ts(end),
            "duration_ms": (end - start) / 1e6 if end >= start else 0.0,
            "status": {
                "code": STATUS_CODES[status.code] if 0 <= status.code < 3 else str(status.code),
                "message": status.message,
            },
            "category": category,
            "service.name": service,
            "attributes": attrs,
            "events": [
                {"name": e.name, "time": ts(e.time_unix_nano), "attributes": _attrs(e.attributes)}
                for e in span.events
            ],
            "links": [
                {"trace_id": _hex(link.trace_id), "span_id": _hex(link.span_id),
                 "attributes": _attrs(link.attributes)}
                for link in span.links
            ],
            "resource": resource,
            "scope": scope,
        }
        if span.trace_state:
            obj["trace_state"] = span.trace_state
        for name in ("dropped_attributes_count", "dropped_events_count", "dropped_links_count"):
            count = getattr(span, name)
            if count:
                obj[name] = count
        if shared.trace_url and obj["trace_id"]:
            obj["trace_url"] = shared.trace_url.replace("{trace_id}", obj["trace_id"])
        out.append(_dumps(obj) + _NEWLINE)
    return out


# -- metrics --------------------------------------------------------------------------------


def _exemplars(point: Any, ts: TimestampFormatter) -> list[dict[str, Any]]:
    out = []
    for ex in point.exemplars:
        out.append({
            "time": ts(ex.time_unix_nano),
            "value": ex.as_int if ex.WhichOneof("value") == "as_int" else ex.as_double,
            "trace_id": _hex(ex.trace_id),
            "span_id": _hex(ex.span_id),
            "filtered_attributes": _attrs(ex.filtered_attributes),
        })
    return out


def _point_base(point: Any, ts: TimestampFormatter) -> dict[str, Any]:
    base: dict[str, Any] = {
        "attributes": _attrs(point.attributes),
        "start_time": ts(point.start_time_unix_nano) if point.start_time_unix_nano else "",
        "time": ts(point.time_unix_nano),
    }
    if point.flags:
        base["flags"] = point.flags
    return base


def _metric_points(kind: str, data: Any, ts: TimestampFormatter) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for p in data.data_points:
        d = _point_base(p, ts)
        if kind in ("gauge", "sum"):
            d["value"] = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
        elif kind == "histogram":
            d.update(count=p.count, sum=p.sum if p.HasField("sum") else None,
                     bucket_counts=list(p.bucket_counts), explicit_bounds=list(p.explicit_bounds))
            if p.HasField("min"):
                d["min"] = p.min
            if p.HasField("max"):
                d["max"] = p.max
        elif kind == "exponential_histogram":
            d.update(
                count=p.count, sum=p.sum if p.HasField("sum") else None, scale=p.scale,
                zero_count=p.zero_count, zero_threshold=p.zero_threshold,
                positive={"offset": p.positive.offset, "bucket_counts": list(p.positive.bucket_counts)},
                negative={"offset": p.negative.offset, "bucket_counts": list(p.negative.bucket_counts)},
            )
            if p.HasField("min"):
                d["min"] = p.min
            if p.HasField("max"):
                d["max"] = p.max
        else:  # summary
            d.update(count=p.count, sum=p.sum, quantile_values=[
                {"quantile": q.quantile, "value": q.value} for q in p.quantile_values
            ])
        if kind != "summary":
            d["exemplars"] = _exemplars(p, ts)
        points.append(d)
    return points


def _metric_lines(batch: Batch, category: str, refs: Iterable[RecordRef], shared: BatchCache,
                  ts: TimestampFormatter) -> list[bytes]:
    out: list[bytes] = []
    for rm, sm, metric in refs:
        resource, service = shared.resource(rm)
        scope = shared.scope(sm)[0]
        kind = metric.WhichOneof("data")
        obj: dict[str, Any] = {
            "timestamp": "",
            "name": metric.name,
            "description": metric.description,
            "unit": metric.unit,
            "type": kind or "empty",
            "category": category,
            "service.name": service,
        }
        latest = 0
        points: list[dict[str, Any]] = []
        if kind is not None:
            data = getattr(metric, kind)
            if kind in ("sum", "histogram", "exponential_histogram"):
                t = data.aggregation_temporality
                obj["temporality"] = TEMPORALITIES[t] if 0 <= t < 3 else str(t)
            if kind == "sum":
                obj["monotonic"] = data.is_monotonic
            points = _metric_points(kind, data, ts)
            latest = max((p.time_unix_nano for p in data.data_points), default=0)
        obj["timestamp"] = ts(latest or batch.received_unix_nano)
        obj["points"] = points
        obj["resource"] = resource
        obj["scope"] = scope
        if len(metric.metadata):
            obj["metadata"] = _attrs(metric.metadata)
        out.append(_dumps(obj) + _NEWLINE)
    return out


_JSON_BY_SIGNAL = {Signal.LOGS: _log_lines, Signal.TRACES: _span_lines, Signal.METRICS: _metric_lines}


def json_lines(batch: Batch, category: str, refs: list[RecordRef], *,
               cache: BatchCache | None = None, ts: TimestampFormatter | None = None) -> list[bytes]:
    """One JSON object per record, each ending in a newline (see docs/files.md for the shape).

    Pass one `cache` (and `ts`) for every category of a batch so resources and scopes are
    serialised once per batch rather than once per category.
    """
    fn = _JSON_BY_SIGNAL[batch.signal]
    return fn(batch, category, refs, cache or BatchCache(), ts or TimestampFormatter())


# -- text -----------------------------------------------------------------------------------

# Everything `str.splitlines` would break a line at, plus NUL.
_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\x00": "\\0", "\x0b": "\\v", "\x0c": "\\f",
                          "\x1c": "\\x1c", "\x1d": "\\x1d", "\x1e": "\\x1e", "\x85": "\\x85",
                          "\u2028": "\\u2028", "\u2029": "\\u2029"})
_LOGGER_KEYS = ("logger.name", "logger", "log.logger")
_FUNCTION_KEYS = ("code.function.name", "code.function")


def _one_line(text: str) -> str:
    """Escape line breaks so a record is always exactly one line of the file."""
    return text.translate(_ESCAPES) if not text.isprintable() else text


def _text_log_lines(batch: Batch, category: str, refs: Iterable[RecordRef], shared: BatchCache,
                    ts: TimestampFormatter) -> list[bytes]:
    out: list[bytes] = []
    received = batch.received_unix_nano
    for _rl, sl, rec in refs:
        logger = shared.scope(sl)[1]
        function = ""
        for kv in rec.attributes:
            key = kv.key
            if key in _FUNCTION_KEYS and not function:
                function = str(any_value(kv.value))
            elif key in _LOGGER_KEYS and not logger:
                logger = str(any_value(kv.value))
        sev = rec.severity_number
        # severity_text comes from the client: one line, like every other field (no forging).
        level = SEVERITY_NAMES[sev] if 0 < sev < len(SEVERITY_NAMES) else (
            _one_line(rec.severity_text.upper()) or "UNSPECIFIED")
        body = rec.body
        if body.WhichOneof("value") in ("string_value", None):
            message = body.string_value
        else:
            message = _dumps(any_value(body), option=orjson.OPT_NON_STR_KEYS).decode()
        t = rec.time_unix_nano or rec.observed_time_unix_nano or received
        line = f"{ts(t)} | {level} | {_one_line(logger)} | {_one_line(function)} | {_one_line(message)}\n"
        out.append(line.encode("utf-8", "backslashreplace"))
    return out


def text_lines(batch: Batch, category: str, refs: list[RecordRef], *,
               cache: BatchCache | None = None, ts: TimestampFormatter | None = None) -> list[bytes]:
    """``timestamp | LEVEL | logger | function | message`` for logs.

    Spans and metrics stay JSON even in text mode: a one-line summary would lose their
    structure, and they live in their own files (`traces`, `metrics`), so formats never mix.
    """
    shared = cache or BatchCache()
    stamp = ts or TimestampFormatter()
    if batch.signal is Signal.LOGS:
        return _text_log_lines(batch, category, refs, shared, stamp)
    return _JSON_BY_SIGNAL[batch.signal](batch, category, refs, shared, stamp)


def make_encoder(fmt: Literal["json", "text"]) -> Encoder:
    """The line encoder of `files.format`."""
    return text_lines if fmt == "text" else json_lines


def encode_routes(batch: Batch, fmt: Literal["json", "text"] = "json") -> dict[str, list[bytes]]:
    """Every routed record of `batch` as lines, per category, sharing one per-batch cache."""
    shared = BatchCache()
    ts = TimestampFormatter()
    fn = text_lines if fmt == "text" else json_lines
    return {category: fn(batch, category, refs, cache=shared, ts=ts)
            for category, refs in batch.routes.items()}
