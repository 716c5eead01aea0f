"""Receiver throughput against rotel (a native Rust OTel collector with its blackhole exporter).

    python bench/receiver.py [--requests 400] [--threads 4] [--records 1000] [--load easy|pii]
                             [--configs default,no-masking] [--shared-connection]
                             [--protocols grpc,http-protobuf,http-json] [--http-configs default]

A fixed load (`--load`: the easy one, or the PII-dense one of bench/loads.py) of pre-encoded
1000-record OTLP log requests is sent from 4 client threads, over
each protocol in turn: OTLP/gRPC (raw bytes on a gRPC channel each), OTLP/HTTP protobuf and
OTLP/HTTP JSON (a keep-alive HTTP/1.1 connection each; the JSON bodies are the same requests in
the OTLP JSON mapping), so client-side encoding costs nothing. For every receiver we report
records/s acknowledged and the receiver's CPU time per record (user + system, all its
processes, measured from /proc over the timed part only); for sluice also the records found on
disk afterwards (they must equal the records sent). Both peers run in this same run on this
machine, and the result is printed as ratios to rotel — never as an absolute pass/fail.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import http.client
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
from collections.abc import Callable
from pathlib import Path

import grpc
import yaml
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loads import LOADS

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = {  # name → (label, HTTP content type or None for gRPC)
    "grpc": ("OTLP/gRPC", None),
    "http-protobuf": ("OTLP/HTTP protobuf", "application/x-protobuf"),
    "http-json": ("OTLP/HTTP JSON", "application/json"),
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def to_otlp_json(payload: bytes) -> bytes:
    """The same Export request in the OTLP JSON mapping: lowerCamelCase names, enums as
    integers, 64-bit integers as strings and trace/span ids as hex (not protobuf's base64)."""
    obj = json_format.MessageToDict(ExportLogsServiceRequest.FromString(payload),
                                    use_integers_for_enums=True)
    for resource_logs in obj.get("resourceLogs", []):
        for scope_logs in resource_logs.get("scopeLogs", []):
            for record in scope_logs.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64decode(record[key]).hex()
    return json.dumps(obj, separators=(",", ":")).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and every process below it (the --workers children)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


SHARED_CONNECTION = False  # --shared-connection: all threads multiplex one HTTP/2 connection

Sender = Callable[[bytes], str]  # sends one request: "ok", "retry" (429/503/UNAVAILABLE) or "fail"


def grpc_sender(endpoint: str) -> tuple[Sender, Callable[[], None]]:
    # A connection per thread, as separate apps would have (gRPC shares one by default).
    options = [("grpc.max_send_message_length", 64 << 20),
               ("grpc.use_local_subchannel_pool", 0 if SHARED_CONNECTION else 1)]
    channel = grpc.insecure_channel(endpoint, options=options)
    stub = channel.unary_unary(LOGS_EXPORT)

    def send(payload: bytes) -> str:
        try:
            stub(payload, timeout=60)
        except grpc.RpcError as exc:
            retry = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
            return "retry" if retry else "fail"
        return "ok"

    return send, channel.close


def http_sender(endpoint: str, content_type: str) -> tuple[Sender, Callable[[], None]]:
    """A keep-alive HTTP/1.1 connection, as an OTLP/HTTP exporter holds one."""
    host, _, port = endpoint.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": content_type}

    def send(payload: bytes) -> str:
        try:
            conn.request("POST", "/v1/logs", payload, headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()  # reconnects on the next request
            return "retry"
        if response.status == 200:
            return "ok"
        return "retry" if response.status in (429, 503) else "fail"

    return send, conn.close


def drive(open_sender: Callable[[], tuple[Sender, Callable[[], None]]], payloads: list[bytes],
          requests: int, threads: int, pid: int) -> tuple[float, int, float]:
    """Send `requests` Exports spread over `threads`; return (seconds, failed requests, CPU
    seconds the receiver process `pid` used meanwhile)."""
    failures = [0]
    lock = threading.Lock()
    per_thread = requests // threads
    barrier = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        send, close = open_sender()
        try:
            send(payloads[0])  # warm the connection before the clock starts
            barrier.wait()
            for n in range(per_thread):
                payload = payloads[(index * per_thread + n) % len(payloads)]
                for _attempt in range(50):
                    outcome = send(payload)
                    if outcome == "ok":
                        break
                    if outcome == "fail":
                        with lock:
                            failures[0] += 1
                        break
                    time.sleep(0.05)
        finally:
            close()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - started, failures[0], cpu_seconds(pid) - cpu_before


def sender_for(protocol: str, grpc_endpoint: str, http_endpoint: str
               ) -> Callable[[], tuple[Sender, Callable[[], None]]]:
    content_type = PROTOCOLS[protocol][1]
    if content_type is None:
        return lambda: grpc_sender(grpc_endpoint)
    return lambda: http_sender(http_endpoint, content_type)


def wait_port(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def report(who: str, sent: int, seconds: float, cpu: float, failed: int, extra: str = "") -> dict[str, float]:
    rate, cpu_us = sent / seconds, cpu / sent * 1e6
    print(f"  {who:<22} {rate:>10,.0f} records/s  {cpu_us:>6.2f} us CPU/record   ({sent:,} records in "
          f"{seconds:.2f}s, {failed} failed requests{extra})", flush=True)
    return {"records_per_s": rate, "cpu_us_per_record": cpu_us}


def run_rotel(protocol: str, payloads: list[bytes], args: argparse.Namespace, tmp: Path) -> dict[str, float]:
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
        wait_port(http_port)
        seconds, failed, cpu = drive(sender_for(protocol, f"127.0.0.1:{port}", f"127.0.0.1:{http_port}"),
                                     payloads, args.requests, args.threads, proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    sent = (args.requests // args.threads) * args.threads * args.records
    return report("rotel (blackhole)", sent, seconds, cpu, failed)


def count_lines(directory: Path) -> int:
    """Records on disk: lines of every active, rotated and gzipped category file."""
    total = 0
    for path in directory.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(directory).parts)
        if not path.is_file() or hidden or ".gz.tmp" in path.name:
            continue
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        total += data.count(b"\n")
    return total


def run_sluice(name: str, settings: dict, protocol: str, payloads: list[bytes], args: argparse.Namespace,
               tmp: Path) -> dict[str, float]:
    work = tmp / f"{protocol}-{name}"
    work.mkdir()
    port, http_port = free_port(), free_port()
    settings = dict(settings)
    extra_args = settings.pop("__args__", [])
    config = {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"},
                                                   "http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
              "files": {"directory": str(work / "logs")},
              "telemetry": {"listen": ""}, **settings}
    (work / "sluice.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "sluice_collector", "receiver", "run", "--config",
           str(work / "sluice.yaml"), "--log-level", "WARNING", *extra_args]
    proc = subprocess.Popen(cmd, cwd=work, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port)
        wait_port(http_port)
        seconds, failed, cpu = drive(sender_for(protocol, f"127.0.0.1:{port}", f"127.0.0.1:{http_port}"),
                                     payloads, args.requests, args.threads, proc.pid)
        lag = ""
        if "query" in settings:
            # The index trails the acknowledgements: the clock (and the CPU) stop only once
            # it holds every record, so a lag it never makes up cannot pass for speed.
            acked_at, cpu_at_ack = time.perf_counter(), cpu_seconds(proc.pid)
            total = (args.requests // args.threads + 1) * args.threads * args.records
            wait_indexed(work / "logs" / ".index" / "records.db", total)
            caught_up = time.perf_counter() - acked_at
            seconds += caught_up
            cpu += cpu_seconds(proc.pid) - cpu_at_ack
            lag = f"; index caught up {caught_up:.2f}s after the last acknowledgement"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        print(err, file=sys.stderr)
    sent = (args.requests // args.threads) * args.threads * args.records
    warmup = args.threads * args.records
    on_disk = count_lines(work / "logs") - warmup
    return report(f"sluice ({name})", sent, seconds, cpu, failed,
                  f"; on disk {on_disk:,} of {sent:,}{lag}")


def wait_indexed(db: Path, rows: int, timeout_s: float = 600.0) -> None:
    """Until the index at `db` holds `rows` rows (warm-up requests included)."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            try:
                if conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] >= rows:
                    return
            finally:
                conn.close()
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise SystemExit(f"the index never reached {rows:,} rows")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400, help="Export requests in total (default 400)")
    parser.add_argument("--records", type=int, default=1000, help="log records per request (default 1000)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--configs", default="default,no-masking,workers-2",
                        help="sluice configs to run over OTLP/gRPC: default, no-masking, no-sinks, "
                        "workers-2, threads-2, indexed (comma-separated; default: "
                        "default,no-masking,workers-2)")
    parser.add_argument("--load", choices=sorted(LOADS), default="easy",
                        help="the data: easy (about 1%% to mask) or pii (one record in three); default easy")
    parser.add_argument("--http-configs", default="default",
                        help="sluice configs to run over each OTLP/HTTP encoding (default: default)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS),
                        help=f"protocols to measure (default: {','.join(PROTOCOLS)})")
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
        # the default config with the query API on: every log category indexed
        "indexed": {"query": {"api_keys": {"bench": {"key": "bench-key-0123456789abcdef",
                                                      "role": "admin"}}}},
    }
    print(f"receiver throughput: {args.requests} requests x {args.records} records, "
          f"{args.threads} client threads, {os.cpu_count()} cores")
    payloads = LOADS[args.load](20, args.records)
    print(f"  load: {args.load}")
    bodies = {"grpc": payloads, "http-protobuf": payloads, "http-json": [to_otlp_json(p) for p in payloads]}
    print(f"  request size: {sum(map(len, payloads)) // len(payloads):,} bytes as protobuf, "
          f"{sum(map(len, bodies['http-json'])) // len(payloads):,} bytes as OTLP JSON")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for protocol in args.protocols.split(","):
            label = PROTOCOLS[protocol][0]
            print(f"\n{label}:")
            names = (args.configs if protocol == "grpc" else args.http_configs).split(",")
            results[protocol] = {"rotel": run_rotel(protocol, bodies[protocol], args, tmp)}
            for name in names:
                results[protocol][name] = run_sluice(name, configs[name], protocol, bodies[protocol],
                                                     args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nratios against rotel, same protocol (records/s: higher is better; CPU per record: how "
          "many times rotel's, lower is better; targets over gRPC: default ≥ 0.4, ≥ 0.3 with masking):")
    for protocol, by_name in results.items():
        rotel_result = by_name["rotel"]
        for name, result in by_name.items():
            if name == "rotel":
                continue
            print(f"  {PROTOCOLS[protocol][0]:<19} sluice {name:<11} / rotel = "
                  f"{result['records_per_s'] / rotel_result['records_per_s']:.3f} records/s, "
                  f"{result['cpu_us_per_record'] / rotel_result['cpu_us_per_record']:.1f}x CPU/record")
    grpc_results = results.get("grpc", {})
    if "default" in grpc_results and "no-masking" in grpc_results:
        cost = 1 - grpc_results["default"]["records_per_s"] / grpc_results["no-masking"]["records_per_s"]
        print(f"  masking cost: {cost:.1%} of end-to-end throughput over gRPC (target ≤ 25%)")
    if "default" in grpc_results and "indexed" in grpc_results:
        cost = 1 - grpc_results["indexed"]["records_per_s"] / grpc_results["default"]["records_per_s"]
        print(f"  indexing cost: {cost:.1%} of end-to-end throughput over gRPC, until the index "
              "holds every record (target ≤ 20%)")
    for protocol in ("http-protobuf", "http-json"):
        if "default" in grpc_results and "default" in results.get(protocol, {}):
            ratio = (results[protocol]["default"]["cpu_us_per_record"]
                     / grpc_results["default"]["cpu_us_per_record"])
            print(f"  sluice default: {PROTOCOLS[protocol][0]} costs {ratio:.2f}x the CPU per record "
                  "of OTLP/gRPC")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
