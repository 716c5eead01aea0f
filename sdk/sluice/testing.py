"""The in-memory twin of sluice's exporters, for tests of code that emits telemetry.

    from sluice.testing import capture

    def test_password_change_is_audited():
        with capture() as tel:
            change_password(user, "hunter2")
        [record] = tel.logs_in("audit")
        assert record.log_record.attributes["audit.action"] == "password.change"
        assert "hunter2" not in tel.text()

`capture()` uses the official OpenTelemetry in-memory exporters, fed by the same bridge the wire
path uses, so what a test sees is what would have been shipped. If `sluice.init()` has not run,
`capture()` initialises sluice with `exporter="none"` (nothing leaves the process).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import Metric
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sluice import _runtime
from sluice._logbridge import OtelLogSink

__all__ = ["Captured", "capture"]


@dataclass
class Captured:
    """Telemetry emitted inside one `capture()` block."""

    span_exporter: InMemorySpanExporter
    log_exporter: InMemoryLogRecordExporter
    handle: _runtime.Sluice
    _metrics: list[Metric] = field(default_factory=list)

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.span_exporter.get_finished_spans())

    @property
    def logs(self) -> list[ReadableLogRecord]:
        return list(self.log_exporter.get_finished_logs())

    def logs_in(self, category: str) -> list[ReadableLogRecord]:
        """Records whose `log.category` is `category`."""
        return [r for r in self.logs if (r.log_record.attributes or {}).get("log.category") == category]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called `name` (AssertionError if none or several)."""
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans]}"
        return found[0]

    def metrics(self) -> list[Metric]:
        """Metrics recorded since the block started (counters and histograms as deltas, collected now)."""
        data = self.handle.capture_reader.get_metrics_data()
        if data is not None:
            for rm in data.resource_metrics:
                for sm in rm.scope_metrics:
                    self._metrics.extend(sm.metrics)
        return list(self._metrics)

    def metric_points(self, name: str) -> list[Any]:
        """Every data point of metric `name` collected so far."""
        return [p for m in self.metrics() if m.name == name for p in m.data.data_points]

    def text(self) -> str:
        """Everything captured as one string: the easy way to assert that a secret never leaked."""
        parts = [r.to_json(indent=None) for r in self.logs]
        parts += [s.to_json(indent=None) for s in self.spans]
        parts += [json.dumps(m.to_json(indent=None)) for m in self._metrics]
        return "\n".join(parts)


@contextmanager
def capture() -> Iterator[Captured]:
    """Collect the logs, spans and metrics emitted inside the block, in memory."""
    handle = _runtime.current()
    if handle is None:
        handle = _runtime.init(
            service_name="sluice-test", exporter="none", runtime_metrics=False, instrument=False
        )
    span_exporter = InMemorySpanExporter()
    span_processor = SimpleSpanProcessor(span_exporter)
    log_exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    log_processor = SimpleLogRecordProcessor(log_exporter)
    provider = LoggerProvider(resource=handle.resource, shutdown_on_exit=False)
    provider.add_log_record_processor(log_processor)
    sink = OtelLogSink(provider)

    handle.capture_reader.get_metrics_data()  # drop deltas from before the block
    handle.span_fanout.processors.append(span_processor)
    handle.log_fanout.processors.append(log_processor)
    handle.log_handler.sinks.append(sink)
    captured = Captured(span_exporter=span_exporter, log_exporter=log_exporter, handle=handle)
    try:
        yield captured
    finally:
        captured.metrics()
        handle.log_handler.sinks.remove(sink)
        handle.log_fanout.processors.remove(log_processor)
        handle.span_fanout.processors.remove(span_processor)
