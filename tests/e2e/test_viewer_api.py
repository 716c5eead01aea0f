"""The viewer's JSON API and the telemetry port it shares with /metrics and /healthz, over real
HTTP against a real `sluice receiver run`: the key only in its header, the same scope and audit
as LogQuery, cross-site refusal, assets, and slow clients that cannot starve the port."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.e2e.viewer_harness import ADMIN, ALICE, Sender, api, start_receiver, wait_indexed
from tests.receiver_process import ReceiverProcess


@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    p = start_receiver(tmp_path_factory.mktemp("viewer-api"))
    sender = Sender(p.endpoint, "api-test")
    try:
        now = time.time_ns()
        for i, user in enumerate(("alice", "bob", "alice")):
            sender.log(f"api-record {i} of {user}", t=now + i, attributes={"user.id": user})
    finally:
        sender.close()
    wait_indexed(p.status_url, "text=api-record", 3)
    yield p
    p.stop()


def test_the_key_is_only_accepted_in_its_header(proc: ReceiverProcess) -> None:
    base = proc.status_url
    assert api(base, "/api/v1/logs", None)[0] == 401
    assert api(base, f"/api/v1/logs?api_key={ADMIN}&key={ADMIN}", None)[0] == 401
    assert api(base, "/api/v1/logs", None, {"Authorization": f"ApiKey {ADMIN}"})[0] == 401
    assert api(base, "/api/v1/logs", "wrong-key-0123456789abcdef")[0] == 401
    status, body, headers = api(base, "/api/v1/session", ADMIN)
    assert status == 200
    assert body["admin"] is True
    assert {k.lower(): v for k, v in headers.items()}["cache-control"] == "no-store"


def test_a_user_key_reads_through_the_same_scope_as_logquery(proc: ReceiverProcess) -> None:
    status, body, _ = api(proc.status_url, "/api/v1/logs?text=api-record&limit=1000", ALICE)
    assert status == 200
    assert sorted(r["record"]["body"] for r in body["records"]) == ["api-record 0 of alice",
                                                                     "api-record 2 of alice"]
    status, body, _ = api(proc.status_url, "/api/v1/logs?category=audit", ALICE)
    assert status == 403
    assert body["error"]["code"] == "PERMISSION_DENIED"
    assert api(proc.status_url, "/api/v1/audit/chains", ALICE)[0] == 403
    status, body, _ = api(proc.status_url, "/api/v1/stats?text=api-record", ALICE)
    assert status == 200
    assert body["total"] == 2


def test_every_read_is_audited_with_its_channel(proc: ReceiverProcess) -> None:
    marker = f"audited-{time.time_ns()}"
    assert api(proc.status_url, f"/api/v1/logs?text={marker}", ALICE)[0] == 200
    # The admin's own polling reads are audited too (and match the marker): pick alice's.
    records = wait_indexed(proc.status_url, f"category=audit&include_reads=1&text={marker}&attr=audit.actor=alice", 1)
    attributes = records[0]["record"]["attributes"]
    assert attributes["audit.channel"] == "http"
    assert attributes["audit.action"] == "LogQuery.Query"
    assert json.loads(attributes["audit.filter"])["text"] == marker


def test_bad_filters_are_invalid_argument_not_a_crash(proc: ReceiverProcess) -> None:
    for query in ("regex=(", "since=yesterday", "trace_id=xyz", "severity=LOUD", "attr=novalue",
                  "order=sideways", "page_token=garbage"):
        status, body, _ = api(proc.status_url, f"/api/v1/logs?{query}", ADMIN)
        assert status == 400, query
        assert body["error"]["code"] == "INVALID_ARGUMENT"


def test_assets_are_served_from_the_package_with_security_headers(proc: ReceiverProcess) -> None:
    with urllib.request.urlopen(proc.status_url + "/ui/app.js", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/ui/../pyproject.toml", "/ui/%2e%2e/core.py", "/ui/core.py", "/ui/nope.js"):
        request = urllib.request.Request(proc.status_url + path)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 404, path
    request = urllib.request.Request(proc.status_url + "/api/v1/logs", method="POST",
                                     headers={"X-Api-Key": ADMIN})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 405


def test_tail_streams_server_sent_events_of_new_records(proc: ReceiverProcess) -> None:
    host, port = proc.status_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(f"GET /api/v1/tail?text=tail-sse HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"X-Api-Key: {ADMIN}\r\n\r\n".encode())
        received = b""
        while b"event: ready" not in received:
            received += sock.recv(65536)
        assert b"text/event-stream" in received
        sender = Sender(proc.endpoint, "api-test")
        try:
            sender.log("tail-sse arrives", t=time.time_ns())
        finally:
            sender.close()
        deadline = time.monotonic() + 20
        while b"tail-sse arrives" not in received and time.monotonic() < deadline:
            received += sock.recv(65536)
        assert b"event: records" in received
        assert b"tail-sse arrives" in received


def test_idle_and_half_sent_requests_cannot_starve_the_port(proc: ReceiverProcess) -> None:
    host, port = proc.status_url.removeprefix("http://").rsplit(":", 1)
    stalled = []
    for _ in range(50):
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        stalled.append(s)
    try:
        with urllib.request.urlopen(proc.status_url + "/healthz", timeout=60) as response:
            assert response.status == 200
        # Answered while every stalled connection was still held open (not after the server
        # gave up on them): no timing is asserted, only the order of events.
        for s in stalled:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
            s.setblocking(True)
        # The server closes every connection that has not sent a whole request head in time.
        for s in stalled:
            assert s.recv(1) == b""
    finally:
        for s in stalled:
            s.close()
