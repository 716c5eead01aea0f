"""A real process that writes one audit batch through the real file sink and SIGKILLs itself at
a chosen byte of that batch's write — the crash a power cut or OOM kill deals, at a point picked
by the test rather than by luck.

    python -m tests.collector.audit_crash_writer LOGS NOW CUT BODY...

`CUT` ≥ 0: the write puts that many bytes of the batch on disk, then the process is killed.
`CUT` = -1: the whole batch is written and the process is killed before the audit head is
updated (the window between the data and the head).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from sluice_collector.batch import Batch, Signal
from sluice_collector.sinks.files.config import AuditChainConfig, FilePolicy, FilesConfig, RotationConfig
from sluice_collector.sinks.files.sink import RotatingFileSink
from sluice_collector.telemetry import ReceiverTelemetry
from tests.otlp_builders import log_record, logs_request

ROTATION = RotationConfig(max_bytes=10**9, interval="daily", compress=False)


def main(argv: list[str]) -> None:
    logs, now, cut, bodies = Path(argv[0]), float(argv[1]), int(argv[2]), argv[3:]

    def write(fd: int, data: bytes | memoryview) -> int:
        written = os.write(fd, data if cut < 0 else data[:cut])
        os.kill(os.getpid(), signal.SIGKILL)
        return written  # not reached

    config = FilesConfig(directory=logs, rotation=ROTATION, audit_chain=AuditChainConfig())
    cats = {name: FilePolicy(name=name, rotation=ROTATION) for name in ("app", "audit")}
    sink = RotatingFileSink(replace(config, categories=cats), ReceiverTelemetry(), clock=lambda: now,
                            disk_usage=lambda _p: (10, 100), write=write)
    sink.start(background=False)
    request = logs_request(*(log_record(b, attributes={"actor": "u1"}) for b in bodies))
    batch = Batch(Signal.LOGS, request, time.time_ns())
    batch.routes = {"audit": batch.records()}
    sink.consume(batch)
    raise SystemExit("the write was expected to kill this process")


if __name__ == "__main__":
    main(sys.argv[1:])
