"""CPU time per pipeline stage, in process: decode, mask, validate, route, files sink.

    python bench/receiver_stages.py [--load pii] [--requests 30] [--rounds 3] [--records 1000]

`bench/receiver_cpu.py` measures the whole receiver (gRPC included) at a paced rate, which on
a shared, loaded machine mixes in scheduling noise. This one runs the receiver's own stages
and its file sink on the same pre-encoded requests (`bench/loads.py`), on one thread, and adds
up `time.process_time` per stage over every request: repeatable enough to choose between two
implementations. The masking share printed is mask / (decode + mask + validate + route +
files), the in-process counterpart of receiver_cpu.py's 1 − CPU(no-masking)/CPU(default).

Results are figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loads import LOADS

from sluice_collector.batch import Signal
from sluice_collector.ingest.decode import decode_request
from sluice_collector.processors.masking import SecretMasker
from sluice_collector.processors.routing import CategoryRouter
from sluice_collector.processors.validate import RecordValidator
from sluice_collector.service.config import parse_config
from sluice_collector.service.receiver import build_sinks
from sluice_collector.telemetry import ReceiverTelemetry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", choices=sorted(LOADS), default="pii")
    parser.add_argument("--requests", type=int, default=30, help="distinct requests (default 30)")
    parser.add_argument("--records", type=int, default=1000, help="records per request")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the requests; best kept")
    parser.add_argument("--only-mask", action="store_true", help="time the masking stage alone")
    args = parser.parse_args()
    payloads = LOADS[args.load](args.requests, args.records)
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-stages-"))
    try:
        config = parse_config(yaml.safe_dump({
            "files": {"directory": str(tmp / "logs")}, "telemetry": {"listen": ""}}), env={})
        telemetry = ReceiverTelemetry()
        masker = SecretMasker(config.masking, telemetry)
        validator = RecordValidator()
        router = CategoryRouter(config.routing)
        sinks = [] if args.only_mask else build_sinks(config, telemetry)[:1]  # the file sink
        for sink in sinks:
            sink.start()
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            spent: dict[str, float] = defaultdict(float)
            clock = time.process_time
            for payload in payloads:
                t0 = clock()
                batch = decode_request(Signal.LOGS, payload, max_bytes=64 << 20)
                t1 = clock()
                batch = masker(batch)
                t2 = clock()
                spent["decode"] += t1 - t0
                spent["mask"] += t2 - t1
                if args.only_mask:
                    continue
                batch = validator(batch)
                t3 = clock()
                batch = router(batch)
                t4 = clock()
                for sink in sinks:
                    sink.consume(batch)
                t5 = clock()
                spent["validate"] += t3 - t2
                spent["route"] += t4 - t3
                spent["files"] += t5 - t4
            total = sum(spent.values())
            if not best or total < sum(best.values()):
                best = dict(spent)
        for sink in sinks:
            sink.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per = 1000 / (args.requests * args.records)  # ms per 1,000 records (from seconds)
    total = sum(best.values())
    print(f"stage CPU per 1,000 records, load {args.load!r}, {args.requests} requests of "
          f"{args.records} records, best of {args.rounds} (time.process_time)")
    for name, seconds in best.items():
        print(f"  {name:<9} {seconds * 1000 * per:8.2f} ms  ({seconds / total:5.1%})")
    print(f"  {'total':<9} {total * 1000 * per:8.2f} ms")
    if not args.only_mask:
        print(f"  masking share of in-process CPU: {best['mask'] / total:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
