"""`sluice logs` argument parsing: times, severities and filters as the server receives them."""

from __future__ import annotations

import argparse

import pytest

from sluice_collector.query.client import _filter, parse_severity, parse_time
from sluice_collector.service.cli import _parser

NOW = 1_800_000_000.0


def test_times_are_rfc3339_or_relative_to_now() -> None:
    assert parse_time("15m", NOW) == int((NOW - 900) * 1e9)
    assert parse_time("2h", NOW) == int((NOW - 7200) * 1e9)
    assert parse_time("7d", NOW) == int((NOW - 7 * 86400) * 1e9)
    assert parse_time("2026-11-23T08:00:00Z") == 1_795_420_800 * 10**9
    assert parse_time("2026-11-23T09:00:00.5+01:00") == 1_795_420_800 * 10**9 + 500_000_000
    with pytest.raises(argparse.ArgumentTypeError, match="15m, 2h, 7d"):
        parse_time("yesterday")


def test_severity_names_and_numbers() -> None:
    assert parse_severity("error") == 17
    assert parse_severity("9") == 9
    with pytest.raises(argparse.ArgumentTypeError):
        parse_severity("LOUD")


def test_flags_become_the_request_filter() -> None:
    args = _parser().parse_args([
        "logs", "query", "--category", "app", "--category", "error", "--severity", "WARN",
        "--trace-id", "ab" * 16, "--user", "alice", "--event-type", "LOGIN", "--grep", "x+",
        "--attr", "http.route=/a=b", "--api-key", "k",
    ])
    f = _filter(args)
    assert list(f.categories) == ["app", "error"]
    assert (f.severity_at_least, f.trace_id, f.user_id, f.event_type, f.regex) == (
        13, "ab" * 16, "alice", "LOGIN", "x+")
    assert dict(f.attribute_equals) == {"http.route": "/a=b"}
