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


# -- seeing every record without being a handler ------------------------------------------------
#
# A handler on the root logger is not invisible. `logging.basicConfig()` does nothing when the root
# already has one; werkzeug and Flask add their console handler only when no handler would print
# their records (`_has_level_handler` walks `logger.handlers` up to the root); `logging.lastResort`
# prints warnings of unconfigured apps only when no handler was found. Each of those made an app's
# console output vanish once `sluice.init()` had run. So, as Sentry's logging integration does, the
# bridge hooks `Logger.callHandlers` instead: it sees every record after the app's own handlers ran,
# ships those that would have reached the root logger (propagation is honoured), and the app's
# logging configuration, checks and console stay exactly what they were without sluice.
#
# The bridge's level (`log_level`, INFO by default) may be below what the app's levels let through
# (the root logger sits at WARNING unless configured). For loggers that leave their level to the
# root, `Logger.isEnabledFor` then also says yes from that level on, so such records are created;
# they are shipped but not shown to the app's handlers, which therefore print exactly what they
# printed before. Loggers with a level of their own keep it, for shipping too. `getEffectiveLevel()`
# and every level stay untouched, so checks such as werkzeug's see the app's own configuration.

_attached: list[tuple[SluiceHandler, int]] = []  # the last one is active (tests nest them)
_active: SluiceHandler | None = None
_floor = logging.NOTSET
# What our hooks delegate to: the stdlib's methods, or whatever wrapped them before `attach`.
_next_call_handlers: Callable[[logging.Logger, logging.LogRecord], None] = logging.Logger.callHandlers
_next_is_enabled_for: Callable[[logging.Logger, int], bool] = logging.Logger.isEnabledFor


def _reaches_root(logger: logging.Logger) -> bool:
    """Whether a record handled by `logger` propagates to the root logger's handlers."""
    current = logger
    while current.propagate and current.parent is not None:
        current = current.parent
    return current.parent is None


def _inherits_root_level(logger: logging.Logger) -> bool:
    """Whether `logger`'s level comes from the root and its records reach the root."""
    current = logger
    while current.parent is not None:
        if current.level or not current.propagate:
            return False
        current = current.parent
    return True


def _call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
    bridge = _active
    if bridge is None:
        _next_call_handlers(self, record)
        return
    levelno = record.levelno
    try:
        # A record below the app's own level exists only because the bridge asked for it.
        if not (_floor and levelno < logging.root.level and levelno < self.getEffectiveLevel()):
            _next_call_handlers(self, record)
    finally:
        if levelno >= bridge.level and _reaches_root(self):
            bridge.handle(record)


def ships(record: logging.LogRecord) -> bool:
    """Whether the active bridge ships `record` (its level, not internal, and it reaches the
    root logger from the logger that made it). `sluice run` asks, to ship such a record once."""
    bridge = _active
    if bridge is None or record.levelno < bridge.level or record.name.startswith(INTERNAL_PREFIXES):
        return False
    logger = logging.root if record.name == "root" else logging.getLogger(record.name)
    return _reaches_root(logger)


def _is_enabled_for(self: logging.Logger, level: int) -> bool:
    if self.disabled:
        return False
    cache: dict[int, bool] = self._cache  # type: ignore[attr-defined]
    try:
        return cache[level]
    except KeyError:
        enabled = _next_is_enabled_for(self, level)
        if (not enabled and _floor and level >= _floor and self.manager.disable < level
                and _active is not None and not self.name.startswith(INTERNAL_PREFIXES)
                and _inherits_root_level(self)):
            # Cached where the stdlib caches its answer, so any setLevel() clears it too.
            enabled = cache[level] = True
        return enabled


def attach(handler: SluiceHandler, level: int = logging.NOTSET) -> None:
    """Ship every record that reaches the root logger through `handler`, without being a handler.

    `level` (the bridge's floor) makes loggers that inherit the root's level create records from
    that level on even when the root is stricter; the app's handlers do not see those.
    """
    global _active, _floor, _next_call_handlers, _next_is_enabled_for  # noqa: PLW0603 - one per process
    _attached.append((handler, level))
    _active, _floor = handler, level
    if logging.Logger.callHandlers is not _call_handlers:
        _next_call_handlers = logging.Logger.callHandlers
        logging.Logger.callHandlers = _call_handlers  # type: ignore[method-assign]
    if logging.Logger.isEnabledFor is not _is_enabled_for:
        _next_is_enabled_for = logging.Logger.isEnabledFor
        logging.Logger.isEnabledFor = _is_enabled_for  # type: ignore[method-assign]
    _clear_level_caches()


def detach(handler: SluiceHandler) -> None:
    """Undo `attach`; the stdlib methods come back unless someone wrapped them after us."""
    global _active, _floor
    _attached[:] = [(h, level) for h, level in _attached if h is not handler]
    _active, _floor = _attached[-1] if _attached else (None, logging.NOTSET)
    _clear_level_caches()
    if _attached:
        return
    # Restored only if nobody wrapped them after us; otherwise ours stay as pass-throughs.
    if logging.Logger.callHandlers is _call_handlers:
        logging.Logger.callHandlers = _next_call_handlers  # type: ignore[method-assign,assignment]
    if logging.Logger.isEnabledFor is _is_enabled_for:
        logging.Logger.isEnabledFor = _next_is_enabled_for  # type: ignore[method-assign,assignment]
    _clear_level_caches()


def _clear_level_caches() -> None:
    """Forget cached `isEnabledFor` answers, as `Logger.setLevel()` does."""
    logging.Logger.manager._clear_cache()  # type: ignore[attr-defined]
