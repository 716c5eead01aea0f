"""`sluice logs` as a user meets it, against a real receiver over real gRPC: reads do not find
themselves, hostile log text never reaches the terminal raw, and a receiver without the query
API (or none at all) gets one line that says what to do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.otlp_builders import log_record, logs_request
from tests.receiver_process import ReceiverProcess

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
ADMIN = "admin-key-logs-cli-0123456789"
# What an attacker can get into a log line: SGR colours, a window-title OSC with BEL, a carriage
# return, an 8-bit CSI (C1) that clears the screen, and a right-to-left override.
HOSTILE_BODY = "\x1b[33mYELLOW\x1b[0m paid\r\x9b2J fake \u202eevil"
HOSTILE_SERVICE = "shop\x1b]0;pwned\x07"
RAW_CONTROLS = (b"\x1b", b"\x07", b"\r", "\x9b".encode(), "\u202e".encode())
SEEDED = 5  # records the fixture stores; nothing else but the audit records of reads


def _send(endpoint: str, *records: object, service: str) -> None:
    request = logs_request(*records, service=service)  # type: ignore[arg-type]
    with grpc.insecure_channel(endpoint) as channel:
        channel.unary_unary(LOGS_EXPORT)(request.SerializeToString(), timeout=30)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    proc = ReceiverProcess(tmp_path_factory.mktemp("logs-cli"), {
        "query": {"api_keys": {"ops": {"key": ADMIN, "role": "admin"}}},
        "masking": {"enabled": False},
    }).start()
    try:
        now = time.time_ns()
        _send(proc.endpoint, log_record(HOSTILE_BODY, time_unix_nano=now, attributes={
            "user.id": "mallory\x1b[1m", "event.name": "EV\x1b[5m", "status": "ok\x1b[0m"}),
            service=HOSTILE_SERVICE)
        _send(proc.endpoint, *(log_record(f"order {i} shipped", time_unix_nano=now + i)
                               for i in range(SEEDED - 1)), service="shop")
        yield proc
    finally:
        proc.stop()


def logs(endpoint: str, *args: str, key: str = ADMIN) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sluice_collector", "logs", *args, "--endpoint", endpoint],
        capture_output=True, timeout=60, env={**os.environ, "SLUICE_API_KEY": key})


def test_a_query_never_finds_its_own_audit_record(receiver: ReceiverProcess) -> None:
    """Every call writes an audit record holding its filter, before it reads. `--text NEEDLE`
    used to return that very record; reads now stay in the audit trail but out of results."""
    needle = f"needle-{uuid.uuid4().hex}"  # no app logged it
    for _ in range(2):
        done = logs(receiver.endpoint, "query", "--text", needle, "--json")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b""
    # Stats count what apps sent, however many reads came before.
    stats = logs(receiver.endpoint, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    counted = json.loads(stats.stdout)
    assert int(counted["total"]) == SEEDED
    assert "audit" not in {c["key"] for c in counted.get("by_category", [])}
    # Asked for, the reads are there: the audit trail keeps every one.
    reads = logs(receiver.endpoint, "query", "--text", needle, "--include-reads", "--json")
    assert reads.returncode == 0, reads.stderr
    found = [json.loads(line) for line in reads.stdout.splitlines()]
    assert len(found) == 3  # the two queries above and this one
    assert {r["event_name"] for r in found} == {"audit.logs.read"}
    assert all(needle in r["attributes"]["audit.filter"] for r in found)
    by_event = logs(receiver.endpoint, "query", "--event-type", "audit.logs.read", "--text", needle,
                    "--json")
    assert len(by_event.stdout.splitlines()) == 4
    # The files keep every read too.
    assert sum(needle in json.dumps(r) for r in receiver.read("audit")) >= 4


def test_human_output_never_carries_control_characters(receiver: ReceiverProcess) -> None:
    """`sluice logs query` printed ESC[33m from a log body raw; every human output escapes
    control and bidi characters, and JSON output stays the stored line exactly."""
    outputs = {
        "query": logs(receiver.endpoint, "query"),
        "tail": logs(receiver.endpoint, "tail", "-n", "50"),
        "stats": logs(receiver.endpoint, "stats"),
        "export txt": logs(receiver.endpoint, "export", "--format", "txt"),
        "export csv": logs(receiver.endpoint, "export", "--format", "csv"),
    }
    for name, done in outputs.items():
        assert done.returncode == 0, (name, done.stderr)
        shown = done.stdout.replace(b"\r\n", b"\n") if name == "export csv" else done.stdout  # RFC 4180
        for raw in RAW_CONTROLS:
            assert raw not in shown, (name, raw, done.stdout)
    for name in ("query", "tail", "export txt", "export csv"):
        text = outputs[name].stdout.decode()
        assert "\\x1b[33mYELLOW\\x1b[0m paid\\r\\x9b2J fake \\u202eevil" in text, name
        assert "shop\\x1b]0;pwned\\x07" in text, name
    assert "mallory\\x1b[1m" in outputs["query"].stdout.decode()
    assert "EV\\x1b[5m" in outputs["stats"].stdout.decode()
    # JSON is for programs: the stored line, exactly (JSON itself escapes C0 controls).
    exact = logs(receiver.endpoint, "query", "--json", "--service", HOSTILE_SERVICE)
    (line,) = exact.stdout.decode().splitlines()
    assert json.loads(line)["body"] == HOSTILE_BODY
    jsonl = logs(receiver.endpoint, "export", "--format", "jsonl", "--service", HOSTILE_SERVICE)
    assert jsonl.stdout.decode().splitlines() == [line]


def test_a_receiver_without_the_query_api_is_named_with_the_way_to_turn_it_on(tmp_path: Path) -> None:
    proc = ReceiverProcess(tmp_path).start()
    try:
        done = logs(proc.endpoint, "query")
    finally:
        proc.stop()
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert lines == [f"sluice logs: the receiver at {proc.endpoint} does not serve the query API "
                     "(it is off there): give it query.api_keys in its config (docs/query.md) "
                     "and restart it"]


def test_no_receiver_at_the_endpoint_is_one_line() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{probe.getsockname()[1]}"
    done = logs(endpoint, "query")
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        f"sluice logs: cannot reach a receiver at {endpoint} (Connection refused); is it running, "
        "and is --endpoint its OTLP/gRPC address?"]


def test_an_endpoint_that_never_answers_is_given_up_on_after_timeout() -> None:
    """A TCP listener that accepts and says nothing (not a gRPC server, or a hung one): without
    a deadline `sluice logs` would wait forever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        done = logs(endpoint, "query", "--timeout", "1")
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        f"sluice logs: no answer from {endpoint} within 1 s (--timeout); is --endpoint the "
        "receiver's OTLP/gRPC address, and is it overloaded? Narrow --since/--until, or raise "
        "--timeout"]


def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error() -> None:
    done = logs("127.0.0.1:1", "query", "--timeout", "soon")
    assert done.returncode == 2
    assert "--timeout: got 'soon'; expected a number of seconds" in done.stderr.decode()


def test_a_reader_that_goes_away_ends_the_command_quietly(receiver: ReceiverProcess) -> None:
    """`sluice logs query | head -1`: the pipe closes before the output is written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice_collector", "logs", "query", "--endpoint", receiver.endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "SLUICE_API_KEY": ADMIN})
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before a line was written
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 141
    assert stderr == b""


def test_nonsense_limits_are_usage_errors(receiver: ReceiverProcess) -> None:
    for args, message in ((("query", "--limit", "-5"), "--limit: got -5; expected 1 or more"),
                          (("query", "--limit", "0"), "--limit: got 0; expected 1 or more"),
                          (("export", "--limit", "x"), "--limit: got 'x'; expected a whole number")):
        done = logs(receiver.endpoint, *args)
        assert done.returncode == 2
        assert message in done.stderr.decode()


def test_a_bad_regex_is_named_in_plain_words(receiver: ReceiverProcess) -> None:
    done = logs(receiver.endpoint, "query", "--grep", "(")
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        "sluice logs: INVALID_ARGUMENT: filter.regex: '(' is not a valid RE2 expression (missing ): ()"]


def test_stats_without_durations_says_so(receiver: ReceiverProcess) -> None:
    done = logs(receiver.endpoint, "stats", "--service", "shop")
    assert done.returncode == 0
    assert "avg duration  n/a (no record carries a duration)" in done.stdout.decode()


def test_human_times_say_their_zone(receiver: ReceiverProcess) -> None:
    import re

    done = logs(receiver.endpoint, "query", "--service", "shop")
    lines = done.stdout.decode().splitlines()
    assert len(lines) == SEEDED - 1
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  ", line) for line in lines), lines
