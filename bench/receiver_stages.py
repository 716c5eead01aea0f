"""CPU per stage of the receiver's per-batch work, in-process, per 1,000 records.

    python bench/receiver_stages.py [--load pii|easy] [--requests 30] [--rounds 3]

Runs the receiver's own stages and file sink (built from a real config, as `sluice receiver
run` builds them) on pre-encoded 1,000-record OTLP log requests and charges the CPU time
(`time.process_time`, so other processes on a shared machine do not count) of each step to
it: decode (protobuf parse), mask, validate, route, JSON encode (the file sink's lines), and
write (grouping by file and the appends). Masking is measured on, on with the stage kept to its
walk over the decoded request (no masking on the wire, docs/design.md), and off. The best of
`--rounds` rounds is reported, as ms per 1,000 records and as a share of the total.

No gRPC here: what is left between the figures and `bench/receiver_cpu.py` is the transport.
Results are printed; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loads import LOADS

from sluice_collector.batch import Signal
from sluice_collector.encode import BatchCache, TimestampFormatter
from sluice_collector.ingest.decode import decode_request
from sluice_collector.processors.masking import SecretMasker
from sluice_collector.processors.routing import CategoryRouter
from sluice_collector.processors.validate import RecordValidator
from sluice_collector.service.config import parse_config
from sluice_collector.sinks.files.sink import RotatingFileSink
from sluice_collector.telemetry import ReceiverTelemetry

STEPS = ("decode", "mask", "validate", "route", "encode", "write")


def run(payloads: list[bytes], directory: Path, masking: bool, on_wire: bool = True) -> dict[str, float]:
    """CPU seconds per step over every payload once; `on_wire=False` keeps the masking stage
    to its walk over the decoded request (processors/wiremask.py is the other way)."""
    config = parse_config(f"files: {{directory: {str(directory)!r}}}\n"
                          f"masking: {{enabled: {'true' if masking else 'false'}}}\n")
    telemetry = ReceiverTelemetry()
    masker = SecretMasker(config.masking, telemetry)
    if not on_wire:
        masker._on_wire = False
    validator = RecordValidator()
    router = CategoryRouter(config.routing)
    sink = RotatingFileSink(config.files, telemetry)
    sink.start(background=False)
    spent = dict.fromkeys(STEPS, 0.0)
    clock = time.process_time
    try:
        for payload in payloads:
            t0 = clock()
            batch = decode_request(Signal.LOGS, payload, max_bytes=64 << 20)
            t1 = clock()
            batch = masker(batch)
            t2 = clock()
            batch = validator(batch)
            t3 = clock()
            batch = router(batch)
            t4 = clock()
            # What RotatingFileSink.consume does, in two timed halves.
            cache = BatchCache()
            ts = TimestampFormatter()
            groups: dict[str, object] = {}
            counts: dict[tuple[str, str], int] = {}
            over: dict[str, int] = {}
            sink._encode(batch, groups, counts, over, cache, ts)  # type: ignore[arg-type]
            t5 = clock()
            sink._write_groups(groups, counts, over)  # type: ignore[arg-type]
            t6 = clock()
            for step, took in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5),
                                  strict=True):
                spent[step] += took
    finally:
        sink.shutdown()
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", choices=sorted(LOADS), default="pii")
    parser.add_argument("--requests", type=int, default=30, help="1,000-record requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    args = parser.parse_args()
    payloads = LOADS[args.load](args.requests, 1000)
    records = args.requests * 1000
    try:
        from sluice_collector import fastpath
        compiled = fastpath.COMPILED
    except ImportError:  # a tree from before the compiled path
        compiled = False
    print(f"in-process CPU per stage, load {args.load!r}, {args.requests} × 1,000-record requests, "
          f"best of {args.rounds}; compiled hot path: {'yes' if compiled else 'no'}")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-stages-"))
    try:
        for state, masking, on_wire in (("on", True, True), ("on, walk only", True, False),
                                        ("off", False, True)):
            best: dict[str, float] | None = None
            for round_ in range(args.rounds):
                spent = run(payloads, tmp / f"{masking}-{on_wire}-{round_}", masking, on_wire)
                if best is None or sum(spent.values()) < sum(best.values()):
                    best = spent
            assert best is not None
            total = sum(best.values())
            print(f"\nmasking {state}: {total * 1e6 / records:6.2f} ms per 1,000 records")
            for step in STEPS:
                print(f"  {step:<9} {best[step] * 1e6 / records:6.2f} ms  {best[step] / total:5.1%}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
