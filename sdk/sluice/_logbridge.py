"""stdlib `logging` -> OTel log records, cheaply, without disturbing the app's own handlers.

The handler does the least it can on the app thread: read the span context (already captured by
our record factory), format the message, pick up `extra=` attributes and correlation ids, and
append one tuple to the shipper's queue. It takes no handler lock (the queue is thread-safe), never
raises, and ignores records from OpenTelemetry, gRPC and sluice's own internals, plus anything
logged while it is already running on this thread: an exporter that logs cannot feed itself.

The record factory adds `trace_id`/`span_id` to every `LogRecord`, so existing formatters can
print `%(trace_id)s` and the handler does not have to look the span up a second time.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from sluice import _health
from sluice._context import correlation
from sluice._shipper import Item, LogShipper, severity_number

__all__ = [
    "OtelLogSink",
    "SluiceHandler",
    "attach",
    "detach",
    "install_record_factory",
    "to_item",
    "uninstall_record_factory",
]

INTERNAL_PREFIXES = ("opentelemetry", "grpc", "sluice.internal")
ZERO_TRACE_ID = "0" * 32
ZERO_SPAN_ID = "0" * 16
_NO_SPAN = (0, 0, 0)

_SAMPLE = logging.LogRecord("x", logging.INFO, "x", 1, "x", None, None)
_BASELINE = len(vars(_SAMPLE)) + 3  # the three attributes our factory adds
RESERVED = frozenset(vars(_SAMPLE)) | {
    "message", "asctime", "trace_id", "span_id", "_sluice_span", "taskName",
}


def _span_tuple() -> tuple[int, int, int]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return (ctx.trace_id, ctx.span_id, int(ctx.trace_flags))
    return _NO_SPAN


def install_record_factory() -> None:
    """Wrap the current record factory (keeping whatever it does) to add the trace context."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_sluice_previous", None) is not None:
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
            record._sluice_span = (ctx.trace_id, ctx.span_id, int(ctx.trace_flags))
        else:
            record.trace_id = ZERO_TRACE_ID
            record.span_id = ZERO_SPAN_ID
            record._sluice_span = _NO_SPAN
        return record

    factory._sluice_previous = previous  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def uninstall_record_factory() -> None:
    current = logging.getLogRecordFactory()
    previous = getattr(current, "_sluice_previous", None)
    if previous is not None:
        logging.setLogRecordFactory(previous)


def _exception_attributes(record: logging.LogRecord) -> dict[str, Any]:
    assert record.exc_info is not None
    exc_type, exc, tb = record.exc_info
    attrs: dict[str, Any] = {}
    if exc_type is not None:
        attrs["exception.type"] = exc_type.__qualname__
    if exc is not None:
        attrs["exception.message"] = str(exc)
    attrs["exception.stacktrace"] = record.exc_text or "".join(traceback.format_exception(exc_type, exc, tb))
    return attrs


def to_item(record: logging.LogRecord) -> Item:
    """Capture what the exporter needs from a `LogRecord`, now, while its context is current."""
    d = record.__dict__
    span = d.get("_sluice_span")
    tid, sid, flags = span if span is not None else _span_tuple()
    msg = record.msg
    if record.args:
        # A handler before us (e.g. basicConfig's) has usually formatted it already: reuse that.
        body: Any = d.get("message") or record.getMessage()
    elif isinstance(msg, str | int | float | bool | bytes | Mapping | list | tuple):
        body = msg
    else:
        body = str(msg)
    attrs: dict[str, Any] | None = None
    if len(d) > _BASELINE or span is None:
        extra = d.keys() - RESERVED
        if extra:
            attrs = {k: d[k] for k in extra}
    corr = correlation.get()
    if corr:
        attrs = dict(corr) if attrs is None else {**corr, **attrs}
    if record.exc_info and record.exc_info[0] is not None:
        attrs = {**(attrs or {}), **_exception_attributes(record)}
    event_name = attrs.get("event.name") if attrs else None
    return (
        record.created, record.levelno, record.levelname, record.name, body,
        record.pathname, record.funcName, record.lineno, tid, sid, flags, attrs,
        event_name if isinstance(event_name, str) else None,
    )


class _Guard(threading.local):
    active = False


class SluiceHandler(logging.Handler):
    """Ship every record the app logs, with its trace context, to the shipper and any extra sinks."""

    def __init__(self, shipper: LogShipper | None = None, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.shipper = shipper
        self.sinks: list[Callable[[Item], None]] = []
        self._guard = _Guard()
        self._internal: dict[str, bool] = {}

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: our only shared state is a deque, and the lock would cost as much as emit.
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        guard = self._guard
        if guard.active:
            return
        name = record.name
        internal = self._internal.get(name)
        if internal is None:
            if len(self._internal) > 10_000:
                self._internal.clear()
            internal = self._internal[name] = name.startswith(INTERNAL_PREFIXES)
        if internal:
            return
        guard.active = True
        try:
            item = to_item(record)
            if self.shipper is not None:
                self.shipper.submit(item)
            for sink in self.sinks:
                sink(item)
        except Exception as exc:
            _health.report_once("log_bridge", "could not bridge a log record", exc)
        finally:
            guard.active = False


def _plain(value: Any) -> Any:
    """Coerce a value into what OTel attributes accept (maps and lists kept, other objects as text)."""
    if isinstance(value, str | bool | int | float | bytes) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


class OtelLogSink:
    """Re-emit bridged records through an OTel `LoggerProvider`: the slow but standard path.

    Used for the console exporter and for `sluice.testing.capture()`, where the official SDK's
    processors and in-memory exporter should see exactly what the wire path sends.
    """

    def __init__(self, provider: LoggerProvider) -> None:
        self.provider = provider

    def __call__(self, item: Item) -> None:
        t, levelno, levelname, name, body, path, func, line, tid, sid, flags, attrs, event_name = item
        attributes: dict[str, Any] = {
            "code.file.path": path, "code.function.name": func, "code.line.number": line,
        }
        if attrs:
            attributes.update({k: _plain(v) for k, v in attrs.items()})
        ctx = None
        if tid:
            span = NonRecordingSpan(SpanContext(tid, sid, is_remote=False, trace_flags=TraceFlags(flags)))
            ctx = trace.set_span_in_context(span)
        self.provider.get_logger(name).emit(LogRecord(
            timestamp=int(t * 1e9), observed_timestamp=int(t * 1e9), context=ctx,
            severity_number=SeverityNumber(severity_number(levelno)),
            severity_text={"WARNING": "WARN", "CRITICAL": "FATAL"}.get(levelname, levelname),
            body=_plain(body), attributes=attributes, event_name=event_name,
        ))


# -- staying attached to the root logger ---------------------------------------------------------
#
# `logging.basicConfig()` does nothing when the root logger already has a handler, and
# `dictConfig`/`fileConfig` replace the root's handlers. Either would silently break an app that
# calls `sluice.init()` before configuring logging: its console output would vanish, or sluice's
# would. So these three are wrapped: our handler steps aside while they run, and comes back after.

_attached: list[SluiceHandler] = []
_originals: dict[str, Any] = {}


def _wrap(module: Any, name: str) -> None:
    original = getattr(module, name)
    _originals[f"{module.__name__}.{name}"] = original

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        root = logging.getLogger()
        ours = [h for h in _attached if h in root.handlers]
        for handler in ours:
            root.removeHandler(handler)
        try:
            return original(*args, **kwargs)
        finally:
            for handler in _attached:
                if handler not in root.handlers:
                    root.addHandler(handler)

    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    wrapper.__doc__ = original.__doc__
    setattr(module, name, wrapper)


def attach(handler: SluiceHandler) -> None:
    """Add `handler` to the root logger and keep it there across later logging configuration."""
    import logging.config

    if not _originals:
        _wrap(logging, "basicConfig")
        _wrap(logging.config, "dictConfig")
        _wrap(logging.config, "fileConfig")
    _attached.append(handler)
    logging.getLogger().addHandler(handler)


def detach(handler: SluiceHandler) -> None:
    """Undo `attach`; the stdlib functions are restored once no handler is attached."""
    import logging.config

    if handler in _attached:
        _attached.remove(handler)
    logging.getLogger().removeHandler(handler)
    if not _attached and _originals:
        logging.basicConfig = _originals.pop("logging.basicConfig")
        logging.config.dictConfig = _originals.pop("logging.config.dictConfig")
        logging.config.fileConfig = _originals.pop("logging.config.fileConfig")
