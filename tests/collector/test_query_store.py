"""The query index: rows derived from stored lines, filters, pagination, retention, rebuild."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sluice_collector.batch import Signal
from sluice_collector.ingest.decode import decode_request
from sluice_collector.query.store import (
    AccessScope,
    IndexStore,
    InvalidFilter,
    RecordFilter,
    rebuild,
    row_of_line,
)
from sluice_collector.service.config import parse_config
from sluice_collector.service.receiver import Receiver
from sluice_collector.sinks.files.fsclock import fs_now
from sluice_collector.sinks.index.sink import IndexSink
from tests.otlp_builders import key_values, log_record, logs_request

ADMIN_KEY = "admin-key-0123456789abcdef"
T0 = 1_700_000_000_000_000_000


def _config(directory: Path, extra: str = "") -> str:
    return f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}}}
telemetry: {{listen: ""}}
files:
  directory: {directory}
  rotation: {{max_bytes: 4096}}
query:
  api_keys:
    admin: {{key: {ADMIN_KEY}, role: admin}}
{extra}
"""


def _spans(n: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(key_values({"service.name": "api"}))
    ss = rs.scope_spans.add()
    for i in range(n):
        span = ss.spans.add()
        span.trace_id = bytes([i + 1]) * 16
        span.span_id = bytes([i + 1]) * 8
        span.name = f"GET /items/{i}"
        span.start_time_unix_nano = T0 + i * 1_000_000
        span.end_time_unix_nano = T0 + i * 1_000_000 + 2_500_000
        span.status.code = 2 if i % 3 == 0 else 1  # type: ignore[assignment]
        span.attributes.extend(key_values({"user.id": f"u{i % 2}"}))
    return request


def _fill(receiver: Receiver) -> None:
    """Logs of several categories and tenants, audit records (hash-chained), and spans,
    through the receiver's real pipeline: file sink first, index sink after it."""
    pipeline = receiver.pipeline
    for batch_no in range(6):
        records = [
            log_record(f"event {batch_no}-{i}", severity=17 if i % 5 == 0 else 9,
                       time_unix_nano=T0 + (batch_no * 40 + i) * 1_000_000_000,
                       trace_id=bytes([i % 7 + 1]) * 16,
                       attributes={"user.id": f"user{i % 3}", "event.name": "API_REQUEST",
                                   "duration_ms": i, **({"log.category": "audit"} if i % 10 == 0 else {})})
            for i in range(40)
        ]
        data = logs_request(*records).SerializeToString()
        tenant = "acme" if batch_no % 2 else ""
        pipeline.process(decode_request(Signal.LOGS, data, max_bytes=1 << 20, tenant=tenant))
    data = _spans(12).SerializeToString()
    pipeline.process(decode_request(Signal.TRACES, data, max_bytes=1 << 20))


def test_rebuild_from_files_equals_the_live_index(tmp_path: Path) -> None:
    """Active, rotated and gzipped files, tenant directories and hash-chained audit lines all
    rebuild into exactly the rows the index sink wrote live."""
    receiver = Receiver(parse_config(_config(tmp_path / "logs")))
    receiver.start()
    try:
        _fill(receiver)
    finally:
        receiver.stop(5)
    files = [p.name for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert any(name.endswith(".gz") for name in files), files  # rotation + gzip happened
    assert (tmp_path / "logs" / "tenants" / "acme").is_dir()
    store = IndexStore.for_directory(tmp_path / "logs")
    live = store.rows()
    assert len(live) == 6 * 40 + 12
    assert {r.category for r in live} >= {"app", "error", "audit", "traces"}
    count = rebuild(tmp_path / "logs")
    assert count == len(live)
    assert sorted(store.rows()) == sorted(live)


def test_rebuild_honours_index_categories(tmp_path: Path) -> None:
    receiver = Receiver(parse_config(_config(tmp_path / "logs", "  index_categories: [error]")))
    receiver.start()
    try:
        _fill(receiver)
    finally:
        receiver.stop(5)
    store = IndexStore.for_directory(tmp_path / "logs")
    live = store.rows()
    assert live
    assert {r.category for r in live} == {"error"}
    assert rebuild(tmp_path / "logs", ["error"]) == len(live)


def test_row_of_a_span_line_carries_status_duration_and_user(tmp_path: Path) -> None:
    receiver = Receiver(parse_config(_config(tmp_path / "logs")))
    receiver.start()
    try:
        receiver.pipeline.process(
            decode_request(Signal.TRACES, _spans(1).SerializeToString(), max_bytes=1 << 20))
    finally:
        receiver.stop(5)
    (row,) = IndexStore.for_directory(tmp_path / "logs").rows()
    assert (row.category, row.status, row.duration_ms, row.user_id) == ("traces", "error", 2.5, "u0")
    assert row.trace_id == "01" * 16
    line = (tmp_path / "logs" / "traces.log").read_text()
    assert row.line + "\n" == line  # exactly as stored


@pytest.mark.parametrize("key", ["event.duration_ms", "http.server.request.duration_ms",
                                 "job.duration_ms", "duration_ms"])
def test_a_log_record_carries_its_duration_under_each_convention(key: str) -> None:
    """Access records (the middleware's and those derived from server spans) and jobs count
    in `Stats`' average duration, not only `event()`s."""
    line = ('{"timestamp":"2026-01-01T00:00:00.0Z","category":"access","severity_number":9,'
            f'"attributes":{{"{key}":12.5,"http.response.status_code":200}}}}\n').encode()
    row = row_of_line(line)
    assert row is not None
    assert (row.duration_ms, row.status) == (12.5, "200")


def test_a_user_id_masked_whole_is_no_user() -> None:
    """`[REDACTED:email]` stands for every e-mail user at once: counting it as one user (or
    letting a key see all of them through it) would be wrong."""
    line = (b'{"timestamp":"2026-01-01T00:00:00.0Z","category":"app","severity_number":9,'
            b'"attributes":{"user.id":"[REDACTED:email]"},"resource":{"user.id":"u-7"}}\n')
    row = row_of_line(line)
    assert row is not None
    assert row.user_id == ""
    kept = row_of_line(line.replace(b"[REDACTED:email]", b"pseu_0123456789abcdef"))
    assert kept is not None
    assert kept.user_id == "pseu_0123456789abcdef"


def test_metric_and_malformed_lines_are_not_rows() -> None:
    assert row_of_line(b'{"timestamp":"2026-01-01T00:00:00.0Z","category":"metrics","metric":{}}\n') is None
    assert row_of_line(b"not json\n") is None


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    store = IndexStore(tmp_path / "index.db")
    store.open()
    lines = [
        f'{{"timestamp":"2026-01-01T00:00:{i:02d}.000000000Z","severity_number":{9 if i % 2 else 17},'
        f'"body":"item {i}","category":"{"app" if i % 3 else "audit"}","service.name":"s",'
        f'"trace_id":"{i % 4:032x}","span_id":"","attributes":{{"user.id":"u{i % 2}","k":"{i}"}}}}'
        for i in range(50)
    ]
    store.insert([r for r in (row_of_line(line.encode()) for line in lines) if r is not None], T0)
    return store


def test_pagination_walks_every_match_once_in_order(store: IndexStore) -> None:
    f = RecordFilter(regex=r"item [0-9]*7")
    seen: list[str] = []
    token = ""
    while True:
        rows, token = store.query(f, AccessScope(), limit=2, page_token=token)
        seen += [r.row.line for r in rows]
        if not token:
            break
    bodies = [line.split('"body":"')[1].split('"')[0] for line in seen]
    assert bodies == ["item 47", "item 37", "item 27", "item 17", "item 7"]


def test_scope_cannot_be_widened_by_the_filter(store: IndexStore) -> None:
    scope = AccessScope(user_id="u1", hidden_categories=frozenset({"audit"}))
    rows, _ = store.query(RecordFilter(user_id="u0"), scope, limit=100)
    assert rows == []
    rows, _ = store.query(RecordFilter(), scope, limit=100)
    assert rows
    assert all('"u1"' in r.row.line and r.row.category != "audit" for r in rows)


def test_page_token_of_another_filter_is_refused(store: IndexStore) -> None:
    _, token = store.query(RecordFilter(), AccessScope(), limit=1)
    with pytest.raises(InvalidFilter, match="another filter"):
        store.query(RecordFilter(text="item"), AccessScope(), limit=1, page_token=token)
    with pytest.raises(InvalidFilter):
        store.query(RecordFilter(), AccessScope(), limit=1, page_token="garbage!")


def test_attribute_equals_and_invalid_regex(store: IndexStore) -> None:
    rows, _ = store.query(RecordFilter(attribute_equals=(("k", "13"),)), AccessScope(), limit=10)
    assert [r.row.line.count('"k":"13"') for r in rows] == [1]
    with pytest.raises(InvalidFilter, match="RE2"):
        store.query(RecordFilter(regex="(unclosed"), AccessScope(), limit=10)


def test_retention_counts_from_when_rows_were_stored_not_from_record_time(tmp_path: Path) -> None:
    """`app` keeps 30 days and `audit` forever. Rows stored 40 days ago go (but audit's); a row
    stamped 2023 by its client but stored now stays: record time never decides retention."""
    config = parse_config(_config(tmp_path / "logs"))
    store = IndexStore.for_directory(tmp_path / "logs")
    now = 1_900_000_000.0
    sink = IndexSink(store, config.files.categories, sweeps=False, clock=lambda: now)
    sink.start()
    try:
        line = '{{"timestamp":"2023-11-14T22:13:20.0Z","severity_number":9,"category":"{}","body":"{}"}}'
        old = [r for c in ("app", "audit") if (r := row_of_line(line.format(c, "old").encode()))]
        store.insert(old, int((now - 40 * 86400) * 1e9))
        fresh = row_of_line(line.format("app", "fresh").encode())
        assert fresh is not None
        store.insert([fresh], int(now * 1e9))
        assert sink.sweep() == 1
        assert sorted((r.category, '"old"' in r.line) for r in store.rows()) == [
            ("app", False), ("audit", True)]
    finally:
        sink.shutdown()


def test_rebuilt_rows_expire_with_the_file_that_holds_them(tmp_path: Path) -> None:
    """A rebuilt row counts as stored when its file was last written, measured on the file
    system's clock and translated to the receiver's (they differ under faketime)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    line = '{"timestamp":"2099-01-01T00:00:00.0Z","severity_number":9,"category":"app"}\n'
    now_on_disk = fs_now(logs)
    for name, age_days in (("app.log.2026-01-01.1", 40), ("app.log", 1)):
        (logs / name).write_text(line)
        os.utime(logs / name, (now_on_disk - age_days * 86400,) * 2)
    assert rebuild(logs) == 2
    config = parse_config(_config(logs))
    store = IndexStore.for_directory(logs)
    sink = IndexSink(store, config.files.categories, sweeps=False)
    sink.start()
    try:
        assert sink.sweep() == 1
        assert len(store.rows()) == 1
    finally:
        sink.shutdown()


def test_index_files_are_not_world_readable(tmp_path: Path) -> None:
    store = IndexStore.for_directory(tmp_path)
    store.open()
    store.close()
    assert os.stat(store.path).st_mode & 0o007 == 0


def test_user_of_a_row_falls_back_to_the_resource() -> None:
    """A per-user instance (or `sluice run --resource-attribute user.id=...`) puts the user on
    the resource: its records belong to that user, so that user's key sees them."""
    line = (b'{"timestamp":"2026-01-01T00:00:00.0Z","severity_number":9,"category":"app",'
            b'"attributes":{},"resource":{"service.name":"mcp","user.id":"u-7"}}\n')
    row = row_of_line(line)
    assert row is not None
    assert row.user_id == "u-7"
    own = row_of_line(line.replace(b'"attributes":{}', b'"attributes":{"user.id":"u-8"}'))
    assert own is not None
    assert own.user_id == "u-8"


def test_a_forged_page_token_outside_64_bits_is_an_invalid_filter(store: IndexStore) -> None:
    """A token is only base64 JSON: one naming a time or row past what SQLite can hold must be
    refused as the caller's mistake (INVALID_ARGUMENT), not fail inside SQLite (UNKNOWN)."""
    import base64

    import orjson

    f = RecordFilter()
    for time_ns, row_id in ((2**64 - 1, 1), (2**63, 1), (-1, 1), (T0, 2**63), (T0, -5)):
        raw = orjson.dumps([time_ns, row_id, True, f.digest()]) if time_ns < 2**64 - 1 else (
            b"[18446744073709551615,1,true,\"" + f.digest().encode() + b"\"]")
        token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        with pytest.raises(InvalidFilter, match="page_token"):
            store.query(f, AccessScope(), limit=1, page_token=token)


def test_stats_never_returns_more_than_about_1000_buckets(store: IndexStore) -> None:
    """Negative bounds are refused; the widest legal range still comes in ≤ 1001 buckets, for a
    user scope as for an admin."""
    for scope in (AccessScope(), AccessScope(user_id="u1")):
        with pytest.raises(InvalidFilter, match="since_unix_nano"):
            store.stats(RecordFilter(since_ns=-(2**63)), scope, 1)
        with pytest.raises(InvalidFilter, match="until_unix_nano"):
            store.stats(RecordFilter(until_ns=-1), scope, 1)
        for since, until in ((1, 2**63 - 1), (1, 0), (0, 2**63 - 1)):
            stats = store.stats(RecordFilter(since_ns=since, until_ns=until), scope, 1)
            assert stats.total
            assert 1 <= len(stats.buckets) <= 1001
            assert sum(n for _b, n, _e in stats.buckets) == stats.total


def test_user_and_tenant_reads_use_their_partial_indexes(tmp_path: Path) -> None:
    """Rows without a user or tenant are left out of those indexes (cheaper inserts); a read
    scoped to a user or tenant must still be served by them, not by a scan."""
    import sqlite3

    store = IndexStore(tmp_path / "records.db")
    store.open()
    line = '{"timestamp":"2026-01-01T00:00:00Z","severity_number":9,"category":"app"}'
    row = row_of_line(line.encode(), "acme")
    assert row is not None
    store.insert([row._replace(user_id=u) for u in ("", "alice", "")], stored_ns=1)
    conn = sqlite3.connect(tmp_path / "records.db")
    try:
        for scope, f, index in ((AccessScope(user_id="alice"), RecordFilter(), "records_user_set"),
                                (AccessScope(), RecordFilter(user_id="alice"), "records_user_set"),
                                (AccessScope(tenant="acme"), RecordFilter(), "records_tenant_set"),
                                (AccessScope(), RecordFilter(tenant="acme"), "records_tenant_set")):
            where, params = store._where(conn, f, scope)
            plan = " ".join(str(r[-1]) for r in conn.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM records WHERE {where}", params))
            assert index in plan, (scope, f, plan)
        assert [r.row.user_id for r in store.query(RecordFilter(), AccessScope(user_id="alice"),
                                                   limit=10)[0]] == ["alice"]
    finally:
        conn.close()
        store.close()
