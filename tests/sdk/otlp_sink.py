"""A real OTLP/gRPC server for SDK tests: accepts logs, traces and metrics and keeps them in memory.

Also a helper to run a scenario script in a fresh interpreter (sluice.init is process-global) and
flatten what the server received into plain dicts that tests can assert on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

REPO = Path(__file__).resolve().parents[2]


def plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    return getattr(value, kind)


@dataclass(repr=False)
class Sink:
    logs: list[logs_service_pb2.ExportLogsServiceRequest] = field(default_factory=list)
    traces: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = field(default_factory=list)
    server: grpc.Server | None = None
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_records(self) -> list[dict[str, Any]]:
        """Every received log record as a dict: body, severity, ids (hex), attributes, scope, resource."""
        out = []
        for request in list(self.logs):
            for rl in request.resource_logs:
                resource = {kv.key: plain(kv.value) for kv in rl.resource.attributes}
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        out.append({
                            "body": plain(rec.body),
                            "severity_number": rec.severity_number,
                            "severity_text": rec.severity_text,
                            "trace_id": rec.trace_id.hex(),
                            "span_id": rec.span_id.hex(),
                            "event_name": rec.event_name,
                            "attributes": {kv.key: plain(kv.value) for kv in rec.attributes},
                            "scope": sl.scope.name,
                            "resource": resource,
                        })
        return out

    def spans(self) -> list[dict[str, Any]]:
        out = []
        for request in list(self.traces):
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append({
                            "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                            "kind": span.kind, "status": span.status.code,
                            "attributes": {kv.key: plain(kv.value) for kv in span.attributes},
                        })
        return out

    def metric_names(self) -> set[str]:
        return {m.name for r in list(self.metrics) for rm in r.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics}

    def wait_for(self, predicate: Callable[[Sink], bool], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0)


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def Export(self, request: Any, context: Any) -> Any:
        self.sink.logs.append(request)
        return logs_service_pb2.ExportLogsServiceResponse()


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def Export(self, request: Any, context: Any) -> Any:
        self.sink.traces.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def Export(self, request: Any, context: Any) -> Any:
        self.sink.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def start_sink(port: int = 0) -> Sink:
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(sink), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(sink), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(sink), server)
    sink.port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    sink.server = server
    return sink


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_script(code: str, *, env: dict[str, str] | None = None, timeout_s: float = 30.0,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter with a clean OTEL_/SLUICE_ environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SLUICE_"))}
    # Inherited entries stay last (a faked-date run puts its time.sleep shim there).
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "sdk"), str(REPO),
                                                       os.environ.get("PYTHONPATH")]))
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=base, capture_output=True, text=True,
        timeout=timeout_s, cwd=cwd, check=False,
    )


__all__ = ["REPO", "Sink", "free_port", "plain", "run_script", "start_sink"]
