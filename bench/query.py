"""LogQuery latency and Export rate over a large index, through a real receiver and real gRPC.

N records (default 1,000,000; ~600-byte JSON lines of 20 users, 5 categories, 10 records per
trace) are generated straight into the SQLite index, a receiver is started on it, and then:

- p50/p95 latency of a trace-id Query (admin key; user key) over --queries random traces,
- p50 latency of a user key's newest-first page of 100 (the per-user view),
- Export rate (records/s and MB/s) of --export records as jsonl and as csv.

    .venv/bin/python bench/query.py                  # 1,000,000 records
    .venv/bin/python bench/query.py --records 100000
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import orjson

from sluice_collector.encode import rfc3339
from sluice_collector.query._proto import query_pb2 as pb
from sluice_collector.query.store import IndexStore, row_of_line
from sluice_collector.service.config import parse_config
from sluice_collector.service.receiver import Receiver

ADMIN = "admin-key-0123456789abcdef"
USER = "user7-key-0123456789abcdef"
CATEGORIES = ("app", "access", "error", "security", "audit")


def fill(store: IndexStore, n: int, start_ns: int) -> None:
    rng = random.Random(7)
    batch = []
    for i in range(n):
        t = start_ns + i * 1_000_000
        obj: dict[str, Any] = {
            "timestamp": rfc3339(t), "observed_timestamp": rfc3339(t), "severity": "INFO",
            "severity_number": 17 if i % 50 == 0 else 9,
            "body": f"GET /api/v1/orders/{rng.randrange(10**6)} answered 200 in {i % 300} ms",
            "category": CATEGORIES[i % 5], "service.name": f"svc-{i % 4}",
            "trace_id": f"{i // 10:032x}", "span_id": f"{i:016x}",
            "attributes": {"user.id": f"user{i % 20}", "event.name": "API_REQUEST",
                           "event.duration_ms": i % 300, "http.route": "/api/v1/orders/{id}",
                           "client.address": "10.0.0.1"},
            "resource": {"service.name": f"svc-{i % 4}", "host.name": "bench"},
            "scope": {"name": "app.http", "version": "", "attributes": {}},
        }
        row = row_of_line(orjson.dumps(obj))
        assert row is not None
        batch.append(row)
        if len(batch) == 50_000:
            store.insert(batch, time.time_ns())
            batch = []
    store.insert(batch, time.time_ns())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--export", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        store = IndexStore.for_directory(logs)
        store.open()
        start_ns = time.time_ns() - args.records * 1_000_000 - 60 * 1_000_000_000
        began = time.perf_counter()
        fill(store, args.records, start_ns)
        store.close()
        fill_s = time.perf_counter() - began
        size = sum(p.stat().st_size for p in store.path.parent.iterdir())
        print(f"index: {args.records:,} records in {fill_s:.1f}s ({args.records / fill_s:,.0f}/s), "
              f"{size / 1e6:,.0f} MB on disk")
        config = parse_config(f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}}}
telemetry: {{listen: ""}}
files: {{directory: {logs}}}
query:
  api_keys:
    ops: {{key: {ADMIN}, role: admin}}
    u7: {{key: {USER}, role: user, user_id: user7}}
""")
        receiver = Receiver(config)
        receiver.start()
        try:
            channel = grpc.insecure_channel(receiver.endpoint)
            query = channel.unary_unary("/sluice.v1.LogQuery/Query",
                                        request_serializer=pb.QueryRequest.SerializeToString,
                                        response_deserializer=pb.QueryResponse.FromString)
            export = channel.unary_stream("/sluice.v1.LogQuery/Export",
                                          request_serializer=pb.ExportRequest.SerializeToString,
                                          response_deserializer=pb.ExportChunk.FromString)
            rng = random.Random(1)
            for label, key, make in (
                ("trace-id query, admin", ADMIN,
                 lambda: pb.Filter(trace_id=f"{rng.randrange(args.records // 10):032x}")),
                ("trace-id query, user key", USER,
                 lambda: pb.Filter(trace_id=f"{rng.randrange(args.records // 10):032x}")),
                ("user key, newest 100", USER, pb.Filter),
            ):
                times = []
                for _ in range(args.queries):
                    t0 = time.perf_counter()
                    query(pb.QueryRequest(filter=make(), limit=100), metadata=[("x-api-key", key)])
                    times.append((time.perf_counter() - t0) * 1000)
                times.sort()
                print(f"{label:<26} p50 {statistics.median(times):7.2f} ms   "
                      f"p95 {times[int(len(times) * 0.95)]:7.2f} ms   (n={len(times)}, incl. audit write)")
            for name, fmt in (("jsonl", pb.JSONL), ("csv", pb.CSV)):
                t0 = time.perf_counter()
                nbytes = 0
                for chunk in export(pb.ExportRequest(format=fmt, max_records=args.export,
                                                     order=pb.OLDEST_FIRST),
                                    metadata=[("x-api-key", ADMIN)]):
                    nbytes += len(chunk.data)
                elapsed = time.perf_counter() - t0
                print(f"export {name:<5} {args.export:,} records in {elapsed:.2f}s: "
                      f"{args.export / elapsed:,.0f} records/s, {nbytes / elapsed / 1e6:,.1f} MB/s")
            channel.close()
        finally:
            receiver.stop(5)


if __name__ == "__main__":
    main()
