"""How long after its acknowledgement a record can be queried, at a paced rate.

    python bench/index_lag.py [--rate 10000] [--seconds 10] [--load pii]

The index follows the files off the acknowledgement path (docs/query.md), so an acknowledged
record is queryable a little later. One client sends pre-encoded 1,000-record OTLP/gRPC log
requests over one connection at `--rate` records/s to a receiver with the query API on (every
category indexed); a watcher reads the index's newest row id every 2 ms. For each request the
lag is the time from its acknowledgement until the index holds it. (A read through the query
API never sees the lag: it waits for the index first — this is how long such a wait can be.)

Prints p50 / p99 / max of the lag; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loads import LOADS
from receiver import LOGS_EXPORT, free_port, wait_port


def newest_row(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=10_000, help="records/s (default 10000)")
    parser.add_argument("--seconds", type=float, default=10, help="how long (default 10)")
    parser.add_argument("--records", type=int, default=1000, help="records per request (default 1000)")
    parser.add_argument("--load", choices=sorted(LOADS), default="pii", help="the data (default pii)")
    args = parser.parse_args()
    payloads = LOADS[args.load](20, args.records)
    tmp = Path(tempfile.mkdtemp(prefix="sluice-index-lag-"))
    port = free_port()
    config = {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
              "files": {"directory": str(tmp / "logs")}, "telemetry": {"listen": ""},
              "query": {"api_keys": {"bench": {"key": "bench-key-0123456789abcdef", "role": "admin"}}}}
    (tmp / "sluice.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "sluice_collector", "receiver", "run",
                             "--config", str(tmp / "sluice.yaml"), "--log-level", "WARNING"])
    db = tmp / "logs" / ".index" / "records.db"
    acked: list[tuple[int, float]] = []  # (rows the index must hold, when acknowledged)
    lags: list[float] = []
    done = threading.Event()

    def watch() -> None:
        pending = 0
        while not done.is_set() or pending < len(acked):
            newest, now = newest_row(db), time.monotonic()
            while pending < len(acked) and acked[pending][0] <= newest:
                lags.append(now - acked[pending][1])
                pending += 1
            time.sleep(0.002)

    try:
        wait_port(port)
        interval = args.records / args.rate
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(LOGS_EXPORT)
            for payload in payloads[:3]:  # warm up: connection, index process, first files
                export(payload, timeout=60)
            base = 3 * args.records
            while newest_row(db) < base:
                time.sleep(0.01)
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < args.seconds:
                due = started + n * interval
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())
                export(payloads[n % len(payloads)], timeout=60)
                n += 1
                acked.append((base + n * args.records, time.monotonic()))
            done.set()
            watcher.join(120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        shutil.rmtree(tmp, ignore_errors=True)
    lags.sort()
    ms = [x * 1000 for x in lags]
    print(f"index lag at {args.rate:,.0f} records/s ({args.load} load, {len(ms)} requests of "
          f"{args.records}): p50 {ms[len(ms) // 2]:.1f} ms, p99 {ms[int(len(ms) * 0.99)]:.1f} ms, "
          f"max {ms[-1]:.1f} ms (target: queryable within 1 s of its acknowledgement)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
