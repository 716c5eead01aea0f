"""Promise: bad input gets a clear OTLP status (INVALID_ARGUMENT for malformed, RESOURCE_EXHAUSTED
for too large — never INTERNAL), quickly, costs no lasting memory, and the receiver keeps serving.

One receiver (`max_request_bytes: 16MiB`) takes the whole barrage; every answer is timed on a
warm channel from the client side. The malformed inputs run 11 times and must not grow RSS by
more than 10 MiB; the big-but-legal requests (10 MB value, 100k attributes) and the oversized
one are answered right and leave no lasting memory (≤ 10 MiB: see sluice_collector/memory.py
for where it came from).

Note on nesting: the Python protobuf parser's recursion limit is 100 messages, and each level
of kvlist nesting is 3 messages (AnyValue → KeyValueList → KeyValue), so 32+ levels already
fail to parse: they are answered INVALID_ARGUMENT ("values nested too deeply" in the README)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.reliability.harness import Sender, make_request, rss_kib, scan_logs

MAX_REQUEST = 16 * 1024 * 1024
CHEAP_BOUND_S = 0.100   # malformed input is answered within 100 ms
BIG_BOUND_S = 5.0       # 10 MB values / 100k attributes / 16 MiB+ requests within 5 s
RSS_GROWTH_KIB = 10 * 1024


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _request(rec_attrs: list[KeyValue] | None = None, body: AnyValue | None = None) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    rec = sl.log_records.add()
    rec.time_unix_nano = 1_763_900_000_000_000_000
    if body is not None:
        rec.body.CopyFrom(body)
    if rec_attrs:
        rec.attributes.extend(rec_attrs)
    return req


def invalid_utf8() -> bytes:
    data = _request(body=AnyValue(string_value="MARKERMARKER")).SerializeToString()
    return data.replace(b"MARKERMARKER", b"ok \xff\xfe\xc3\x28 ok")


def nested(depth: int) -> bytes:
    """`depth` levels of kvlist in one attribute value, encoded by hand (no client recursion)."""
    value = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(depth):
        kv = b"\x0a\x01k" + b"\x12" + _varint(len(value)) + value       # KeyValue{key, value}
        kvlist = b"\x0a" + _varint(len(kv)) + kv                            # KeyValueList{values}
        value = b"\x32" + _varint(len(kvlist)) + kvlist                     # AnyValue.kvlist_value=6
    attr = b"\x0a\x04deep" + b"\x12" + _varint(len(value)) + value
    record = b"\x09" + (1).to_bytes(8, "little") + b"\x32" + _varint(len(attr)) + attr  # attributes=6
    scope = b"\x12" + _varint(len(record)) + record
    resource = b"\x12" + _varint(len(scope)) + scope
    return b"\x0a" + _varint(len(resource)) + resource


def huge_length_prefix() -> bytes:
    return b"\x0a" + _varint(2**31) + b"\x12\x00abc"


def ten_mb_value() -> bytes:
    attr = KeyValue(key="blob", value=AnyValue(string_value="a" * (10 * 1024 * 1024)))
    return _request([attr]).SerializeToString()


def many_attributes() -> bytes:
    return _request([KeyValue(key=f"k{i}", value=AnyValue(int_value=i)) for i in range(100_000)]).SerializeToString()


def oversized() -> bytes:
    return _request(body=AnyValue(string_value="z" * (MAX_REQUEST + 1024))).SerializeToString()


# name, request builder, compressed?, accepted codes, time bound
CASES: list[tuple[str, Callable[[], bytes], bool, set[str], float]] = [
    ("garbage bytes", lambda: b"\xff" * 64, False, {"INVALID_ARGUMENT"}, CHEAP_BOUND_S),
    ("invalid UTF-8 string", invalid_utf8, False, {"INVALID_ARGUMENT"}, CHEAP_BOUND_S),
    ("2^31 length prefix", huge_length_prefix, False, {"INVALID_ARGUMENT"}, CHEAP_BOUND_S),
    ("nested 33", lambda: nested(33), False, {"OK", "INVALID_ARGUMENT"}, CHEAP_BOUND_S),
    ("nested 64", lambda: nested(64), False, {"OK", "INVALID_ARGUMENT"}, CHEAP_BOUND_S),
    ("nested 200", lambda: nested(200), False, {"INVALID_ARGUMENT"}, CHEAP_BOUND_S),
    ("10 MB attribute", ten_mb_value, False, {"OK"}, BIG_BOUND_S),
    ("100k attributes", many_attributes, False, {"OK"}, BIG_BOUND_S),
    ("gzip bomb (16 MiB+ zeros)", oversized, True, {"RESOURCE_EXHAUSTED"}, BIG_BOUND_S),
    ("oversized request", oversized, False, {"RESOURCE_EXHAUSTED"}, BIG_BOUND_S),
]


def run_barrage(endpoint: str, built: dict[str, bytes], names: list[str] | None = None
                ) -> list[tuple[str, str, float, str]]:
    plain, gz = Sender(endpoint), Sender(endpoint, compression=grpc.Compression.Gzip)
    try:
        plain.call(make_request([0]))
        gz.call(make_request([0]))
        out = []
        for name, _, compressed, _, _ in CASES:
            if names is None or name in names:
                res = (gz if compressed else plain).call(built[name], 30.0)
                out.append((name, res.code.name, res.seconds, res.details[:100]))
        return out
    finally:
        plain.close()
        gz.close()


MALFORMED = ["garbage bytes", "invalid UTF-8 string", "2^31 length prefix", "nested 33", "nested 64",
             "nested 200", "gzip bomb (16 MiB+ zeros)"]
BIG = ["10 MB attribute", "100k attributes", "oversized request"]


def test_hostile_input_is_answered_quickly_and_cheaply(start_receiver: Any) -> None:
    receiver = start_receiver({"max_request_bytes": MAX_REQUEST})
    assert receiver.proc is not None
    pid = receiver.proc.pid
    built = {name: make() for name, make, *_ in CASES}
    first = run_barrage(receiver.endpoint, built, MALFORMED)
    rss1 = rss_kib(pid)
    for _ in range(10):  # the malformed ones, repeated: they must cost no memory
        second = run_barrage(receiver.endpoint, built, MALFORMED)
    rss2 = rss_kib(pid)
    big = run_barrage(receiver.endpoint, built, BIG)
    rss3 = rss_kib(pid)
    answers = {name: (code, secs, details) for name, code, secs, details in first + big}
    again = {name: (code, secs) for name, code, secs, _ in second + big}

    print(f"\nhostile input: RSS {rss1} KiB after one malformed pass, {rss2} KiB after 10 more, "
          f"{rss3} KiB after the big-but-legal ones")
    for name, (code, secs, details) in answers.items():
        print(f"  {name:28s} {code:20s} {secs * 1000:8.1f} ms / {again[name][1] * 1000:8.1f} ms  {details}")
    for name, _, _, accepted, bound in CASES:
        code, secs, _ = answers[name]
        assert code in accepted, f"{name}: {code}, expected {accepted}"
        assert again[name][0] in accepted, f"{name}: {again[name][0]}, expected {accepted}"
        assert min(secs, again[name][1]) <= bound, f"{name}: answered in {secs:.3f} s > {bound} s"
    assert rss2 - rss1 <= RSS_GROWTH_KIB, f"RSS grew {rss2 - rss1} KiB over repeated malformed input"

    # Still serving: a good request afterwards is stored.
    sender = Sender(receiver.endpoint)
    try:
        assert sender.call(make_request([424242])).code.name == "OK"
    finally:
        sender.close()
    assert receiver.proc.poll() is None
    receiver.stop()
    scan = scan_logs(receiver.logs_dir)
    assert scan.counts[424242] == 1
    assert not scan.bad_lines


def test_big_legal_requests_leave_no_lasting_rss(start_receiver: Any) -> None:
    receiver = start_receiver({"max_request_bytes": MAX_REQUEST})
    assert receiver.proc is not None
    built = {name: make() for name, make, *_ in CASES if name in BIG}
    run_barrage(receiver.endpoint, built, [])
    before = rss_kib(receiver.proc.pid)
    run_barrage(receiver.endpoint, built, BIG)
    time.sleep(1.0)
    after = rss_kib(receiver.proc.pid)
    print(f"\nbig legal requests: RSS {before} → {after} KiB")
    assert after - before <= RSS_GROWTH_KIB
