"""Receiver throughput against rotel (a native Rust OTel collector with its blackhole exporter).

    python bench/receiver.py [--requests 400] [--threads 4] [--records 1000] [--load easy|pii]
                             [--configs default,no-masking] [--shared-connection]

A fixed load (`--load`: the easy one, or the PII-dense one of bench/loads.py) of pre-encoded
1000-record OTLP log requests is sent from 4 client threads (raw
bytes on a gRPC channel each, so client-side encoding costs nothing). For every receiver we
report records/s acknowledged; for sluice also the records found on disk afterwards (they must
equal the records sent). Both peers run in this same run on this machine, and the result is
printed as a ratio to rotel — never as an absolute pass/fail.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import socket
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

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SHARED_CONNECTION = False  # --shared-connection: all threads multiplex one HTTP/2 connection


def drive(endpoint: str, payloads: list[bytes], requests: int, threads: int) -> tuple[float, int]:
    """Send `requests` Exports spread over `threads`; return (seconds, failed requests)."""
    failures = [0]
    lock = threading.Lock()
    per_thread = requests // threads
    barrier = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        # A connection per thread, as separate apps would have (gRPC shares one by default).
        options = [("grpc.max_send_message_length", 64 << 20),
                   ("grpc.use_local_subchannel_pool", 0 if SHARED_CONNECTION else 1)]
        with grpc.insecure_channel(endpoint, options=options) as ch:
            stub = ch.unary_unary(LOGS_EXPORT)
            stub(payloads[0], timeout=30)  # warm the connection before the clock starts
            barrier.wait()
            for n in range(per_thread):
                payload = payloads[(index * per_thread + n) % len(payloads)]
                for _attempt in range(50):
                    try:
                        stub(payload, timeout=60)
                        break
                    except grpc.RpcError as exc:
                        if exc.code() not in (grpc.StatusCode.UNAVAILABLE,
                                              grpc.StatusCode.RESOURCE_EXHAUSTED):
                            with lock:
                                failures[0] += 1
                            break
                        time.sleep(0.05)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - started, failures[0]


def wait_port(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def run_rotel(payloads: list[bytes], args: argparse.Namespace, tmp: Path) -> float:
    import rotel

    binary = Path(rotel.__file__).parent / "rotel-agent"
    port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [str(binary), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
         "--otlp-http-endpoint", f"127.0.0.1:{http_port}", "--exporter", "blackhole",
         "--pid-file", str(tmp / "rotel.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        seconds, failed = drive(f"127.0.0.1:{port}", payloads, args.requests, args.threads)
    finally:
        proc.terminate()
        proc.wait(10)
    sent = (args.requests // args.threads) * args.threads * args.records
    rate = sent / seconds
    print(f"  rotel (blackhole)      {rate:>12,.0f} records/s   ({sent:,} records in {seconds:.2f}s, "
          f"{failed} failed requests)")
    return rate


def count_lines(directory: Path) -> int:
    """Records on disk: lines of every active, rotated and gzipped category file."""
    total = 0
    for path in directory.rglob("*"):
        if not path.is_file() or path.name.startswith(".") or ".gz.tmp" in path.name:
            continue
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        total += data.count(b"\n")
    return total


def run_sluice(name: str, settings: dict, payloads: list[bytes], args: argparse.Namespace,
               tmp: Path) -> float:
    work = tmp / name
    work.mkdir()
    port = free_port()
    settings = dict(settings)
    extra_args = settings.pop("__args__", [])
    config = {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
              "files": {"directory": str(work / "logs")},
              "telemetry": {"listen": ""}, **settings}
    (work / "sluice.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "sluice_collector", "receiver", "run", "--config",
           str(work / "sluice.yaml"), "--log-level", "WARNING", *extra_args]
    proc = subprocess.Popen(cmd, cwd=work, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port)
        seconds, failed = drive(f"127.0.0.1:{port}", payloads, args.requests, args.threads)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        print(err, file=sys.stderr)
    sent = (args.requests // args.threads) * args.threads * args.records
    warmup = args.threads * args.records
    on_disk = count_lines(work / "logs")
    rate = sent / seconds
    print(f"  sluice ({name:<13}) {rate:>12,.0f} records/s   ({sent:,} records in {seconds:.2f}s, "
          f"{failed} failed requests; on disk {on_disk - warmup:,} of {sent:,})")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400, help="Export requests in total (default 400)")
    parser.add_argument("--records", type=int, default=1000, help="log records per request (default 1000)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--configs", default="default,no-masking,workers-2",
                        help="sluice configs to run: default, no-masking, no-sinks, workers-2 "
                        "(comma-separated; default: default,no-masking,workers-2)")
    parser.add_argument("--load", choices=sorted(LOADS), default="easy",
                        help="the data: easy (about 1%% to mask) or pii (one record in three); default easy")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--shared-connection", action="store_true",
                        help="send all threads' requests over one gRPC connection (gRPC's default "
                        "for channels to one target) instead of a connection per thread")
    args = parser.parse_args()
    global SHARED_CONNECTION  # noqa: PLW0603 - a module-level switch for drive()
    SHARED_CONNECTION = args.shared_connection
    configs = {
        "default": {},
        "no-masking": {"masking": {"enabled": False}},
        # decode + route only: the ceiling the sinks and stages are measured against.
        "no-sinks": {"masking": {"enabled": False}, "files": {"enabled": False}},
        # the default config on one port with two processes (`--workers 2`)
        "workers-2": {"__args__": ["--workers", "2"]},
        "threads-2": {"threads": 2},
    }
    print(f"receiver throughput: {args.requests} requests x {args.records} records, "
          f"{args.threads} client threads, {os.cpu_count()} cores")
    payloads = LOADS[args.load](20, args.records)
    print(f"  load: {args.load}")
    print(f"  request size: {sum(map(len, payloads)) // len(payloads):,} bytes encoded")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    try:
        rotel_rate = run_rotel(payloads, args, tmp)
        results = {"rotel": rotel_rate}
        for name in args.configs.split(","):
            results[name] = run_sluice(name, configs[name], payloads, args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nratios against rotel (higher is better; targets: default ≥ 0.4 core, ≥ 0.3 with masking):")
    for name, rate in results.items():
        if name != "rotel":
            print(f"  sluice {name:<13} / rotel = {rate / rotel_rate:.3f}")
    if "default" in results and "no-masking" in results:
        cost = 1 - results["default"] / results["no-masking"]
        print(f"  masking cost: {cost:.1%} of end-to-end throughput (target ≤ 25%)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
