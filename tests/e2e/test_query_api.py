"""The LogQuery API of a real `sluice receiver run` over real gRPC: 3,000 stored records of
three users, two services and five categories; access control, filters, pagination, Stats,
Export, Tail, the audit trail of reads, and the `sluice logs` CLI."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sluice_collector.query._proto import query_pb2 as pb
from tests.otlp_builders import log_record, logs_request
from tests.receiver_process import ReceiverProcess

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
ADMIN = "admin-key-0123456789abcdef"
ALICE = "alice-key-0123456789abcdef"
USERS = ("alice", "bob", "carol")
CATEGORIES = ("app", "app", "security", "audit", "system")
EVENTS = ("LOGIN", "API_REQUEST", "LOGOUT")
SERVICES = ["shop", "billing"]
N = 3000
BATCH = 500


def spec(i: int, base_ns: int) -> dict[str, Any]:
    """Record i of the stored set, as the test knows it."""
    user = USERS[i % 3]
    body = f"order {i} processed for {user}"
    if i % 13 == 0:
        body = f"payment failed code=E{i % 50:02d} order {i}"
    return {
        "i": i, "user": user, "category": CATEGORIES[i % 5], "severity": 17 if i % 7 == 0 else 9,
        "time": base_ns + i * 1_000_000_000, "trace": (i // 10 + 1).to_bytes(16, "big"),
        "body": body, "event": EVENTS[i % 3 if i % 2 else 1], "duration": i % 100,
        "service": SERVICES[(i // BATCH) % 2],
    }


def send(endpoint: str, specs: list[dict[str, Any]], service: str) -> None:
    request = logs_request(*(
        log_record(s["body"], severity=s["severity"], time_unix_nano=s["time"], trace_id=s["trace"],
                   span_id=b"\x01" * 8,
                   attributes={"user.id": s["user"], "log.category": s["category"],
                               "event.name": s["event"], "event.duration_ms": s["duration"],
                               "n": s["i"]})
        for s in specs), service=service)
    with grpc.insecure_channel(endpoint) as channel:
        channel.unary_unary(LOGS_EXPORT)(request.SerializeToString(), timeout=30)


class Client:
    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self._query = self.channel.unary_unary(
            "/sluice.v1.LogQuery/Query", request_serializer=pb.QueryRequest.SerializeToString,
            response_deserializer=pb.QueryResponse.FromString)
        self._stats = self.channel.unary_unary(
            "/sluice.v1.LogQuery/Stats", request_serializer=pb.StatsRequest.SerializeToString,
            response_deserializer=pb.StatsResponse.FromString)
        self._export = self.channel.unary_stream(
            "/sluice.v1.LogQuery/Export", request_serializer=pb.ExportRequest.SerializeToString,
            response_deserializer=pb.ExportChunk.FromString)
        self.tail = self.channel.unary_stream(
            "/sluice.v1.LogQuery/Tail", request_serializer=pb.TailRequest.SerializeToString,
            response_deserializer=pb.TailResponse.FromString)

    def query(self, key: str | None, **kwargs: Any) -> pb.QueryResponse:
        metadata = [("x-api-key", key)] if key else None
        response: pb.QueryResponse = self._query(pb.QueryRequest(**kwargs), metadata=metadata, timeout=30)
        return response

    def query_all(self, key: str, f: pb.Filter, *, limit: int = 500, order: int = pb.NEWEST_FIRST
                  ) -> tuple[list[dict[str, Any]], int]:
        """Every matching record, following page tokens; and the number of pages."""
        out: list[dict[str, Any]] = []
        token, pages = "", 0
        while True:
            response = self.query(key, filter=f, limit=limit, page_token=token, order=order)
            pages += 1
            out += [json.loads(r.line) for r in response.records]
            token = response.next_page_token
            if not token:
                return out, pages

    def stats(self, key: str, f: pb.Filter, bucket_seconds: int = 0) -> pb.StatsResponse:
        response: pb.StatsResponse = self._stats(
            pb.StatsRequest(filter=f, bucket_seconds=bucket_seconds),
            metadata=[("x-api-key", key)], timeout=30)
        return response

    def export(self, key: str, **kwargs: Any) -> bytes:
        chunks = self._export(pb.ExportRequest(**kwargs), metadata=[("x-api-key", key)], timeout=60)
        return b"".join(c.data for c in chunks)


class Stored:
    def __init__(self, proc: ReceiverProcess, specs: list[dict[str, Any]], client: Client) -> None:
        self.proc = proc
        self.specs = specs
        self.client = client
        self.base_ns = specs[0]["time"]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    workdir = tmp_path_factory.mktemp("query")
    proc = ReceiverProcess(workdir, {"query": {"max_limit": 500, "api_keys": {
        "ops": {"key": ADMIN, "role": "admin"},
        "alice": {"key": ALICE, "role": "user", "user_id": "alice"},
    }}}).start()
    try:
        # Recent times: records older than a category's retention would be swept at start.
        base_ns = time.time_ns() - 2 * 3600 * 1_000_000_000
        specs = [spec(i, base_ns) for i in range(N)]
        for start in range(0, N, BATCH):
            send(proc.endpoint, specs[start:start + BATCH], SERVICES[(start // BATCH) % 2])
        client = Client(proc.endpoint)
        yield Stored(proc, specs, client)
        client.channel.close()
    finally:
        proc.stop()


def seeded(**kwargs: Any) -> pb.Filter:
    """A filter over the seeded records only (not the audit records reads leave behind)."""
    return pb.Filter(services=SERVICES, **kwargs)


def test_user_key_sees_only_its_own_records_and_no_admin_categories(stored: Stored) -> None:
    records, pages = stored.client.query_all(ALICE, pb.Filter())
    expected = [s for s in stored.specs
                if s["user"] == "alice" and s["category"] not in ("audit", "system")]
    assert pages > 1
    assert len(records) == len(expected)
    assert {r["attributes"]["user.id"] for r in records} == {"alice"}
    assert {r["category"] for r in records} == {"app", "security"}
    # Asking for someone else's records narrows to nothing; it never widens.
    assert stored.client.query(ALICE, filter=pb.Filter(user_id="bob")).records == []
    with pytest.raises(grpc.RpcError) as info:
        stored.client.query(ALICE, filter=pb.Filter(categories=["audit"]))
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_admin_key_sees_every_stored_record(stored: Stored) -> None:
    records, _ = stored.client.query_all(ADMIN, seeded())
    assert sorted(r["attributes"]["n"] for r in records) == list(range(N))
    assert Counter(r["category"] for r in records) == Counter(s["category"] for s in stored.specs)


def test_call_without_or_with_a_wrong_key_is_unauthenticated(stored: Stored) -> None:
    for key in (None, "not-a-key-0123456789abcdef"):
        with pytest.raises(grpc.RpcError) as info:
            stored.client.query(key)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # The `authorization: ApiKey` form is accepted too.
    response = stored.client._query(pb.QueryRequest(limit=1), timeout=10,
                                    metadata=[("authorization", f"ApiKey {ADMIN}")])
    assert len(response.records) == 1


def test_regex_filter_with_pagination_returns_exactly_the_matching_records(stored: Stored) -> None:
    records, pages = stored.client.query_all(ADMIN, seeded(regex=r"code=E4[0-9] order"), limit=7)
    expected = [s["i"] for s in stored.specs if s["i"] % 13 == 0 and 40 <= s["i"] % 50 <= 49]
    got = [r["attributes"]["n"] for r in records]
    assert got == sorted(expected, reverse=True)  # newest first, each exactly once
    assert pages == -(-len(expected) // 7) + (1 if len(expected) % 7 == 0 else 0)


def test_time_range_filter_pages_oldest_first_exactly(stored: Stored) -> None:
    since = stored.base_ns + 100 * 1_000_000_000
    until = stored.base_ns + 200 * 1_000_000_000
    records, pages = stored.client.query_all(
        ADMIN, seeded(since_unix_nano=since, until_unix_nano=until), limit=30, order=pb.OLDEST_FIRST)
    assert [r["attributes"]["n"] for r in records] == list(range(100, 200))
    assert pages == 4


def test_trace_id_filter_returns_the_trace_and_respects_the_key(stored: Stored) -> None:
    trace = (43).to_bytes(16, "big").hex()  # records 420..429
    records, _ = stored.client.query_all(ADMIN, pb.Filter(trace_id=trace))
    assert sorted(r["attributes"]["n"] for r in records) == list(range(420, 430))
    assert all(r["trace_id"] == trace for r in records)
    mine, _ = stored.client.query_all(ALICE, pb.Filter(trace_id=trace.upper()))
    assert sorted(r["attributes"]["n"] for r in mine) == [
        i for i in range(420, 430) if i % 3 == 0 and CATEGORIES[i % 5] not in ("audit", "system")]


def test_stats_counts_agree_with_the_stored_records(stored: Stored) -> None:
    s = stored.client.stats(ADMIN, seeded(), bucket_seconds=600)
    specs = stored.specs
    assert s.total == N
    assert {c.key: c.count for c in s.by_category} == Counter(x["category"] for x in specs)
    assert {c.key: c.count for c in s.by_event_type} == Counter(x["event"] for x in specs)
    assert {c.key: c.count for c in s.by_severity} == Counter(
        "ERROR" if x["severity"] == 17 else "INFO" for x in specs)
    assert s.unique_users == 3
    assert s.error_rate == pytest.approx(sum(x["severity"] >= 17 for x in specs) / N)
    assert s.avg_duration_ms == pytest.approx(sum(x["duration"] for x in specs) / N)
    assert s.bucket_seconds == 600
    assert sum(b.count for b in s.buckets) == N
    assert sum(b.errors for b in s.buckets) == sum(x["severity"] >= 17 for x in specs)
    assert {c.key: c.count for c in s.by_service} == Counter(x["service"] for x in specs)
    # The split series add up to the buckets, per bucket and per key.
    per_bucket = Counter[int]()
    for p in s.category_buckets:
        per_bucket[p.start_unix_nano] += p.count
    assert per_bucket == {b.start_unix_nano: b.count for b in s.buckets}
    by_category = Counter[str]()
    for p in s.category_buckets:
        by_category[p.key] += p.count
    assert by_category == Counter(x["category"] for x in specs)
    by_severity = Counter[str]()
    for p in s.severity_buckets:
        by_severity[p.key] += p.count
    assert by_severity == Counter("ERROR" if x["severity"] == 17 else "INFO" for x in specs)
    mine = stored.client.stats(ALICE, pb.Filter())
    assert mine.unique_users == 1
    assert mine.total == sum(1 for x in specs if x["user"] == "alice"
                             and x["category"] not in ("audit", "system"))


def test_csv_export_opens_with_the_csv_module_one_row_per_record(stored: Stored) -> None:
    data = stored.client.export(ADMIN, filter=seeded(), format=pb.CSV)
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(rows) == N
    assert sorted(json.loads(r["record"])["attributes"]["n"] for r in rows) == list(range(N))
    assert {r["user_id"] for r in rows} == set(USERS)
    assert rows[0]["message"].startswith(("order", "payment"))


def test_gzip_and_zip_exports_hold_one_jsonl_line_per_record(stored: Stored) -> None:
    f = seeded(categories=["security"])
    expected = sum(1 for x in stored.specs if x["category"] == "security")
    lines = gzip.decompress(stored.client.export(ADMIN, filter=f, compression=pb.GZIP)).splitlines()
    assert len(lines) == expected
    archive = zipfile.ZipFile(io.BytesIO(stored.client.export(
        ADMIN, filter=f, compression=pb.ZIP, format=pb.TXT)))
    (name,) = archive.namelist()
    assert len(archive.read(name).splitlines()) == expected


def test_tail_receives_records_sent_after_it_started(stored: Stored) -> None:
    f = pb.Filter(services=["tailsvc"])
    call = stored.client.tail(pb.TailRequest(filter=f), metadata=[("x-api-key", ADMIN)], timeout=30)
    received: list[dict[str, Any]] = []
    subscribed = threading.Event()
    done = threading.Event()

    def read() -> None:
        try:
            for message in call:
                subscribed.set()
                received.extend(json.loads(r.line) for r in message.records)
                if len(received) >= 5:
                    done.set()
                    return
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert subscribed.wait(10)
    later = [dict(spec(i, time.time_ns()), user="dave", category="app") for i in range(5)]
    send(stored.proc.endpoint, later, "tailsvc")
    assert done.wait(10), received
    call.cancel()
    assert [r["attributes"]["n"] for r in received] == [0, 1, 2, 3, 4]
    assert {r["service.name"] for r in received} == {"tailsvc"}


def test_every_query_call_leaves_an_audit_record(stored: Stored) -> None:
    client = stored.client
    client.query(ALICE, filter=pb.Filter(text="marker-query"))
    client.stats(ALICE, pb.Filter(text="marker-stats"))
    client.export(ALICE, filter=pb.Filter(text="marker-export"))
    call = client.tail(pb.TailRequest(filter=pb.Filter(text="marker-tail")),
                       metadata=[("x-api-key", ALICE)], timeout=10)
    next(iter(call))  # the subscription is confirmed: the call has been audited
    call.cancel()
    audit = stored.proc.read("audit")
    reads = {(r["attributes"]["audit.action"], json.loads(r["attributes"]["audit.filter"]).get("text"))
             for r in audit if r["attributes"].get("audit.actor") == "alice"}
    for method in ("Query", "Stats", "Export", "Tail"):
        assert (f"LogQuery.{method}", f"marker-{method.lower()}") in reads
    chained = [r for r in audit if r["attributes"].get("audit.actor") == "alice"]
    assert all("audit.hash" in r for r in chained)  # through the pipeline: hash-chained


def _cli(stored: Stored, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice_collector", "logs", *args,
         "--endpoint", stored.proc.endpoint],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SLUICE_API_KEY": ALICE},
    )


def test_cli_query_json_and_human_output(stored: Stored) -> None:
    trace = (43).to_bytes(16, "big").hex()
    done = _cli(stored, "query", "--trace-id", trace, "--json", "--since", "1d")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["attributes"]["n"] for r in lines) == [420, 426]  # alice's app/security ones
    human = _cli(stored, "query", "--trace-id", trace, "--grep", "order 42[06] ")
    assert human.returncode == 0, human.stderr
    rows = human.stdout.splitlines()
    assert len(rows) == 2
    assert all("alice" in row and "shop" in row for row in rows)
    stats = _cli(stored, "stats", "--category", "security")
    assert stats.returncode == 0, stats.stderr
    assert "unique users  1" in stats.stdout


def test_cli_without_key_exits_non_zero(stored: Stored, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluice_collector", "logs", "query", "--endpoint", stored.proc.endpoint,
         "--api-key", "wrong-key-0123456789abcdef"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "UNAUTHENTICATED" in done.stderr
