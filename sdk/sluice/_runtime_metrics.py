"""Process runtime metrics and the SDK's own health, as observable instruments.

With `opentelemetry-instrumentation-system-metrics` installed we use it (process-level subset only:
host-wide metrics belong to the host's agent, not to every app on it); otherwise a small built-in
set covers CPU time, RSS, GC and threads. The SDK health gauges are always on: a growing queue or
a rising drop count is how an operator learns the pipeline is in trouble.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sluice import _health

if TYPE_CHECKING:
    from sluice._runtime import Sluice

__all__ = ["start_runtime_metrics"]

_PROCESS_CONFIG: dict[str, list[str] | None] = {
    "process.cpu.time": ["user", "system"],
    "process.cpu.utilization": ["user", "system"],
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.thread.count": None,
    "process.open_file_descriptor.count": None,
    "process.context_switches": ["involuntary", "voluntary"],
    "cpython.gc.collections": None,
}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _builtin(meter: Meter) -> None:
    def cpu(options: CallbackOptions) -> Iterable[Observation]:
        times = os.times()
        return [Observation(times.user, {"cpu.mode": "user"}),
                Observation(times.system, {"cpu.mode": "system"})]

    def rss(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(_rss_bytes())]

    def threads(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(threading.active_count())]

    def collections(options: CallbackOptions) -> Iterable[Observation]:
        stats = enumerate(gc.get_stats())
        return [Observation(s["collections"], {"cpython.gc.generation": g}) for g, s in stats]

    meter.create_observable_counter("process.cpu.time", [cpu], unit="s", description="CPU time used")
    meter.create_observable_up_down_counter("process.memory.usage", [rss], unit="By",
                                            description="Resident memory")
    meter.create_observable_up_down_counter("process.thread.count", [threads], unit="{thread}")
    meter.create_observable_counter("cpython.gc.collections", [collections], unit="{collection}")


def _health_instruments(meter: Meter, handle: Sluice) -> None:
    def queue_depth(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(handle.shipper.queue_depth if handle.shipper else 0)]

    def counted(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, {"sluice.event": name}) for name, value in list(_health.counters.items())]

    def spill_files(options: CallbackOptions) -> Iterable[Observation]:
        spill = handle.shipper.spill if handle.shipper else None
        return [Observation(len(spill) if spill is not None else 0)]

    meter.create_observable_gauge("sluice.logs.queue_depth", [queue_depth], unit="{record}",
                                  description="Log records waiting to be shipped")
    meter.create_observable_counter("sluice.sdk.events", [counted], unit="{event}",
                                    description="SDK health counters: exported, dropped, spilled, errors")
    meter.create_observable_gauge("sluice.spill.files", [spill_files], unit="{file}",
                                  description="Spill files waiting for the receiver")


def start_runtime_metrics(handle: Sluice) -> str:
    """Register runtime and health instruments; returns which runtime source is in use."""
    meter = handle.meter_provider.get_meter("sluice.runtime")
    _health_instruments(meter, handle)
    try:
        from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
    except ImportError:
        _builtin(meter)
        return "builtin"
    try:
        SystemMetricsInstrumentor(config=_PROCESS_CONFIG).instrument(meter_provider=handle.meter_provider)
        return "system_metrics"
    except Exception as exc:
        _health.report_once("system_metrics", "system-metrics instrumentation failed; using built-ins", exc)
        _builtin(meter)
        return "builtin"
