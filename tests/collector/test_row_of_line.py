"""`row_of_line` runs for every indexed record, so it was rewritten for speed; this test holds
it to the plain version it replaced (kept below as the specification), over generated lines
with every field in every JSON type, and lines that are not JSON objects at all."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_collector.query.store import (
    DURATION_KEYS,
    MASKED_USER_RE,
    STATUS_KEYS,
    USER_KEYS,
    Row,
    _text,
    parse_timestamp,
    row_of_line,
    strip_chain,
)


def reference_row_of_line(line: bytes, tenant: str = "") -> Row | None:
    """The version before the rewrite, unchanged."""
    body = line.rstrip(b"\n")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("category"), str):
        return None
    attrs = obj.get("attributes")
    if not isinstance(attrs, dict):
        attrs = {}
    user = ""
    resource = obj.get("resource")
    for source in (attrs, resource if isinstance(resource, dict) else {}):
        for key in USER_KEYS:
            value = source.get(key)
            if value:
                user = value if type(value) is str else _text(value)
                break
        if user:
            break
    if MASKED_USER_RE.match(user):
        user = ""
    if "severity_number" in obj:
        severity = obj["severity_number"] if isinstance(obj["severity_number"], int) else 0
        event = _text(obj.get("event_name") or attrs.get("event.name"))
        status = ""
        for key in STATUS_KEYS:
            value = attrs.get(key)
            if value is not None and value != "":
                status = _text(value)
                break
        duration_ms = None
        for key in DURATION_KEYS:
            duration = attrs.get(key)
            if isinstance(duration, int | float) and not isinstance(duration, bool):
                duration_ms = float(duration)
                break
    elif "start_time" in obj and "kind" in obj:
        severity = 0
        event = _text(attrs.get("event.name"))
        status_obj = obj.get("status")
        status = _text(status_obj.get("code")) if isinstance(status_obj, dict) else ""
        duration_ms = float(obj.get("duration_ms") or 0.0)
    else:
        return None
    try:
        time_ns = parse_timestamp(str(obj["timestamp"]))
    except (KeyError, ValueError):
        return None
    if obj["category"] == "audit":
        body = strip_chain(body)
    return Row(
        time_ns=time_ns, severity=severity, category=obj["category"],
        service=_text(obj.get("service.name")), trace_id=_text(obj.get("trace_id")),
        span_id=_text(obj.get("span_id")), user_id=user, tenant=tenant, event_name=event,
        status=status, duration_ms=duration_ms, line=body.decode("utf-8", "replace"),
    )


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["", "alice", "[REDACTED:email]", "[REDACTED:x]y", "500", "error"]))
values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=2))
attribute_keys = st.sampled_from([*USER_KEYS, *STATUS_KEYS, *DURATION_KEYS, "event.name", "other"])
attributes = st.one_of(st.dictionaries(attribute_keys, values, max_size=6), values)
timestamps = st.one_of(
    st.sampled_from(["2026-11-23T08:57:35.123456789Z", "2026-11-23T08:57:35Z",
                     "2026-11-23T08:57:35.1Z", "not a time", "2026-13-01T00:00:00Z"]), values)


valid_times = st.sampled_from(["2026-11-23T08:57:35.123456789Z", "2026-11-23T08:57:35Z",
                               "2026-11-23T08:57:35.1Z"])


@st.composite
def records(draw: Any) -> dict[str, Any]:
    """Mostly rows (a log record or a span with a category and a valid time), so that every
    field's handling is reached; sometimes anything."""
    record: dict[str, Any] = {}
    shape = draw(st.sampled_from(["log", "span", "log", "span", "anything"]))
    if shape != "anything":
        record["category"] = draw(st.sampled_from(["app", "audit", "access"]))
        record["timestamp"] = draw(valid_times)
        if shape == "log":
            record["severity_number"] = draw(st.one_of(st.integers(0, 24), values))
        else:
            record["start_time"], record["kind"] = draw(valid_times), "server"
    for key, strategy in (("category", values), ("timestamp", timestamps),
                          ("attributes", attributes), ("resource", attributes),
                          ("severity_number", values), ("event_name", values),
                          ("start_time", values), ("kind", values),
                          ("status", st.one_of(values, st.fixed_dictionaries({"code": values}))),
                          ("duration_ms", st.one_of(st.none(), st.integers(0, 10**6), st.floats(0, 1e6))),
                          ("service.name", values), ("trace_id", values), ("span_id", values),
                          ("audit.hash", st.just("ab12"))):
        if (key not in record and draw(st.integers(0, 3)) == 0) or (key in (
                "attributes", "resource", "status", "service.name") and draw(st.booleans())):
            record[key] = draw(strategy)
    return record


@settings(max_examples=3000, deadline=None)
@given(records(), st.sampled_from(["", "acme"]))
def test_the_rewrite_derives_the_same_row(record: dict[str, Any], tenant: str) -> None:
    line = orjson.dumps(record) + b"\n"
    assert row_of_line(line, tenant) == reference_row_of_line(line, tenant)


@given(st.binary(max_size=40))
def test_and_refuses_the_same_lines(line: bytes) -> None:
    assert row_of_line(line) == reference_row_of_line(line)
