"""`init()` and `shutdown()`: the only place that builds OpenTelemetry SDK providers.

Lifecycle rules this module keeps:

- one set of providers per process; a second `init()` warns and returns the first handle;
- the SDK's own atexit hooks are off (`shutdown_on_exit=False`): ours flushes everything on a
  daemon thread and gives up after `exit_timeout_s`, so a dead receiver can never hang an exit;
- after `os.fork()` the child swaps every exporter and the log shipper's connection for fresh ones
  (gRPC channels must not cross a fork) without the app registering anything.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import os
import platform
import socket
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

from opentelemetry import metrics, propagate, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sluice import _health
from sluice._config import Settings, resolve
from sluice._context import CorrelationLogProcessor, CorrelationSpanProcessor
from sluice._exportlog import ExporterLogFilter
from sluice._exportlog import attach as attach_exporter_log_filter
from sluice._logbridge import (
    OtelLogSink,
    SluiceHandler,
    attach,
    detach,
    install_record_factory,
    uninstall_record_factory,
)
from sluice._shipper import GrpcTransport, HttpTransport, LogShipper
from sluice._spill import SpillQueue

__all__ = ["Sluice", "build_log_shipper", "current", "init", "shutdown"]

P = ParamSpec("P")
R = TypeVar("R")
_lock = threading.RLock()
_handle: Sluice | None = None
_SDK_VERSION = "0.1.0.dev0"
_DELTA = {
    Counter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
    Histogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
    ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableGauge: AggregationTemporality.CUMULATIVE,
}


def _at_fork_in_child(callback: Callable[[], None]) -> None:
    """Register a bound method for the child side of fork without keeping its object alive."""
    target = getattr(callback, "__self__", None)
    if target is None:
        os.register_at_fork(after_in_child=callback)
        return
    weak = weakref.WeakMethod(callback)

    def call() -> None:
        method = weak()
        if method is not None:
            method()

    os.register_at_fork(after_in_child=call)


# -- fork-safe exporter wrappers -----------------------------------------------------------------


class ForkSafeSpanExporter(SpanExporter):
    """Delegates to an exporter built by `factory`, and builds a new one in a forked child."""

    def __init__(self, factory: Callable[[], SpanExporter]) -> None:
        self._factory = factory
        self._inner = factory()
        _at_fork_in_child(self._renew)

    def _renew(self) -> None:
        self._inner = self._factory()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export(spans)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class ForkSafeLogExporter(LogRecordExporter):
    """Same as `ForkSafeSpanExporter`, for records emitted through the OTel Logs API."""

    def __init__(self, factory: Callable[[], LogRecordExporter]) -> None:
        self._factory = factory
        self._inner = factory()
        _at_fork_in_child(self._renew)

    def _renew(self) -> None:
        self._inner = self._factory()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return self._inner.export(batch)

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class ForkSafeMetricExporter(MetricExporter):
    """Same again for metrics; temporality and aggregation preferences are taken from the first inner."""

    def __init__(self, factory: Callable[[], MetricExporter]) -> None:
        self._factory = factory
        self._inner = factory()
        super().__init__(
            preferred_temporality=self._inner._preferred_temporality,
            preferred_aggregation=self._inner._preferred_aggregation,
        )
        _at_fork_in_child(self._renew)

    def _renew(self) -> None:
        self._inner = self._factory()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class FanoutSpanProcessor(SpanProcessor):
    """A span processor whose children can be added and removed later (e.g. by `testing.capture`)."""

    def __init__(self) -> None:
        self.processors: list[SpanProcessor] = []

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        for p in list(self.processors):
            p.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for p in list(self.processors):
            p.on_end(span)

    def shutdown(self) -> None:
        for p in list(self.processors):
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in list(self.processors))


class FanoutLogProcessor(LogRecordProcessor):
    """The logs counterpart of `FanoutSpanProcessor`, for API-emitted records."""

    def __init__(self) -> None:
        self.processors: list[LogRecordProcessor] = []

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        for p in list(self.processors):
            p.on_emit(log_record)

    def shutdown(self) -> None:
        for p in list(self.processors):
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in list(self.processors))


# -- the handle ----------------------------------------------------------------------------------


def build_resource(settings: Settings) -> Resource:
    """Service identity first, then host and process facts, then the user's own attributes on top."""
    attrs: dict[str, Any] = {
        "service.name": settings.service_name,
        "deployment.environment": settings.environment,
        "deployment.environment.name": settings.environment,
        "host.name": socket.gethostname(),
        "host.arch": platform.machine(),
        "os.type": sys.platform,
        "process.pid": os.getpid(),
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": platform.python_version(),
        "process.executable.path": sys.executable,
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
        "telemetry.distro.name": "sluice",
        "telemetry.distro.version": _SDK_VERSION,
    }
    if settings.service_version:
        attrs["service.version"] = settings.service_version
    attrs.update(settings.resource_attributes)
    attrs["service.name"] = settings.service_name
    # Resource.create adds telemetry.sdk.version and honours OTEL_RESOURCE_ATTRIBUTES; ours win.
    return Resource.create(attrs)


def build_log_shipper(
    settings: Settings, resource_attributes: Mapping[str, Any], *, spill_all: bool = False
) -> LogShipper:
    """The OTLP log shipper `settings` describe (endpoint, protocol, headers, spill, batching,
    scrub); shared by `init()` and `sluice run`'s output capture, so both follow one set of rules."""
    transport: GrpcTransport | HttpTransport
    if settings.protocol == "grpc":
        transport = GrpcTransport(settings.endpoint, insecure=settings.insecure, headers=settings.headers)
    else:
        transport = HttpTransport(settings.endpoint, headers=settings.headers)
    return LogShipper(
        transport, resource_attributes,
        spill=SpillQueue(settings.spill_dir, settings.spill_max_bytes) if settings.spill_dir else None,
        max_queue_size=settings.max_queue_size, max_batch_size=settings.max_batch_size,
        schedule_delay_s=settings.schedule_delay_s, export_timeout_s=settings.export_timeout_s,
        scope_version=_SDK_VERSION,
        scrub=_scrubber() if settings.scrub else None,
        spill_all=spill_all,
    )


class Sluice:
    """What `init()` returns: the providers, the log bridge, and flush/shutdown for them all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.resource = build_resource(settings)
        self._shut_down = False
        self.span_fanout = FanoutSpanProcessor()
        self.log_fanout = FanoutLogProcessor()
        self.capture_reader = InMemoryMetricReader(preferred_temporality=_DELTA)  # type: ignore[arg-type]
        self.shipper: LogShipper | None = None

        sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        self.tracer_provider = TracerProvider(resource=self.resource, sampler=sampler, shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(CorrelationSpanProcessor())
        self.tracer_provider.add_span_processor(self.span_fanout)

        readers: list[MetricReader] = [self.capture_reader]
        self.logger_provider = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(CorrelationLogProcessor())
        self.logger_provider.add_log_record_processor(self.log_fanout)

        if settings.exporter == "otlp":
            span_exporter, log_exporter, metric_exporter = self._otlp_factories()
            self.span_fanout.processors.append(BatchSpanProcessor(
                ForkSafeSpanExporter(span_exporter), max_queue_size=settings.max_queue_size,
                schedule_delay_millis=settings.schedule_delay_s * 1000,
                max_export_batch_size=settings.max_batch_size,
            ))
            self.log_fanout.processors.append(BatchLogRecordProcessor(
                ForkSafeLogExporter(log_exporter), schedule_delay_millis=settings.schedule_delay_s * 1000,
            ))
            readers.append(PeriodicExportingMetricReader(
                ForkSafeMetricExporter(metric_exporter),
                export_interval_millis=settings.metric_interval_s * 1000,
                export_timeout_millis=settings.export_timeout_s * 1000,
            ))
            self.shipper = build_log_shipper(settings, dict(self.resource.attributes))
        self.log_handler = SluiceHandler(self.shipper, level=settings.log_level)
        self.exporter_log_filter = ExporterLogFilter(settings.endpoint, settings.protocol)

        if settings.trace_url:
            self.span_fanout.processors.append(TraceLinkPrinter(settings.trace_url))
        if settings.console:
            self.span_fanout.processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
            console_logs = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
            console_logs.add_log_record_processor(SimpleLogRecordProcessor(ConsoleLogRecordExporter()))
            self.log_handler.sinks.append(OtelLogSink(console_logs))
            readers.append(PeriodicExportingMetricReader(
                ConsoleMetricExporter(), export_interval_millis=settings.metric_interval_s * 1000))
        self.meter_provider = MeterProvider(
            resource=self.resource, metric_readers=readers, shutdown_on_exit=False)

    def _otlp_factories(self) -> tuple[
        Callable[[], SpanExporter], Callable[[], LogRecordExporter], Callable[[], MetricExporter]
    ]:
        s = self.settings
        headers = dict(s.headers) or None
        timeout = s.export_timeout_s
        if s.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            def grpc_span() -> SpanExporter:
                return OTLPSpanExporter(
                    endpoint=s.endpoint, insecure=s.insecure, headers=headers, timeout=timeout)

            def grpc_log() -> LogRecordExporter:
                return OTLPLogExporter(
                    endpoint=s.endpoint, insecure=s.insecure, headers=headers, timeout=timeout)

            def grpc_metric() -> MetricExporter:
                return OTLPMetricExporter(endpoint=s.endpoint, insecure=s.insecure, headers=headers,
                                          timeout=timeout, preferred_temporality=_DELTA)  # type: ignore[arg-type]

            return grpc_span, grpc_log, grpc_metric

        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

        base = s.endpoint.rstrip("/")

        def http_span() -> SpanExporter:
            return HttpSpanExporter(endpoint=f"{base}/v1/traces", headers=headers, timeout=timeout)

        def http_log() -> LogRecordExporter:
            return HttpLogExporter(endpoint=f"{base}/v1/logs", headers=headers, timeout=timeout)

        def http_metric() -> MetricExporter:
            return HttpMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers, timeout=timeout,
                                      preferred_temporality=_DELTA)  # type: ignore[arg-type]

        return http_span, http_log, http_metric

    # -- wiring into the process ----------------------------------------------------------------

    def install(self) -> None:
        """Make the providers global, set W3C propagation and attach the logging bridge."""
        trace.set_tracer_provider(self.tracer_provider)
        metrics.set_meter_provider(self.meter_provider)
        set_logger_provider(self.logger_provider)
        propagate.set_global_textmap(
            CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))
        install_record_factory()
        if self.settings.exporter == "otlp":
            attach_exporter_log_filter(self.exporter_log_filter)
        if self.settings.capture_logs:
            attach(self.log_handler, self.settings.log_level)

    def uninstall(self) -> None:
        detach(self.log_handler)
        uninstall_record_factory()

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Push out everything buffered in all signals; False if anything did not make it in time."""
        try:
            ok = self.shipper.force_flush(timeout_s) if self.shipper is not None else True
            ok = self.tracer_provider.force_flush(int(timeout_s * 1000)) and ok
            ok = bool(self.logger_provider.force_flush(int(timeout_s * 1000))) and ok
            return bool(self.meter_provider.force_flush(timeout_s * 1000)) and ok
        except Exception as exc:
            _health.report_once("flush", "flush failed", exc)
            return False

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Flush and stop everything within `timeout_s` (default `exit_timeout_s`); idempotent."""
        if self._shut_down:
            return True
        self._shut_down = True
        timeout_s = self.settings.exit_timeout_s if timeout_s is None else timeout_s
        shipper = self.shipper
        steps: list[tuple[str, Callable[[], object]]] = [
            ("logs", lambda: shipper.shutdown(timeout_s) if shipper is not None else True),
            ("traces", self.tracer_provider.shutdown),
            ("api-logs", self.logger_provider.shutdown),
            ("metrics", lambda: self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)),
        ]
        results: dict[str, bool] = {}

        def run(name: str, step: Callable[[], object]) -> None:
            try:
                results[name] = step() is not False
            except Exception as exc:
                _health.report_once("shutdown", f"shutting down {name} failed", exc)
                results[name] = False

        # One daemon thread per signal, all sharing one deadline: a receiver that never answers
        # cannot hold the process, and slow logs do not eat the time the spans need.
        threads = [threading.Thread(target=run, args=step, name=f"sluice-shutdown-{step[0]}", daemon=True)
                   for step in steps]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout_s + 0.5
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.uninstall()
        return len(results) == len(steps) and all(results.values())


# -- module-level API ----------------------------------------------------------------------------


def current() -> Sluice | None:
    """The handle of this process, or None before `init()`."""
    return _handle


def _options_checked(function: Callable[P, R]) -> Callable[P, R]:
    """Turn an unknown keyword argument into sluice's `ConfigError` (with "did you mean ...?").

    Type checkers and IDEs see `init`'s real, typed signature (and flag a misspelt option before
    the program runs); at run time Python's own `TypeError` would not say which option was
    meant, so unknown names go to `resolve`, which reports them with every other problem at once.
    """
    known = frozenset(inspect.signature(function).parameters)

    @functools.wraps(function)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        if not known.issuperset(kwargs):
            resolve({name: value for name, value in kwargs.items() if value is not None})
        return function(*args, **kwargs)

    return checked


@_options_checked
def init(
    service_name: str | None = None,
    endpoint: str | None = None,
    *,
    protocol: Literal["grpc", "http/protobuf"] | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    resource_attributes: Mapping[str, str] | str | None = None,
    headers: Mapping[str, str] | str | None = None,
    insecure: bool | None = None,
    exporter: Literal["otlp", "none"] | None = None,
    console: bool | None = None,
    sample_ratio: float | None = None,
    capture_logs: bool | None = None,
    log_level: int | str | None = None,
    metric_interval_s: float | None = None,
    export_timeout_s: float | None = None,
    exit_timeout_s: float | None = None,
    schedule_delay_s: float | None = None,
    max_queue_size: int | None = None,
    max_batch_size: int | None = None,
    spill_dir: str | os.PathLike[str] | None = None,
    spill_max_bytes: int | None = None,
    runtime_metrics: bool | None = None,
    instrument: bool | str | Sequence[str] | None = None,
    disabled_instrumentations: str | Sequence[str] | None = None,
    scrub: bool | None = None,
    trace_url: str | None = None,
) -> Sluice:
    """Set up traces, metrics and logs for this process, exporting over OTLP.

    Every option may be left out (`None`): it then comes from its `SLUICE_*` variable, else from
    the standard `OTEL_*` one, else from the default; an argument always wins. docs/sdk.md has
    the table with variables, defaults and accepted values.

    Args:
        service_name: `service.name` of every signal (`OTEL_SERVICE_NAME`); default `unknown_service`.
        endpoint: the receiver or collector, `http(s)://host:port` (`OTEL_EXPORTER_OTLP_ENDPOINT`);
            default `http://localhost:4317` (`:4318` for HTTP).
        protocol: `"grpc"` (default) or `"http/protobuf"`.
        service_version: `service.version`.
        environment: `deployment.environment(.name)`; default `development`.
        resource_attributes: extra resource attributes, a dict or `"k=v,k2=v2"`.
        headers: headers on every export (e.g. an auth token), a dict or `"k=v,k2=v2"`.
        insecure: plain-text gRPC; default true for `http://`, false for `https://`.
        exporter: `"otlp"` (default) or `"none"` (nothing leaves the process).
        console: also print spans, logs and metrics to stdout (development).
        sample_ratio: head sampling of traces, 0.0-1.0 (parent-based); never applies to logs.
        capture_logs: ship stdlib `logging` records (default true).
        log_level: the lowest level shipped from loggers that leave their level to the root
            logger (default INFO); the console is not affected.
        metric_interval_s: seconds between metric exports (default 60).
        export_timeout_s: seconds one export may take, retries included (default 10).
        exit_timeout_s: seconds `shutdown()` and interpreter exit may spend flushing (default 3).
        schedule_delay_s: seconds between background exports (default 1).
        max_queue_size: records buffered before ordinary ones are dropped and counted (default 8192).
        max_batch_size: records per export, at most `max_queue_size` (default 512).
        spill_dir: directory for undeliverable audit/security records.
        spill_max_bytes: bound of `spill_dir` (default 64 MiB).
        runtime_metrics: CPU, memory, GC, threads and SDK health metrics (default true).
        instrument: enable installed OpenTelemetry instrumentors: true (default), false, or names.
        disabled_instrumentations: instrumentors never to enable (wins over `instrument`).
        scrub: mask secrets and personal data in log records before they leave the app.
        trace_url: a URL with `{trace_id}`; a link is printed to stderr when a trace's root span ends.

    Returns the process's `Sluice` handle. Raises `ConfigError` for an unknown option or a bad
    argument or variable, naming each and what is accepted, before anything is installed. A
    second call warns and returns the first handle unchanged, so libraries may call it defensively.
    """
    # First statement on purpose: `locals()` holds exactly the parameters here.
    arguments: dict[str, Any] = {name: value for name, value in locals().items() if value is not None}
    global _handle  # noqa: PLW0603 - the one process-wide handle is the point
    with _lock:
        if _handle is not None:
            # OTel's global providers can be set once per process, so one init per process it is.
            warnings.warn("sluice.init() called again; returning the existing handle (arguments ignored)",
                          RuntimeWarning, stacklevel=3)
            return _handle
        settings = resolve(arguments)
        handle = Sluice(settings)
        handle.install()
        _handle = handle
        _install_exit_hook()
        _after_init(handle)
        return handle


def _after_init(handle: Sluice) -> None:
    """Optional features that must not stop `init()` when they fail."""
    if handle.settings.runtime_metrics:
        try:
            from sluice._runtime_metrics import start_runtime_metrics

            start_runtime_metrics(handle)
        except Exception as exc:
            _health.report_once("runtime_metrics", "runtime metrics unavailable", exc)
    if handle.settings.instrument:
        try:
            from sluice._autoinstrument import instrument_all

            instrument_all(handle.settings.instrument, handle.settings.disabled_instrumentations)
        except Exception as exc:
            _health.report_once("instrument", "auto-instrumentation failed", exc)


def shutdown(timeout_s: float | None = None) -> bool:
    """Flush and stop everything; safe before `init()` and when called twice."""
    with _lock:
        handle = _handle
    if handle is None:
        return True
    return handle.shutdown(timeout_s)


_exit_hook_installed = False


def _install_exit_hook() -> None:
    global _exit_hook_installed  # noqa: PLW0603
    if not _exit_hook_installed:
        atexit.register(_at_exit)
        _exit_hook_installed = True


def _at_exit() -> None:
    with contextlib.suppress(Exception):  # the interpreter is leaving; never turn that into a traceback
        shutdown()


def settings_summary(handle: Sluice) -> Mapping[str, Any]:
    """The effective settings as a plain dict (for `sluice run --print-config` and debugging)."""
    return dict(vars(handle.settings))


def _scrubber() -> Any:
    # Imported only when asked for: the engine compiles its RE2 programs at construction.
    from sluice._scrub import LogScrubber

    return LogScrubber()


class TraceLinkPrinter(SpanProcessor):
    """Prints a clickable link (Jaeger, Grafana) to stderr when a trace's root span ends, so a
    developer goes from the terminal to the trace in one click (`trace_url` option)."""

    def __init__(self, template: str) -> None:
        self.template = template

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if span.parent is not None or span.context is None:
                return
            url = self.template.replace("{trace_id}", format(span.context.trace_id, "032x"))
            print(f"sluice: trace {span.name!r}: {url}", file=sys.stderr, flush=True)
        except Exception as exc:  # never into app code
            _health.report_once("trace_link", "could not print a trace link", exc)
