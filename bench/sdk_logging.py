"""Per-call cost of a log line: stdlib FileHandler vs OpenTelemetry's LoggingHandler vs sluice.

    python bench/sdk_logging.py [--n 20000] [--repeat 3]

All three run in the same process against the same local OTLP/gRPC sink (a tiny grpc server on
127.0.0.1 that accepts and discards, in a child process as a real receiver would be), and "per
call" includes shipping: the clock stops only
after the exporter has flushed everything to the sink. Each variant is run `--repeat` times and the
best run counts (the machine is shared; the minimum is the least noisy estimate).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent import futures
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk"))


class _DiscardLogs:
    """Accepts OTLP log exports as raw bytes and keeps them; parsing waits until it is asked for."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def export(self, request: bytes, context: object) -> bytes:
        self.payloads.append(request)
        return b""

    def records(self) -> int:
        total = 0
        for payload in self.payloads:
            request = logs_service_pb2.ExportLogsServiceRequest.FromString(payload)
            total += sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        return total


def serve_sink(conn: Connection) -> None:
    """The sink runs in its own process, like a real receiver: its CPU is not charged to the app's GIL."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    sink = _DiscardLogs()
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.logs.v1.LogsService",
        {"Export": grpc.unary_unary_rpc_method_handler(sink.export)},
    )
    server.add_generic_rpc_handlers((handler,))
    conn.send(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    while (command := conn.recv()) != "stop":
        if command == "count":
            conn.send(sink.records())
    server.stop(0)


def run(logger: logging.Logger, n: int, flush: Callable[[], None]) -> float:
    """Seconds per call, including the final flush to the sink."""
    start = time.perf_counter()
    for i in range(n):
        logger.info("order %s processed for customer %s in %d ms", i, "c-42", 17)
    flush()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    parent, child = multiprocessing.get_context("spawn").Pipe()
    sink_process = multiprocessing.get_context("spawn").Process(target=serve_sink, args=(child,), daemon=True)
    sink_process.start()
    port = parent.recv()
    endpoint = f"http://127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-"))

    # 1. stdlib FileHandler
    file_logger = logging.getLogger("bench.file")
    file_logger.propagate = False
    file_logger.setLevel(logging.INFO)
    fh = logging.FileHandler(tmp / "plain.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file_logger.addHandler(fh)

    # 2. OpenTelemetry LoggingHandler -> BatchLogRecordProcessor -> OTLPLogExporter (gRPC)
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    exporter = OTLPLogExporter(endpoint=endpoint, insecure=True)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    otel_logger = logging.getLogger("bench.otel")
    otel_logger.propagate = False
    otel_logger.setLevel(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        otel_logger.addHandler(LoggingHandler(logger_provider=provider))

    # 3. sluice: the bridge sees every record that reaches the root logger (it hooks
    #    Logger.callHandlers rather than being a root handler), so the bench logger just propagates.
    #    "sluice" has the logger at INFO; "sluice, root at WARNING" leaves the level to the root
    #    (WARNING), so the INFO lines exist only because the bridge ships from INFO by default.
    import sluice

    handle = sluice.init(service_name="bench", endpoint=endpoint, capture_logs=False, runtime_metrics=False,
                         metric_interval_s=3600, instrument=False)
    sluice_logger = logging.getLogger("bench.sluice")
    sluice_logger.setLevel(logging.INFO)
    floor_logger = logging.getLogger("bench.floor")  # NOTSET: inherits the root's WARNING
    logging.getLogger().setLevel(logging.WARNING)

    variants: dict[str, tuple[logging.Logger, Callable[[], None]]] = {
        "stdlib FileHandler": (file_logger, fh.flush),
        "OTel LoggingHandler": (otel_logger, lambda: provider.force_flush(30_000) and None),
        "sluice": (sluice_logger, lambda: handle.force_flush(30.0) and None),
        "sluice, root at WARNING": (floor_logger, lambda: handle.force_flush(30.0) and None),
    }
    from sluice._logbridge import attach, detach, install_record_factory, uninstall_record_factory

    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, (logger, flush) in variants.items():
            # The peers run on a pristine stdlib: sluice's record factory (trace ids on every record)
            # is part of sluice's cost, so it is only installed while sluice is measured.
            if name.startswith("sluice"):
                install_record_factory()
                attach(handle.log_handler, handle.settings.log_level)
            per_call = run(logger, args.n, flush)
            if name.startswith("sluice"):
                detach(handle.log_handler)
                uninstall_record_factory()
            best[name] = min(best.get(name, per_call), per_call)

    base = best["stdlib FileHandler"]
    print(f"per-call cost, best of {args.repeat} x {args.n} calls (shipping included),"
          f" python {sys.version.split()[0]},"
          f" {os.cpu_count()} cpus")
    for name, per_call in best.items():
        print(f"  {name:22s} {per_call * 1e6:7.2f} us/call   {per_call / base:5.2f}x FileHandler")
    dropped = handle.shipper.dropped if handle.shipper is not None else 0
    parent.send("count")
    print(f"  sink received {parent.recv()} records (sluice dropped {dropped};"
          f" OTel's BatchLogRecordProcessor drops beyond its 2048-record queue)")
    provider.shutdown()
    sluice.shutdown()
    parent.send("stop")
    sink_process.join(5)


if __name__ == "__main__":
    main()
