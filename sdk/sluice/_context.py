"""Correlation ids (request, user, tenant) carried in OTel baggage and a contextvar.

Baggage is what crosses process boundaries (W3C `baggage` header); the contextvar holds the same ids
as ready-made record attributes so the logging hot path reads one contextvar instead of walking
baggage for every line. Both are set together by `context()` and restored together on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

__all__ = [
    "BAGGAGE_KEYS",
    "CorrelationLogProcessor",
    "CorrelationSpanProcessor",
    "context",
    "current_attributes",
]

# baggage key -> record attributes it becomes
BAGGAGE_KEYS: dict[str, tuple[str, ...]] = {
    "request.id": ("request.id",),
    "user.id": ("enduser.id", "user.id"),
    "tenant.id": ("tenant.id",),
}

correlation: ContextVar[Mapping[str, str] | None] = ContextVar("sluice_correlation", default=None)


def current_attributes() -> Mapping[str, str] | None:
    """The correlation attributes of the current context, or None; cheap enough for every log call."""
    return correlation.get()


def _attributes_from_baggage(entries: Mapping[str, object]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in entries.items():
        names = BAGGAGE_KEYS.get(key)
        if names is None:
            continue
        for name in names:
            out[name] = str(value)
    return out


@contextmanager
def context(
    *,
    request_id: str | None = None,
    user_id: str | None = None,
    tenant_id: str | None = None,
    **extra: Any,
) -> Iterator[Mapping[str, str]]:
    """Attach correlation ids to everything emitted inside the block, here and downstream.

    Extra keyword ids become baggage too (`session_id` -> `session.id`), so a team can add its own
    without a new SDK release. Ids set by an outer block stay unless overridden.
    """
    entries: dict[str, str] = {}
    for key, value in (("request.id", request_id), ("user.id", user_id), ("tenant.id", tenant_id)):
        if value is not None:
            entries[key] = str(value)
    for key, value in extra.items():
        if value is not None:
            entries[key.replace("_", ".")] = str(value)
    ctx: Context = otel_context.get_current()
    for key, value in entries.items():
        ctx = baggage.set_baggage(key, value, ctx)
    attrs = dict(correlation.get() or {})
    for key, value in entries.items():
        for name in BAGGAGE_KEYS.get(key, (key,)):
            attrs[name] = value
    otel_token = otel_context.attach(ctx)
    token = correlation.set(attrs)
    try:
        yield attrs
    finally:
        correlation.reset(token)
        otel_context.detach(otel_token)


def _gather(parent_context: Context | None) -> dict[str, str]:
    attrs = _attributes_from_baggage(baggage.get_all(parent_context))
    attrs.update(correlation.get() or {})
    return attrs


class CorrelationSpanProcessor(SpanProcessor):
    """Copies the correlation ids onto every span at start, so traces can be searched by request/user."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            attrs = _gather(parent_context)
            if attrs:
                span.set_attributes(attrs)
        except Exception:  # noqa: S110 - a processor must never break span creation
            pass

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class CorrelationLogProcessor(LogRecordProcessor):
    """The same for records emitted through the OTel Logs API directly (the stdlib bridge does its own)."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            attrs = _gather(log_record.log_record.context)
            if attrs and log_record.log_record.attributes is not None:
                for key, value in attrs.items():
                    log_record.log_record.attributes.setdefault(key, value)  # type: ignore[attr-defined]
        except Exception:  # noqa: S110
            pass

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
