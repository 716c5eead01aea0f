"""A hand-written protobuf encoder for OTLP logs: `ExportLogsServiceRequest` bytes without messages.

Why not the generated classes: building one `LogRecord` message (plus `KeyValue`/`AnyValue`
children) per log line costs several microseconds, which alone is more than a `FileHandler` spends
on a whole call. Encoding straight to wire bytes, with the per-call-site parts (severity, code
location) encoded once and cached, keeps the bridge within budget. The output is ordinary OTLP; the
tests parse it back with the official `opentelemetry.proto` classes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "SMALL",
    "any_value",
    "attribute",
    "attribute_tagged",
    "export_request",
    "key_value",
    "log_record",
    "pack_i",
    "pack_q",
    "resource",
    "scope_logs",
    "severity",
    "varint",
]

_MASK64 = (1 << 64) - 1
SMALL = [bytes([n]) for n in range(128)]
pack_q = struct.Struct("<Q").pack
pack_i = struct.Struct("<I").pack
_pack_d = struct.Struct("<d").pack


def varint(n: int) -> bytes:
    """Encode a non-negative int (negatives as two's complement 64-bit, as int64 fields require)."""
    if 0 <= n < 128:
        return SMALL[n]
    n &= _MASK64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def any_value(value: Any) -> bytes:
    """Encode an `AnyValue` message body (without its own tag)."""
    if isinstance(value, str):
        return _ld(b"\x0a", value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, bytes | bytearray):
        return _ld(b"\x3a", bytes(value))
    if isinstance(value, Mapping):
        return _ld(b"\x32", b"".join(_ld(b"\x0a", key_value(str(k), v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", any_value(v)) for v in value))
    if value is None:
        return b""
    return _ld(b"\x0a", str(value).encode("utf-8", "replace"))


def key_value(key: str, value: Any) -> bytes:
    """Encode a `KeyValue` message body."""
    return _ld(b"\x0a", key.encode("utf-8", "replace")) + _ld(b"\x12", any_value(value))


def attribute_tagged(tag: bytes, text: str) -> bytes:
    """A string field with its tag, ready to concatenate."""
    return _ld(tag, text.encode("utf-8", "replace"))


def attribute(key: str, value: Any) -> bytes:
    """A `LogRecord.attributes` entry, tag included, ready to concatenate."""
    return _ld(b"\x32", key_value(key, value))


def log_record(
    *,
    time_unix_nano: int,
    observed_time_unix_nano: int,
    head: bytes,
    body: Any,
    attributes: bytes,
    trace_id: int = 0,
    span_id: int = 0,
    flags: int = 0,
    event_name: str | None = None,
) -> bytes:
    """Encode a `LogRecord`; `head` holds the cached severity fields, `attributes` pre-encoded entries."""
    parts = [b"\x09", pack_q(time_unix_nano), head, _ld(b"\x2a", any_value(body)), attributes]
    if flags:
        parts.append(b"\x45" + pack_i(flags & 0xFFFFFFFF))
    if trace_id:
        parts.append(b"\x4a\x10" + trace_id.to_bytes(16, "big"))
    if span_id:
        parts.append(b"\x52\x08" + span_id.to_bytes(8, "big"))
    parts.append(b"\x59" + pack_q(observed_time_unix_nano))
    if event_name:
        parts.append(_ld(b"\x62", event_name.encode("utf-8", "replace")))
    return b"".join(parts)


def severity(number: int, text: str) -> bytes:
    """The severity fields of a `LogRecord` (`severity_number`, `severity_text`)."""
    return b"\x10" + varint(number) + _ld(b"\x1a", text.encode())


def resource(attributes: Mapping[str, Any]) -> bytes:
    """Encode a `Resource` message body."""
    return b"".join(_ld(b"\x0a", key_value(k, v)) for k, v in attributes.items())


def scope_logs(scope_name: str, records: Iterable[bytes], version: str | None = None) -> bytes:
    """Encode a `ScopeLogs` message body: the scope and its already-encoded records."""
    scope = _ld(b"\x0a", scope_name.encode("utf-8", "replace"))
    if version:
        scope += _ld(b"\x12", version.encode())
    return _ld(b"\x0a", scope) + b"".join(_ld(b"\x12", r) for r in records)


def export_request(resource_body: bytes, scopes: Sequence[bytes]) -> bytes:
    """Encode an `ExportLogsServiceRequest` with one `ResourceLogs` holding `scopes` (ScopeLogs bodies)."""
    resource_logs = _ld(b"\x0a", resource_body) + b"".join(_ld(b"\x12", s) for s in scopes)
    return _ld(b"\x0a", resource_logs)
