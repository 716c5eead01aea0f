"""The OTLP span and metric exporters' own log lines, said the way sluice says a failed export.

Logs go through sluice's shipper, which reports an unreachable receiver once, in one line with
what to check. Spans and metrics go through OpenTelemetry's exporters, which log every failed
attempt themselves — `Transient error StatusCode.UNAVAILABLE encountered while exporting
metrics to ..., retrying in 0.93s`, then `Failed to export ...`, then `Shutdown in progress,
aborting retry.` — on the root logger's console, every metric interval for as long as the
receiver is down. A filter on exactly those loggers turns their warnings and errors into
`_health.report_once`: one line per signal, naming the endpoint and the same hint the shipper
gives, the rest counted. Their DEBUG and INFO records pass unchanged.
"""

from __future__ import annotations

import logging

from sluice import _health
from sluice._shipper import _CHECK_ENDPOINT, _grpc_hint

__all__ = ["EXPORTER_LOGGERS", "ExporterLogFilter", "attach"]

# The gRPC exporters of all signals share one logger (the signal is an argument of the record);
# the HTTP ones have one each.
_GRPC_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"
_HTTP_LOGGERS = {
    "opentelemetry.exporter.otlp.proto.http.trace_exporter": "traces",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter": "metrics",
    "opentelemetry.exporter.otlp.proto.http._log_exporter": "logs",
}
EXPORTER_LOGGERS = (_GRPC_LOGGER, *_HTTP_LOGGERS)
_SIGNALS = ("traces", "metrics", "logs")
_KINDS = {"traces": "span_export", "metrics": "metric_export", "logs": "api_log_export"}
_FAILURE = ("Transient error", "Failed to export")
# Lines that only follow a failure already reported, or come from shutting down: counted.
_AFTERMATH = ("Shutdown in progress", "Exporter already shutdown")


class ExporterLogFilter(logging.Filter):
    """Attached to `EXPORTER_LOGGERS`: reports their failures once per signal, drops the lines."""

    def __init__(self, endpoint: str, protocol: str) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.transport = "gRPC" if protocol == "grpc" else "HTTP"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            self._report(record)
        except Exception:  # a record we cannot read is still not printed raw
            _health.increment("errors.exporter_log")
        return False

    def _report(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        signal = _HTTP_LOGGERS.get(record.name) or next((a for a in args if a in _SIGNALS), None)
        if signal is None or str(record.msg).startswith(_AFTERMATH):
            _health.increment("errors.exporter_log")
            return
        code = next((a for a in args if hasattr(a, "name") and hasattr(a, "value")), None)
        if record.name == _GRPC_LOGGER and code is not None:
            details = str(args[-1])
            problem = f"{code.name} ({details})"
            hint = _grpc_hint(code, details)
        elif str(record.msg).startswith("Transient error") and args:  # HTTP: the reason comes first
            problem, hint = str(args[0])[:300], _CHECK_ENDPOINT
        else:
            problem = record.getMessage().splitlines()[0][:300]
            hint = _CHECK_ENDPOINT if problem.startswith(_FAILURE) else ""
        message = f"cannot deliver {signal} to {self.endpoint} over {self.transport}: {problem}"
        exc = record.exc_info[1] if record.exc_info else None
        _health.report_once(_KINDS[signal], f"{message}; {hint}" if hint else message, exc)


def attach(log_filter: ExporterLogFilter) -> None:
    """Put `log_filter` on the exporter loggers in place of an earlier handle's.

    Never removed at shutdown: the exporters' retry threads may still log after `shutdown()` has
    given up waiting for them, and those lines are as raw as the others."""
    for name in EXPORTER_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, ExporterLogFilter)]:
            logger.removeFilter(old)
        logger.addFilter(log_filter)
