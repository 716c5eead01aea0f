"""OTLP JSON (an already parsed JSON object) into an OTLP protobuf message, fast.

protobuf's `json_format.ParseDict` is generic and pure Python: it cost ~280 µs per log record,
ten times the whole gRPC path (bench/receiver.py). This walker does the same job for what OTLP
carries — no maps, no well-known types — with one precomputed plan per message type, and folds
in what OTLP JSON adds to the protobuf JSON mapping:

- `traceId`, `spanId`, `parentSpanId` are hex strings, not base64;
- enums are integers (names are accepted too, as `json_format` does; unknown names are ignored);
- 64-bit integers may be JSON numbers or strings; doubles may be "NaN", "Infinity", "-Infinity";
- field names may be lowerCamelCase (`timeUnixNano`) or the proto names (`time_unix_nano`);
- unknown fields are ignored, `null` means "not set".

Anything else — a wrong type, a number out of range, two members of one oneof, messages nested
more than `max_depth` deep — raises `OtlpJsonError` with a reason the client may see.
`tests/collector/test_otlpjson.py` proves it builds the same messages as `json_format` on random
requests of every signal.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_HEX_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})
_INT_TYPES = frozenset({
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
})
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_FROM_URLSAFE = str.maketrans("-_", "+/")


class OtlpJsonError(ValueError):
    """The JSON object is not a valid OTLP message of the expected type."""


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            as_float = float(value)  # "1e3" is an integer too, as json_format reads it
        except ValueError:
            as_float = math.nan
        if as_float.is_integer():
            return int(as_float)
    raise TypeError(f"expected an integer, got {value!r:.60}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        special = _SPECIAL_FLOATS.get(value)
        return special if special is not None else float(value)
    raise TypeError(f"expected a number, got {value!r:.60}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError(f"expected true or false, got {value!r:.60}")


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {value!r:.60}")


def _to_bytes(value: Any) -> bytes:
    text = _to_str(value)
    try:  # standard or URL-safe base64, padding optional — as json_format accepts
        return base64.b64decode(text.translate(_FROM_URLSAFE) + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise TypeError(f"expected base64 bytes, got {text!r:.60}") from None


def _to_hex_id(value: Any) -> bytes:
    text = _to_str(value)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise TypeError(f"{text[:80]!r} is not a hex string") from None


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # the proto (attribute) name
    repeated: bool
    plan: dict[str, _Field] | None  # set for message fields: the plan of the field's type
    convert: Callable[[Any], Any] | None  # set for scalar fields
    oneof: str | None


def _enum_converter(field: FieldDescriptor) -> Callable[[Any], Any]:
    assert field.enum_type is not None
    by_name = {v.name: v.number for v in field.enum_type.values}

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return by_name.get(value)  # None: an unknown name, ignored
        return _to_int(value)

    return convert


def _converter(field: FieldDescriptor) -> Callable[[Any], Any]:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum_converter(field)
    if field.type in _INT_TYPES:
        return _to_int
    if field.type in _FLOAT_TYPES:
        return _to_float
    if field.type == FieldDescriptor.TYPE_BOOL:
        return _to_bool
    if field.type == FieldDescriptor.TYPE_STRING:
        return _to_str
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _to_hex_id if field.name in _HEX_ID_FIELDS else _to_bytes
    raise NotImplementedError(f"field {field.full_name} of type {field.type}")  # not in OTLP


_PLANS: dict[str, dict[str, _Field]] = {}


def _plan(descriptor: Any) -> dict[str, _Field]:
    """Both JSON spellings of every field of `descriptor` → how to set it. A plan is registered
    before it is filled, so recursive types (AnyValue ↔ KeyValueList) share one."""
    plan = _PLANS.get(descriptor.full_name)
    if plan is not None:
        return plan
    plan = _PLANS[descriptor.full_name] = {}
    for field in descriptor.fields:
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        entry = _Field(
            name=field.name,
            repeated=field.is_repeated,
            plan=_plan(field.message_type) if is_message else None,
            convert=None if is_message else _converter(field),
            oneof=field.containing_oneof.name if field.containing_oneof is not None else None,
        )
        plan[field.json_name] = entry
        plan[field.name] = entry
    return plan


def parse_into(obj: Any, message: Message, *, max_depth: int = 100) -> None:
    """Fill `message` (an empty OTLP message) from the JSON object `obj`; raises OtlpJsonError
    naming where in the object the problem is (e.g. `resourceLogs[0].scopeLogs[2]...`)."""
    try:
        _fill(message, obj, _plan(message.DESCRIPTOR), max_depth)
    except _Invalid as exc:
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in reversed(exc.path))
        raise OtlpJsonError(f"{where.lstrip('.')}: {exc}" if where else str(exc)) from None
    except RecursionError:
        raise OtlpJsonError("values nested too deeply") from None


class _Invalid(Exception):
    """Raised deep down; each level adds its key on the way up (errors are rare: paths are
    built only for them)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.path: list[str | int] = []


def _fill(message: Message, obj: Any, plan: dict[str, _Field], depth: int) -> None:
    if not isinstance(obj, dict):
        raise _Invalid(f"expected a JSON object, got {type(obj).__name__}")
    if depth <= 0:
        raise _Invalid("values nested too deeply")
    for key, value in obj.items():
        field = plan.get(key)
        if field is None or value is None:
            continue  # unknown fields are ignored; null is "not set"
        try:
            if field.oneof is not None:
                chosen = message.WhichOneof(field.oneof)
                if chosen is not None and chosen != field.name:
                    raise _Invalid(f"more than one value for oneof {field.oneof}")
            sub_plan = field.plan
            if sub_plan is not None:
                if field.repeated:
                    if not isinstance(value, list):
                        raise _Invalid(f"expected a list, got {type(value).__name__}")
                    add = getattr(message, field.name).add
                    for index, item in enumerate(value):
                        try:
                            _fill(add(), item, sub_plan, depth - 1)
                        except _Invalid as exc:
                            exc.path.append(index)
                            raise
                else:
                    child = getattr(message, field.name)
                    child.SetInParent()  # `{}` still sets the field (and its oneof)
                    _fill(child, value, sub_plan, depth - 1)
                continue
            convert = field.convert
            assert convert is not None
            if field.repeated:
                if not isinstance(value, list):
                    raise _Invalid(f"expected a list, got {type(value).__name__}")
                getattr(message, field.name).extend([v for v in map(convert, value) if v is not None])
            else:
                converted = convert(value)
                if converted is not None:
                    setattr(message, field.name, converted)
        except _Invalid as exc:
            exc.path.append(key)
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            invalid = _Invalid(str(exc))
            invalid.path.append(key)
            raise invalid from None


__all__ = ["OtlpJsonError", "parse_into"]
