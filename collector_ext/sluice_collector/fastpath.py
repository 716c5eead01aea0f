"""The switch between the receiver's compiled hot path and its pure-Python reference.

`_fastpath` (C, built at install when a compiler is there, optional otherwise) reads log records
and spans straight from the protobuf encoding of an Export request: the router's attribute
dicts and the file lines' JSON come out of it without a Python object per field (the cost that
dominated the receiver's non-masking work under upb). The Python code in `processors/routing.py`
and `encode.py` stays the reference: it runs when the extension is missing or
``SLUICE_PURE_PYTHON=1`` is set, and tests/collector/test_fastpath.py proves both give the same
bytes.

The compiled path is only as right as the bytes it reads, so:

- the router builds the index (`index_batch`) after every stage that changes the request, from
  `Batch.encoded()` — the raw request while no stage changed it (or masking rewrote it on the
  wire, `processors/wiremask.py`), else a fresh serialisation — so what it reads is what
  masking left;
- it turns itself off when the installed opentelemetry-proto does not have exactly the fields
  (numbers, types, oneof) the C code reads (`SCHEMA`), since it reads them by number;
- an encoding it cannot reproduce exactly (a singular message repeated on the wire, which
  protobuf merges) raises `Unsupported` while indexing: a fresh serialisation is canonical, and
  failing that the batch takes the Python path.
"""

from __future__ import annotations

import os
from typing import Any

from sluice_collector.batch import Batch, Signal

__all__ = ["COMPILED", "OFF_REASON", "SCHEMA", "compiled_function", "index_batch"]

# The fields the C code reads, by message: (name, number, type) in descriptor order, and the
# members of AnyValue's oneof. Types are FieldDescriptor.TYPE_* numbers.
SCHEMA: dict[str, tuple[tuple[str, int, int], ...]] = {
    "opentelemetry.proto.common.v1.AnyValue": (
        ("string_value", 1, 9), ("bool_value", 2, 8), ("int_value", 3, 3), ("double_value", 4, 1),
        ("array_value", 5, 11), ("kvlist_value", 6, 11), ("bytes_value", 7, 12),
        ("string_value_strindex", 8, 5),
    ),
    "opentelemetry.proto.common.v1.KeyValue": (("key", 1, 9), ("value", 2, 11), ("key_strindex", 3, 5)),
    "opentelemetry.proto.common.v1.ArrayValue": (("values", 1, 11),),
    "opentelemetry.proto.common.v1.KeyValueList": (("values", 1, 11),),
    "opentelemetry.proto.logs.v1.LogRecord": (
        ("time_unix_nano", 1, 6), ("observed_time_unix_nano", 11, 6), ("severity_number", 2, 14),
        ("severity_text", 3, 9), ("body", 5, 11), ("attributes", 6, 11),
        ("dropped_attributes_count", 7, 13), ("flags", 8, 7), ("trace_id", 9, 12),
        ("span_id", 10, 12), ("event_name", 12, 9),
    ),
    "opentelemetry.proto.logs.v1.ScopeLogs": (("scope", 1, 11), ("log_records", 2, 11), ("schema_url", 3, 9)),
    "opentelemetry.proto.logs.v1.ResourceLogs": (
        ("resource", 1, 11), ("scope_logs", 2, 11), ("schema_url", 3, 9),
    ),
    "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest": (("resource_logs", 1, 11),),
    "opentelemetry.proto.trace.v1.Span": (
        ("trace_id", 1, 12), ("span_id", 2, 12), ("trace_state", 3, 9), ("parent_span_id", 4, 12),
        ("flags", 16, 7), ("name", 5, 9), ("kind", 6, 14), ("start_time_unix_nano", 7, 6),
        ("end_time_unix_nano", 8, 6), ("attributes", 9, 11), ("dropped_attributes_count", 10, 13),
        ("events", 11, 11), ("dropped_events_count", 12, 13), ("links", 13, 11),
        ("dropped_links_count", 14, 13), ("status", 15, 11),
    ),
    "opentelemetry.proto.trace.v1.Span.Event": (
        ("time_unix_nano", 1, 6), ("name", 2, 9), ("attributes", 3, 11),
        ("dropped_attributes_count", 4, 13),
    ),
    "opentelemetry.proto.trace.v1.Span.Link": (
        ("trace_id", 1, 12), ("span_id", 2, 12), ("trace_state", 3, 9), ("attributes", 4, 11),
        ("dropped_attributes_count", 5, 13), ("flags", 6, 7),
    ),
    "opentelemetry.proto.trace.v1.Status": (("message", 2, 9), ("code", 3, 14)),
    "opentelemetry.proto.trace.v1.ScopeSpans": (("scope", 1, 11), ("spans", 2, 11), ("schema_url", 3, 9)),
    "opentelemetry.proto.trace.v1.ResourceSpans": (
        ("resource", 1, 11), ("scope_spans", 2, 11), ("schema_url", 3, 9),
    ),
    "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest": (("resource_spans", 1, 11),),
}
_ANYVALUE_ONEOF = frozenset(name for name, _n, _t in SCHEMA["opentelemetry.proto.common.v1.AnyValue"])
_SIGNALS = {Signal.LOGS: 0, Signal.TRACES: 1}


def installed_schema_problem() -> str:
    """What differs between `SCHEMA` and the installed opentelemetry-proto ("" when nothing)."""
    # Importing the request modules registers every message they use in the default pool.
    from google.protobuf import descriptor_pool
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # noqa: F401
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: F401

    pool = descriptor_pool.Default()
    for name, fields in SCHEMA.items():
        descriptor = pool.FindMessageTypeByName(name)
        found = tuple((f.name, f.number, f.type) for f in descriptor.fields)
        if found != fields:
            return f"{name} has fields {found}, the compiled path reads {fields}"
    any_value = pool.FindMessageTypeByName("opentelemetry.proto.common.v1.AnyValue")
    members = frozenset(f.name for f in any_value.oneofs_by_name["value"].fields)
    if members != _ANYVALUE_ONEOF:
        return f"AnyValue's oneof is {sorted(members)}, the compiled path reads {sorted(_ANYVALUE_ONEOF)}"
    return ""


def _load() -> tuple[Any, str]:
    if os.environ.get("SLUICE_PURE_PYTHON", "") not in ("", "0"):
        return None, "SLUICE_PURE_PYTHON is set"
    try:
        from sluice_collector import _fastpath  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"the extension is not built ({exc})"
    problem = installed_schema_problem()
    if problem:
        return None, f"opentelemetry-proto differs from what the extension reads: {problem}"
    return _fastpath, ""


_compiled, OFF_REASON = _load()
# True when the compiled path is in use; OFF_REASON says why not otherwise.
COMPILED: bool = _compiled is not None
Unsupported: type[Exception] = _compiled.Unsupported if _compiled is not None else ValueError


def compiled_function(name: str) -> Any:
    """A module-level function of the extension, or None when the compiled path is off."""
    return getattr(_compiled, name, None) if _compiled is not None else None


def index_batch(batch: Batch) -> Any:
    """Index `batch`'s records for the compiled path and keep the index on `batch.wire_index`;
    None (and the Python path) when it is off, for metrics, or when no encoding of the request
    can be read exactly. Call it only after the last stage that changes the request."""
    batch.wire_index = None
    if _compiled is None or batch.signal not in _SIGNALS:
        return None
    signal = _SIGNALS[batch.signal]
    data = batch.encoded()
    for attempt in range(2):
        try:
            index = _compiled.WireIndex(signal, data)
        except _compiled.Unsupported:
            if attempt or data is not batch.raw:
                return None
            data = batch.request.SerializeToString()  # canonical: no repeated singular fields
            continue
        if index.record_count != batch.record_count():
            return None  # cannot happen for an encoding of the request; never guess
        batch.wire_index = index
        return index
    return None
