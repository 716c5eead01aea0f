"""Reading OTLP protobuf values as plain Python, shared by the router and every sink.

These run per record on the hot path, so they branch on `WhichOneof` once and avoid building
anything the caller did not ask for.
"""

from __future__ import annotations

import base64
from typing import Any

# OTel SeverityNumber ranges → the short names used in files and rules.
SEVERITY_NAMES: tuple[str, ...] = (
    "UNSPECIFIED",
    *(["TRACE"] * 4), *(["DEBUG"] * 4), *(["INFO"] * 4),
    *(["WARN"] * 4), *(["ERROR"] * 4), *(["FATAL"] * 4),
)
# Accepted spellings in config → the lowest SeverityNumber of that level.
SEVERITY_LEVELS: dict[str, int] = {
    "TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17,
    "FATAL": 21, "CRITICAL": 21,
}


def severity_name(number: int, text: str = "") -> str:
    """The level name of a record: the SeverityNumber's range, else the sender's text."""
    if 0 < number < len(SEVERITY_NAMES):
        return SEVERITY_NAMES[number]
    if text:
        return text.upper()
    return "UNSPECIFIED"


def any_value(value: Any) -> Any:
    """An `AnyValue` as str/bool/int/float/bytes-as-base64/list/dict/None."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind is None:
        return None
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def attributes(kvs: Any) -> dict[str, Any]:
    """A repeated `KeyValue` field as a dict (a later duplicate key wins, as in most SDKs)."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def find_attribute(kvs: Any, key: str) -> Any:
    """The value of attribute `key`, or None; cheaper than building the whole dict."""
    for kv in kvs:
        if kv.key == key:
            return any_value(kv.value)
    return None


def body_text(value: Any) -> str:
    """A log body as one line of text (non-string bodies as compact JSON)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind is None:
        return ""
    import orjson

    return orjson.dumps(any_value(value), option=orjson.OPT_NON_STR_KEYS).decode("utf-8")


def hex_id(raw: bytes) -> str:
    """Trace/span ids as lowercase hex; empty when absent or all zero (invalid per W3C)."""
    if not raw or not any(raw):
        return ""
    return raw.hex()


def service_name(resource: Any) -> str:
    """`service.name` of a resource, or the OTel default for a missing one."""
    name = find_attribute(resource.attributes, "service.name")
    return name if isinstance(name, str) and name else "unknown_service"
