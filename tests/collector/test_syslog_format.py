"""The syslog formatter (exact RFC 5424/3164 bytes, escaping, truncation, framing) and the
`syslog:` config section (defaults, target validation, every problem reported with its key)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sluice_collector.configreader import Section
from sluice_collector.errors import ConfigProblem
from sluice_collector.sinks.syslog.format import (
    BOM,
    TRUNCATION_MARKER,
    Framing,
    SyslogFormat,
    SyslogFormatter,
    cut_utf8,
    escape_param_value,
    frame,
    parse_facility,
    sd_name,
    syslog_severity,
)
from sluice_collector.sinks.syslog.sink import SyslogConfig, SyslogTarget
from tests.otlp_builders import log_record, logs_request

TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = bytes.fromhex("00f067aa0ba902b7")
T0 = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z


def format_one(formatter: SyslogFormatter, category: str = "security", *,
               resource: dict[str, Any] | None = None, **record: Any) -> tuple[bytes, bool]:
    record.setdefault("time_unix_nano", T0)
    request = logs_request(log_record(**record), service="checkout",
                           resource={"host.name": "web-1", "process.pid": 4242, **(resource or {})})
    rl = request.resource_logs[0]
    out = formatter(category, rl.resource, rl.scope_logs[0].log_records[0])
    return out.data, out.truncated


# -- mapping ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("number", "expected"),
    [(1, 7), (4, 7), (5, 7), (8, 7), (9, 6), (10, 5), (12, 5), (13, 4), (16, 4), (17, 3), (20, 3),
     (21, 2), (24, 2)],
)
def test_otel_severity_ranges_map_to_the_documented_syslog_severities(number: int, expected: int) -> None:
    assert syslog_severity(number) == expected


def test_unspecified_severity_number_falls_back_to_text_then_informational() -> None:
    assert syslog_severity(0, "error") == 3
    assert syslog_severity(0, "WARNING") == 4
    assert syslog_severity(0, "") == 6
    assert syslog_severity(0, "chatty") == 6


def test_facilities_parse_by_name_or_number_and_refuse_anything_else() -> None:
    assert parse_facility("authpriv") == 10
    assert parse_facility("LOCAL7") == 23
    assert parse_facility(16) == 16
    assert parse_facility("3") == 3
    assert parse_facility(24) is None
    assert parse_facility("local8") is None


def test_default_facility_per_category_goes_into_pri() -> None:
    f = SyslogFormatter()
    assert [f.facility(c) for c in ("security", "audit", "access", "error", "app", "other")] == [
        10, 16, 17, 1, 1, 1
    ]
    warn_security, _ = format_one(f, "security", severity=13)
    assert warn_security.startswith(b"<84>1 ")  # 10 * 8 + 4


# -- RFC 5424 ---------------------------------------------------------------------------------
def test_rfc5424_message_has_every_header_field_sd_and_bom_body() -> None:
    data, truncated = format_one(SyslogFormatter(), "security", body="login failed for ****",
                                 severity=17, trace_id=TRACE, span_id=SPAN)
    assert not truncated
    assert data == (
        b"<83>1 2023-11-14T22:13:20.123456Z web-1 checkout 4242 security "
        b'[otel@32473 trace_id="4bf92f3577b34da6a3ce929d0e0e4736" span_id="00f067aa0ba902b7"] '
        + BOM + b"login failed for ****"
    )


def test_missing_optional_fields_become_nilvalues() -> None:
    f = SyslogFormatter(hostname="fixed-host")
    request = logs_request(log_record("x", time_unix_nano=T0))
    request.resource_logs[0].resource.ClearField("attributes")
    rl = request.resource_logs[0]
    data = f("app", rl.resource, rl.scope_logs[0].log_records[0]).data
    assert data == b"<14>1 2023-11-14T22:13:20.123456Z fixed-host - - app - " + BOM + b"x"


def test_record_without_timestamp_uses_observed_time_then_now() -> None:
    f = SyslogFormatter()
    data, _ = format_one(f, time_unix_nano=0, body="x")
    stamp = data.split(b" ")[1].decode()
    assert time.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").tm_year >= 2024


def test_the_largest_possible_timestamp_still_formats() -> None:
    data, _ = format_one(SyslogFormatter(), time_unix_nano=2**64 - 1, body="x")
    assert data.split(b" ")[1] == b"2554-07-21T23:34:33.709551Z"


def test_header_tokens_are_cut_and_made_printable_ascii() -> None:
    long_service = "my service é" + "x" * 60
    request = logs_request(log_record("b", time_unix_nano=T0), service=long_service,
                           resource={"host.name": "höst name"})
    rl = request.resource_logs[0]
    data = SyslogFormatter()("cat egory", rl.resource, rl.scope_logs[0].log_records[0]).data
    fields = data.split(b" ")
    assert fields[2] == b"h_st_name"
    assert fields[3] == (b"my_service__" + b"x" * 36)
    assert len(fields[3]) == 48
    assert fields[5] == b"cat_egory"


def test_sd_param_values_escape_quote_backslash_and_bracket_and_keep_newlines() -> None:
    assert escape_param_value('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    f = SyslogFormatter(sd_attributes=["user.id", "note", "absent", "count", "ok"])
    data, _ = format_one(f, "audit", body="x", attributes={
        "user.id": "u-1", "note": 'say "hi" [x] \\o/\nnext line', "count": 3, "ok": True,
    })
    assert b'[otel@32473 user.id="u-1" note="say \\"hi\\" [x\\] \\\\o/\nnext line" count="3" ok="true"]' in data


def test_sd_attributes_fall_back_to_resource_attributes() -> None:
    f = SyslogFormatter(sd_attributes=["deployment.environment"])
    data, _ = format_one(f, body="x", resource={"deployment.environment": "prod"})
    assert b'[otel@32473 deployment.environment="prod"]' in data


def test_sd_names_drop_forbidden_characters_and_stop_at_32() -> None:
    assert sd_name('a b=c]d"e') == "a_b_c_d_e"
    assert len(sd_name("x" * 40)) == 32
    f = SyslogFormatter(sd_attributes=["weird key=1"])
    data, _ = format_one(f, body="x", attributes={"weird key=1": "v"})
    assert b'weird_key_1="v"' in data


def test_non_ascii_body_is_utf8_after_a_bom() -> None:
    data, _ = format_one(SyslogFormatter(), body="Grüße — 日本語 🚀")
    assert data.endswith(BOM + "Grüße — 日本語 🚀".encode())


def test_structured_body_is_compact_json() -> None:
    data, _ = format_one(SyslogFormatter(), body={"event": "login", "ok": False})
    assert data.endswith(BOM + b'{"event":"login","ok":false}')


# -- truncation -------------------------------------------------------------------------------
def test_cut_utf8_never_splits_a_character() -> None:
    text = "aé日🚀".encode()
    for limit in range(len(text) + 1):
        cut = cut_utf8(text, limit)
        assert len(cut) <= limit
        cut.decode("utf-8")  # raises if split


def test_long_message_is_cut_to_max_bytes_at_a_char_boundary_with_marker() -> None:
    f = SyslogFormatter(max_message_bytes=600)
    data, truncated = format_one(f, body="日本" * 400, trace_id=TRACE, span_id=SPAN)
    assert truncated
    assert len(data) <= 600
    assert data.endswith(TRUNCATION_MARKER.encode())
    data.decode("utf-8")
    assert len(data) > 590  # cut close to the limit, not far below it


def test_message_exactly_at_the_limit_is_not_truncated() -> None:
    f = SyslogFormatter(max_message_bytes=600)
    head, _ = format_one(f, body="")
    body_room = 600 - len(head) - 1 - len(BOM)
    data, truncated = format_one(f, body="a" * body_room)
    assert not truncated
    assert len(data) == 600


def test_oversized_sd_attributes_give_way_but_keep_trace_ids_and_a_wellformed_header() -> None:
    f = SyslogFormatter(max_message_bytes=600, sd_attributes=["blob"])
    data, truncated = format_one(f, body="short", attributes={"blob": "z" * 2000},
                                 trace_id=TRACE, span_id=SPAN)
    assert b"blob=" not in data
    assert b'[otel@32473 trace_id="4bf92f3577b34da6a3ce929d0e0e4736" span_id="00f067aa0ba902b7"] ' in data
    assert data.endswith(BOM + b"short")
    assert not truncated


def test_max_message_bytes_is_never_below_the_rfc_minimum_of_480() -> None:
    assert SyslogFormatter(max_message_bytes=100).max_message_bytes == 480


# -- RFC 3164 ---------------------------------------------------------------------------------
def test_rfc3164_message_has_pri_local_timestamp_host_tag_pid_and_trace_ids_at_the_end() -> None:
    f = SyslogFormatter(syslog_format=SyslogFormat.RFC3164)
    data, _ = format_one(f, "error", body="boom", severity=17, trace_id=TRACE, span_id=SPAN)
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(T0 // 10**9))
    stamp = stamp[:4] + stamp[4:6].replace("0", " ", 1) + stamp[6:] if stamp[4] == "0" else stamp
    assert data == (
        f"<11>{stamp} web-1 checkout[4242]: boom "
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7"
    ).encode()


def test_rfc3164_day_of_month_is_space_padded() -> None:
    from sluice_collector.sinks.syslog.format import rfc3164_time

    # 2024-03-05 12:00:00 UTC is the 5th everywhere from UTC-11 to UTC+11.
    assert rfc3164_time(1_709_640_000 * 10**9)[3:7] == "  5 "


def test_rfc3164_truncation_keeps_the_trace_ids() -> None:
    f = SyslogFormatter(syslog_format=SyslogFormat.RFC3164, max_message_bytes=500)
    data, truncated = format_one(f, body="x" * 2000, trace_id=TRACE)
    assert truncated
    assert len(data) <= 500
    assert data.endswith(TRUNCATION_MARKER.encode() + b" trace_id=4bf92f3577b34da6a3ce929d0e0e4736")


# -- framing ----------------------------------------------------------------------------------
def test_octet_counting_counts_utf8_bytes() -> None:
    message = "<14>1 - - - - - - é".encode()
    assert frame(message, Framing.OCTET_COUNTING) == b"%d %s" % (len(message), message)
    assert frame(message, Framing.OCTET_COUNTING).startswith(b"20 ")


def test_lf_framing_escapes_embedded_newlines_like_rsyslog() -> None:
    assert frame(b"a\nb", Framing.LF) == b"a#012b\n"


# -- config -----------------------------------------------------------------------------------
def parse(data: dict[str, Any]) -> tuple[SyslogConfig, list[str]]:
    problems: list[ConfigProblem] = []
    section = Section(data, "syslog", problems)
    config = SyslogConfig.from_section(section)
    section.check_unknown()
    return config, [str(p) for p in problems]


def test_defaults_are_off_with_the_dev_log_then_udp_fallback_chain() -> None:
    config, problems = parse({})
    assert problems == []
    assert not config.enabled
    assert [t.url for t in config.targets] == ["unix:///dev/log", "udp://127.0.0.1:514"]
    assert config.format is SyslogFormat.RFC5424
    assert config.categories == ("security", "audit", "error", "alerts")
    assert config.max_message_bytes == 8192
    assert config.spool_max_bytes == 64 * 1024 * 1024


def test_setting_a_target_enables_syslog_unless_enabled_is_false() -> None:
    assert parse({"target": "udp://127.0.0.1:514"})[0].enabled
    assert not parse({"target": "udp://127.0.0.1:514", "enabled": False})[0].enabled


def test_every_key_is_parsed(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config, problems = parse({
        "target": ["unix:///dev/log", "tls://[::1]:6514"], "format": "rfc3164", "framing": "lf",
        "categories": ["audit"], "facilities": {"audit": "local4", "error": 3},
        "sd_attributes": ["user.id"], "max_message_bytes": 4096,
        "tls": {"ca_file": str(ca), "server_name": "syslog.example", "verify": False},
        "spool": {"directory": str(tmp_path / "s"), "max_bytes": "1MiB", "protected": ["audit", "security"]},
        "connect_timeout_s": "2s", "send_timeout_s": 3, "backoff_initial_s": "100ms",
        "backoff_max_s": "5s", "hostname": "edge-1",
    })
    assert problems == []
    assert [(t.scheme, t.host, t.port, t.path) for t in config.targets] == [
        ("unix", "", 0, "/dev/log"), ("tls", "::1", 6514, "")
    ]
    assert config.framing is Framing.LF
    assert config.facilities == {"audit": 20, "error": 3}
    assert config.tls.ca_file == str(ca)
    assert not config.tls.verify
    assert config.spool_max_bytes == 1024 * 1024
    assert config.spool_protected == ("audit", "security")
    assert (config.connect_timeout_s, config.send_timeout_s) == (2.0, 3.0)
    assert (config.backoff_initial_s, config.backoff_max_s) == (0.1, 5.0)
    assert config.hostname == "edge-1"


def test_bad_targets_are_reported_with_their_list_index_and_the_accepted_forms() -> None:
    _, problems = parse({"target": ["udp://127.0.0.1:514", "tcp://x", "http://h:1", "unix:dev/log"]})
    accepted = ("expected unix:///path/to/socket, udp://HOST:PORT, tcp://HOST:PORT or "
                "tls://HOST:PORT (PORT from 1 to 65535)")
    assert problems == [
        f"syslog.target[1]: got 'tcp://x'; {accepted}",
        f"syslog.target[2]: got 'http://h:1'; {accepted}",
        f"syslog.target[3]: got 'unix:dev/log'; {accepted}",
    ]


def test_all_problems_of_the_section_are_reported_at_once(tmp_path: Path) -> None:
    _, problems = parse({
        "target": "tcp://h:99999", "format": "json", "framing": "nul",
        "facilities": {"audit": "local9"}, "max_message_bytes": 100,
        "tls": {"ca_file": str(tmp_path / "missing.pem"), "cert_file": str(tmp_path)},
        "spool": {"max_bytes": "lots"}, "colour": "blue",
    })
    by_key = {p.split(":", 1)[0]: p for p in problems}
    assert sorted(by_key) == [
        "syslog.colour", "syslog.facilities.audit", "syslog.format", "syslog.framing",
        "syslog.max_message_bytes", "syslog.spool.max_bytes", "syslog.target",
        "syslog.tls.ca_file", "syslog.tls.cert_file",
    ], problems
    assert "got 'json'; expected one of: rfc5424, rfc3164" in by_key["syslog.format"]
    assert "got 'local9'; expected a facility name (kern, user," in by_key["syslog.facilities.audit"]
    assert "unknown key" in by_key["syslog.colour"]


def test_target_url_parser_accepts_only_the_four_schemes() -> None:
    assert SyslogTarget.parse("udp://localhost:514") is not None
    assert SyslogTarget.parse("tcp://10.0.0.1:0") is None
    assert SyslogTarget.parse("tcp://h:1/path") is None
    assert SyslogTarget.parse("unix:///run/systemd/journal/syslog") is not None
