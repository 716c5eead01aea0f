"""Receiver CPU per 1,000 records at a fixed rate, against rotel measured in the same run.

    python bench/receiver_cpu.py [--rate 10000] [--seconds 20] [--load pii] [--configs default,no-masking]

Peak throughput hides what a receiver costs at the rate it really runs at. Here one client
sends pre-encoded 1,000-record OTLP/gRPC log requests over ONE connection at a paced rate
(10,000 records/s by default) for a fixed time, and the CPU time the receiver's processes used
(user + system, children included, from /proc) is divided by the records sent. rotel (a native
Rust OTel collector with its blackhole exporter) takes the same load first. The masking share is
what turning masking off saves at the same rate: 1 − CPU(no-masking) / CPU(default).

Results are ratios against rotel; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loads import LOADS
from receiver import LOGS_EXPORT, free_port, wait_port

CONFIGS: dict[str, dict[str, object]] = {
    "default": {},
    "no-masking": {"masking": {"enabled": False}},
    "no-sinks": {"masking": {"enabled": False}, "files": {"enabled": False}},
    # the default config with the query API on: every log category indexed (by the index
    # process, a child of the receiver: its CPU counts)
    "indexed": {"query": {"api_keys": {"bench": {"key": "bench-key-0123456789abcdef",
                                                  "role": "admin"}}}},
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants, now."""
    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return total


def paced(endpoint: str, pid: int, payloads: list[bytes], records: int, rate: float,
          seconds: float) -> tuple[float, int, float]:
    """Send at `rate` records/s for `seconds` on one channel; return (CPU seconds used by the
    receiver, records sent, fraction of the schedule kept)."""
    interval = records / rate
    with grpc.insecure_channel(endpoint, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = ch.unary_unary(LOGS_EXPORT)
        for payload in payloads[:3]:  # warm up: connection, caches, first file opens
            stub(payload, timeout=60)
        time.sleep(1.0)
        before = cpu_seconds(pid)
        started = time.monotonic()
        sent = late = 0
        n = 0
        while time.monotonic() - started < seconds:
            due = started + n * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > interval:
                late += 1
            stub(payloads[n % len(payloads)], timeout=60)
            sent += records
            n += 1
        time.sleep(0.5)  # let background work of the last request (gzip, index) be counted
        used = cpu_seconds(pid) - before
    return used, sent, 1 - late / max(n, 1)


def start_rotel(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    import rotel

    binary = Path(rotel.__file__).parent / "rotel-agent"
    port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [str(binary), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
         "--otlp-http-endpoint", f"127.0.0.1:{http_port}", "--exporter", "blackhole",
         "--pid-file", str(tmp / "rotel.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc, f"127.0.0.1:{port}"


def start_sluice(name: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    work = tmp / name
    work.mkdir()
    port = free_port()
    config = {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
              "files": {"directory": str(work / "logs")}, "telemetry": {"listen": ""},
              **CONFIGS[name]}
    (work / "sluice.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice_collector", "receiver", "run", "--config",
         str(work / "sluice.yaml"), "--log-level", "WARNING"],
        cwd=work, stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc, f"127.0.0.1:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=10_000, help="records per second (default 10000)")
    parser.add_argument("--seconds", type=float, default=20, help="how long to send (default 20)")
    parser.add_argument("--records", type=int, default=1000, help="records per request (default 1000)")
    parser.add_argument("--load", choices=sorted(LOADS), default="pii", help="data (default pii)")
    parser.add_argument("--configs", default="default,no-masking",
                        help=f"sluice configs, comma-separated, from: {', '.join(CONFIGS)}")
    args = parser.parse_args()
    payloads = LOADS[args.load](30, args.records)
    print(f"receiver CPU at {args.rate:,.0f} records/s for {args.seconds:g}s, load {args.load!r} "
          f"({sum(map(len, payloads)) // len(payloads):,} bytes per {args.records}-record request), "
          f"one connection, {psutil.cpu_count()} cores")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-cpu-"))
    per_1000: dict[str, float] = {}
    try:
        for name in ["rotel", *args.configs.split(",")]:
            proc, endpoint = start_rotel(tmp) if name == "rotel" else start_sluice(name, tmp)
            try:
                used, sent, kept = paced(endpoint, proc.pid, payloads, args.records, args.rate,
                                         args.seconds)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(120)
            per_1000[name] = used * 1000 / (sent / 1000)
            print(f"  {name:<12} {per_1000[name]:8.2f} ms CPU per 1,000 records "
                  f"({used:.2f}s CPU for {sent:,} records; schedule kept {kept:.0%})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = per_1000["rotel"]
    print("\nratios against rotel (lower is better; target: default ≤ 4×):")
    for name, value in per_1000.items():
        if name != "rotel":
            print(f"  sluice {name:<12} / rotel = {value / base:5.1f}×")
    if "default" in per_1000 and "no-masking" in per_1000:
        share = 1 - per_1000["no-masking"] / per_1000["default"]
        print(f"  masking share of receiver CPU: {share:.0%} (target ≤ 25 %)")
    if "default" in per_1000 and "indexed" in per_1000:
        extra = per_1000["indexed"] / per_1000["default"] - 1
        print(f"  indexing every category adds {extra:.0%} to the CPU per record (the index "
              "process included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
