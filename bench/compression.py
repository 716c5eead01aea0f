"""CPU and ratio of gzip levels on the receiver's own JSON lines, per 1,000 records.

    python bench/compression.py [--load pii|easy] [--requests 30]

Every byte the file sink writes is compressed once when its file rotates, so the gzip level
(`files.rotation.compress_level`) is a cost per record, paid on the receiver's machine. This
writes the load's records through the receiver's stages and file sink (as
`bench/receiver_stages.py` does), then compresses what was written at levels 1, 3, 6 and 9 and
prints CPU (`time.process_time`) per MB and per 1,000 records, and the ratio. The peer is
level 6, gzip's own default. Nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loads import LOADS
from receiver_stages import run

LEVELS = (1, 3, 6, 9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", choices=sorted(LOADS), default="pii")
    parser.add_argument("--requests", type=int, default=30, help="1,000-record requests")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-gzip-"))
    try:
        run(LOADS[args.load](args.requests, 1000), tmp, masking=True)
        data = b"".join(path.read_bytes() for path in sorted(tmp.glob("*.log")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    records = args.requests * 1000
    mb = len(data) / 1e6
    print(f"gzip of the file sink's JSON lines, load {args.load!r}: {records:,} records, "
          f"{len(data):,} bytes ({len(data) / records:.0f} per record)")
    costs: dict[int, float] = {}
    for level in LEVELS:
        best = min(_compress_seconds(data, level) for _ in range(3))
        size = len(zlib.compress(data, level))
        costs[level] = best
        print(f"  level {level}: {best * 1e3 / mb:5.1f} ms CPU per MB, "
              f"{best * 1e6 / records:5.2f} ms per 1,000 records, ratio {len(data) / size:5.2f}x")
    print("against level 6 (gzip's default): " + ", ".join(
        f"level {level} {costs[level] / costs[6]:.2f}x CPU" for level in LEVELS if level != 6))
    return 0


def _compress_seconds(data: bytes, level: int) -> float:
    started = time.process_time()
    zlib.compress(data, level)
    return time.process_time() - started


if __name__ == "__main__":
    raise SystemExit(main())
