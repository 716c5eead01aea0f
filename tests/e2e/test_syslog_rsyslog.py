"""`SyslogSink` against a real rsyslogd: exact bytes over UDP, TCP (octet counting and LF), TLS
(gtls, throwaway CA, client certificate), unix datagram (imuxsock) and unix stream (imptcp)
sockets; the fallback chain; and outages — nothing acknowledged is lost while syslog is down.

The outage test runs `SLUICE_SYSLOG_OUTAGE_S` seconds of downtime (default 5; the issue's
60-second variant is `SLUICE_SYSLOG_OUTAGE_S=60`).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice_collector.batch import Batch, Signal
from sluice_collector.configreader import Section
from sluice_collector.errors import ConfigProblem, SinkError
from sluice_collector.service.config import parse_config
from sluice_collector.sinks.syslog.format import BOM, TRUNCATION_MARKER
from sluice_collector.sinks.syslog.sink import SyslogConfig, SyslogSink
from sluice_collector.telemetry import ReceiverTelemetry
from tests.otlp_builders import log_record, logs_request
from tests.rsyslog_server import RSYSLOGD, RsyslogServer, free_port
from tests.tlsutil import TlsFiles, make_tls_files

pytestmark = pytest.mark.skipif(not Path(RSYSLOGD).exists(), reason="rsyslogd is not installed")

TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = bytes.fromhex("00f067aa0ba902b7")
T0 = 1_700_000_000_123_456_789
HEAD = b"2023-11-14T22:13:20.123456Z web-1 checkout 4242"
FAST = {"backoff_initial_s": "50ms", "backoff_max_s": "500ms", "connect_timeout_s": 2}


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[RsyslogServer]:
    server = RsyslogServer(tmp_path / "rsyslog").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def syslog_config(settings: dict[str, Any]) -> SyslogConfig:
    problems: list[ConfigProblem] = []
    section = Section({**FAST, **settings}, "syslog", problems)
    config = SyslogConfig.from_section(section)
    section.check_unknown()
    assert problems == []
    return config


class Running:
    """A started sink plus the telemetry it counts into; stops with the test."""

    def __init__(self, config: SyslogConfig, spool_dir: Path) -> None:
        self.telemetry = ReceiverTelemetry()
        self.sink = SyslogSink(config, self.telemetry, spool_dir)
        self.sink.start()

    def metric(self, name: str, **labels: str) -> float:
        return self.telemetry.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def make_sink(tmp_path: Path) -> Iterator[Any]:
    running: list[Running] = []

    def make(settings: dict[str, Any], spool_dir: Path | None = None) -> Running:
        r = Running(syslog_config(settings), spool_dir or tmp_path / "spool")
        running.append(r)
        return r

    yield make
    for r in running:
        r.sink.shutdown()


def batch(*records: tuple[str, Any], resource: dict[str, Any] | None = None) -> Batch:
    """One Export request whose records are routed by hand: (category, LogRecord) pairs."""
    request = logs_request(*(rec for _, rec in records), service="checkout",
                           resource={"host.name": "web-1", "process.pid": 4242, **(resource or {})})
    out = Batch(Signal.LOGS, request, time.time_ns())
    refs = out.records()
    for (category, _), ref in zip(records, refs, strict=True):
        out.routes.setdefault(category, []).append(ref)
    return out


def rec(body: Any = "hello", **kwargs: Any) -> Any:
    kwargs.setdefault("time_unix_nano", T0)
    return log_record(body, **kwargs)


# -- transports and exact bytes -------------------------------------------------------------
def test_udp_delivers_the_exact_rfc5424_message(rsyslog: RsyslogServer, make_sink: Any) -> None:
    running = make_sink({"target": f"udp://127.0.0.1:{rsyslog.udp_port}"})
    running.sink.consume(batch(("error", rec("db down", severity=17, trace_id=TRACE, span_id=SPAN))))
    assert running.sink.force_flush(5)
    assert rsyslog.wait_for(1) == [
        b"<11>1 " + HEAD + b' error [otel@32473 trace_id="4bf92f3577b34da6a3ce929d0e0e4736" '
        b'span_id="00f067aa0ba902b7"] ' + BOM + b"db down"
    ]
    assert running.metric("sluice_syslog_sent_total", target=f"udp://127.0.0.1:{rsyslog.udp_port}") == 1


def test_tcp_octet_counting_keeps_newlines_sd_escapes_and_utf8_in_one_message(
    rsyslog: RsyslogServer, make_sink: Any
) -> None:
    running = make_sink({"target": f"tcp://127.0.0.1:{rsyslog.tcp_port}",
                         "sd_attributes": ["note", "user.id"]})
    body = "Grüße\nzweite Zeile — 日本語"
    note = 'he said "no" [x] C:\\temp\nline 2'
    running.sink.consume(batch(
        ("security", rec(body, severity=13, attributes={"note": note, "user.id": "u-7"})),
        ("security", rec("second", severity=9)),
    ))
    assert running.sink.force_flush(5)
    got = rsyslog.wait_for(2)
    assert got == [
        b"<84>1 " + HEAD + b' security [otel@32473 note="he said \\"no\\" [x\\] C:\\\\temp\nline 2" '
        b'user.id="u-7"] ' + BOM + body.encode(),
        b"<86>1 " + HEAD + b" security - " + BOM + b"second",
    ]


def test_tcp_lf_framing_escapes_newlines_so_messages_stay_apart(
    rsyslog: RsyslogServer, make_sink: Any
) -> None:
    running = make_sink({"target": f"tcp://127.0.0.1:{rsyslog.tcp_port}", "framing": "lf"})
    running.sink.consume(batch(("error", rec("one\ntwo")), ("error", rec("three"))))
    assert running.sink.force_flush(5)
    got = rsyslog.wait_for(2)
    assert [m.split(BOM)[1] for m in got] == [b"one#012two", b"three"]


def test_tls_with_a_throwaway_ca_and_client_certificate(
    tmp_path: Path, tls_files: TlsFiles, make_sink: Any
) -> None:
    server = RsyslogServer(tmp_path / "tls-rsyslog", tls=tls_files, require_client_cert=True).start()
    try:
        running = make_sink({
            "target": f"tls://127.0.0.1:{server.tcp_port}",
            "tls": {"ca_file": str(tls_files.ca_cert), "cert_file": str(tls_files.client_cert),
                    "key_file": str(tls_files.client_key)},
        })
        running.sink.consume(batch(("audit", rec("role granted", severity=9))))
        assert running.sink.force_flush(10), running.sink.health()
        assert server.wait_for(1) == [b"<134>1 " + HEAD + b" audit - " + BOM + b"role granted"]
    finally:
        server.kill()


def test_tls_records_sent_around_a_server_restart_all_arrive(
    tmp_path: Path, tls_files: TlsFiles, make_sink: Any
) -> None:
    server = RsyslogServer(tmp_path / "tls-rsyslog", tls=tls_files).start()
    try:
        running = make_sink({"target": f"tls://127.0.0.1:{server.tcp_port}",
                             "tls": {"ca_file": str(tls_files.ca_cert)}})
        running.sink.consume(batch(("error", rec("before"))))
        assert running.sink.force_flush(10)
        server.stop()
        for i in range(10):
            running.sink.consume(batch(("error", rec(f"during {i}"))))
        server.start()
        assert running.sink.force_flush(10)
        got = [m.split(BOM)[1] for m in server.wait_for(11)]
        assert got[0] == b"before"
        assert sorted(set(got[1:])) == sorted(f"during {i}".encode() for i in range(10))
    finally:
        server.kill()


def test_tls_refuses_a_server_the_configured_ca_did_not_sign(
    tmp_path: Path, tls_files: TlsFiles, make_sink: Any
) -> None:
    other_ca = make_tls_files(tmp_path / "other-ca")
    server = RsyslogServer(tmp_path / "tls-rsyslog", tls=tls_files).start()
    try:
        running = make_sink({"target": f"tls://127.0.0.1:{server.tcp_port}",
                             "tls": {"ca_file": str(other_ca.ca_cert)}})
        running.sink.consume(batch(("security", rec("must not leak"))))
        assert not running.sink.force_flush(1.0)
        health = running.sink.health()
        assert health["state"] == "degraded"
        assert health["spool_records"] == 1
        assert "CERTIFICATE_VERIFY_FAILED" in health["last_error"]
        assert server.messages() == []
    finally:
        server.kill()


def test_unusable_client_key_fails_the_start_not_every_connection(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    config = syslog_config({"target": "tls://127.0.0.1:6514",
                            "tls": {"cert_file": str(tls_files.client_cert),
                                    "key_file": str(tls_files.ca_cert)}})  # a certificate, not a key
    sink = SyslogSink(config, ReceiverTelemetry(), tmp_path / "spool")
    with pytest.raises(SinkError, match=r"syslog\.tls"):
        sink.start()
    sink.shutdown()


def test_unix_datagram_socket_like_dev_log(rsyslog: RsyslogServer, make_sink: Any) -> None:
    running = make_sink({"target": f"unix://{rsyslog.dgram_socket}"})
    running.sink.consume(batch(("security", rec("from a datagram", severity=21))))
    assert running.sink.force_flush(5)
    assert rsyslog.wait_for(1) == [b"<82>1 " + HEAD + b" security - " + BOM + b"from a datagram"]


def test_unix_stream_socket_uses_lf_framing_by_default(rsyslog: RsyslogServer, make_sink: Any) -> None:
    running = make_sink({"target": f"unix://{rsyslog.stream_socket}"})
    running.sink.consume(batch(("error", rec("a\nb")), ("error", rec("c"))))
    assert running.sink.force_flush(5)
    assert [m.split(BOM)[1] for m in rsyslog.wait_for(2)] == [b"a#012b", b"c"]


def test_rfc3164_over_udp(rsyslog: RsyslogServer, make_sink: Any) -> None:
    running = make_sink({"target": f"udp://127.0.0.1:{rsyslog.udp_port}", "format": "rfc3164"})
    running.sink.consume(batch(("error", rec("disk full", severity=17, trace_id=TRACE))))
    assert running.sink.force_flush(5)
    [message] = rsyslog.wait_for(1)
    assert re.fullmatch(
        rb"<11>[A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d web-1 checkout\[4242\]: disk full "
        rb"trace_id=4bf92f3577b34da6a3ce929d0e0e4736", message,
    ), message


def test_long_message_is_truncated_to_rsyslogs_default_8k_and_arrives_whole(
    rsyslog: RsyslogServer, make_sink: Any
) -> None:
    running = make_sink({"target": f"tcp://127.0.0.1:{rsyslog.tcp_port}"})
    running.sink.consume(batch(("error", rec("é" * 10_000))))
    assert running.sink.force_flush(5)
    [message] = rsyslog.wait_for(1)
    assert 8192 - 3 <= len(message) <= 8192
    assert message.endswith(TRUNCATION_MARKER.encode())
    message.decode("utf-8")
    assert running.metric("sluice_syslog_truncated_total", category="error") == 1


def test_fallback_chain_uses_the_next_target_when_the_first_is_missing(
    rsyslog: RsyslogServer, make_sink: Any, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such.sock"
    running = make_sink({"target": [f"unix://{missing}", f"tcp://127.0.0.1:{rsyslog.tcp_port}"]})
    running.sink.consume(batch(("error", rec("via fallback"))))
    assert running.sink.force_flush(5)
    assert rsyslog.wait_for(1)[0].endswith(b"via fallback")
    assert running.sink.health()["target"] == f"tcp://127.0.0.1:{rsyslog.tcp_port}"


def test_fallback_chain_returns_to_the_preferred_target_once_it_is_back(
    rsyslog: RsyslogServer, make_sink: Any, tmp_path: Path
) -> None:
    preferred = RsyslogServer(tmp_path / "preferred")  # not started yet
    try:
        running = make_sink({"target": [f"tcp://127.0.0.1:{preferred.tcp_port}",
                                        f"tcp://127.0.0.1:{rsyslog.tcp_port}"]})
        running.sink.consume(batch(("error", rec("to the fallback"))))
        assert running.sink.force_flush(5)
        assert rsyslog.wait_for(1)[0].endswith(b"to the fallback")
        preferred.start()
        time.sleep(1.0)  # backoff_max_s is 500ms: the sender looks for the preferred one again
        running.sink.consume(batch(("error", rec("to the preferred"))))
        assert running.sink.force_flush(5)
        assert preferred.wait_for(1)[0].endswith(b"to the preferred")
        assert len(rsyslog.messages()) == 1
    finally:
        preferred.kill()


# -- outages ---------------------------------------------------------------------------------
def test_acceptance_warn_security_arrives_app_does_not_and_outage_records_follow(
    rsyslog: RsyslogServer, tmp_path: Path
) -> None:
    """The issue's acceptance scenario, with the config parsed as the receiver parses it."""
    config = parse_config(
        f"syslog:\n  target: tcp://127.0.0.1:{rsyslog.tcp_port}\n  format: rfc5424\n"
        "  categories: [security, error]\n  backoff_initial_s: 50ms\n  backoff_max_s: 500ms\n"
    )
    assert config.syslog.enabled
    sink = SyslogSink(config.syslog, ReceiverTelemetry(), tmp_path / "spool")
    sink.start()
    try:
        sink.consume(batch(
            ("security", rec("login failed for user=**** password=[MASKED]", severity=13,
                             trace_id=TRACE, span_id=SPAN)),
            ("app", rec("app chatter")),
        ))
        assert sink.force_flush(5)
        [message] = rsyslog.wait_for(1)
        assert message.startswith(b"<84>1 ")  # authpriv(10) * 8 + warning(4)
        assert b'trace_id="4bf92f3577b34da6a3ce929d0e0e4736"' in message
        assert message.endswith(b"password=[MASKED]")

        rsyslog.stop()
        for i in range(20):
            sink.consume(batch(("error", rec(f"while down {i}", severity=17)), ("app", rec("no"))))
        time.sleep(0.5)
        assert sink.health()["spool_records"] == 20
        rsyslog.start()
        assert sink.force_flush(10)
        got = rsyslog.wait_for(21)
        assert [m.split(BOM)[1] for m in got[1:]] == [f"while down {i}".encode() for i in range(20)]
        assert not any(b"app chatter" in m or m.endswith(BOM + b"no") for m in got)
    finally:
        sink.shutdown()


def test_udp_records_refused_by_a_closed_port_are_resent_once_it_opens(
    rsyslog: RsyslogServer, make_sink: Any
) -> None:
    """On loopback the kernel reports the closed port (ICMP), which is as good as an error."""
    rsyslog.stop()
    running = make_sink({"target": f"udp://127.0.0.1:{rsyslog.udp_port}"})
    running.sink.consume(batch(*(("error", rec(f"udp {i}")) for i in range(5))))
    time.sleep(1.0)
    assert running.sink.health()["spool_records"] == 5
    rsyslog.start()
    assert running.sink.force_flush(10)
    got = [m.split(BOM)[1] for m in rsyslog.wait_for(5)]
    assert sorted(set(got)) == [f"udp {i}".encode() for i in range(5)]


def test_spooled_records_survive_a_receiver_restart_while_syslog_is_down(
    rsyslog: RsyslogServer, make_sink: Any, tmp_path: Path
) -> None:
    target = {"target": f"tcp://127.0.0.1:{rsyslog.tcp_port}"}
    rsyslog.stop()
    first = make_sink(target, tmp_path / "spool")
    first.sink.consume(batch(*(("audit", rec(f"audit {i}")) for i in range(5))))
    first.sink.shutdown()
    rsyslog.start()
    second = make_sink(target, tmp_path / "spool")
    assert second.sink.force_flush(10)
    assert [m.split(BOM)[1] for m in rsyslog.wait_for(5)] == [f"audit {i}".encode() for i in range(5)]


def test_consume_stays_fast_while_syslog_is_down(rsyslog: RsyslogServer, make_sink: Any) -> None:
    rsyslog.stop()
    running = make_sink({"target": f"tcp://127.0.0.1:{rsyslog.tcp_port}"})
    # A consume that waited for delivery would never return while rsyslog is down.
    consumer = threading.Thread(target=lambda: [
        running.sink.consume(batch(*(("error", rec("x" * 200)) for _ in range(20))))
        for _ in range(50)], daemon=True)
    consumer.start()
    consumer.join(60)
    assert not consumer.is_alive(), "consume waited for syslog"
    assert running.metric("sluice_syslog_spooled_total", category="error") == 1000


def test_full_spool_drops_oldest_ordinary_records_and_refuses_audit_it_cannot_keep(
    make_sink: Any,
) -> None:
    running = make_sink({"target": f"tcp://127.0.0.1:{free_port()}", "categories": ["error", "audit"],
                         "spool": {"max_bytes": "64KiB"}})
    for i in range(100):
        running.sink.consume(batch(*(("error", rec(f"e{i}-{j} " + "x" * 150)) for j in range(10))))
    dropped = running.metric("sluice_syslog_dropped_total", reason="spool_full")
    health = running.sink.health()
    assert health["spool_bytes"] <= 64 * 1024
    assert dropped > 0
    assert health["spool_records"] + dropped == 1000

    def fill_with_audit() -> None:
        for i in range(1000):
            running.sink.consume(batch(("audit", rec(f"a{i} " + "y" * 150))))

    with pytest.raises(SinkError, match="protected"):
        fill_with_audit()
    assert running.sink.health()["spool_records"] < 1000
    assert running.metric("sluice_syslog_dropped_total", reason="spool_full") == 1000  # no error left


@pytest.mark.slow
def test_steady_stream_through_an_outage_loses_nothing(rsyslog: RsyslogServer, make_sink: Any) -> None:
    """A producer sends 10 records every 50 ms before, during and after `SLUICE_SYSLOG_OUTAGE_S`
    seconds of rsyslog being stopped; every record arrives once rsyslog is back (at-least-once:
    duplicates around the stop are tolerated and reported, losses are not)."""
    outage_s = float(os.environ.get("SLUICE_SYSLOG_OUTAGE_S", "5"))
    running = make_sink({"target": f"tcp://127.0.0.1:{rsyslog.tcp_port}"})
    stop = threading.Event()
    produced: list[int] = []

    def produce() -> None:
        n = 0
        while not stop.is_set():
            running.sink.consume(batch(*(("error", rec(f"seq={n + i}")) for i in range(10))))
            produced.extend(range(n, n + 10))
            n += 10
            time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(1.0)
        rsyslog.stop()
        time.sleep(outage_s)
        rsyslog.start()
        time.sleep(1.0)
    finally:
        stop.set()
        producer.join()
    assert running.sink.force_flush(30)
    got = rsyslog.wait_for(len(produced), timeout_s=30)
    seqs = Counter(int(m.rsplit(b"seq=", 1)[1]) for m in got)
    missing = sorted(set(produced) - set(seqs))
    assert missing == [], f"{len(missing)} lost, e.g. {missing[:10]}"
    duplicates = sum(c - 1 for c in seqs.values())
    assert duplicates <= 300, duplicates
    print(f"outage {outage_s:g}s: {len(produced)} records, {duplicates} duplicates")
