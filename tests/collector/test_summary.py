"""`ActivityReporter`: the receiver's periodic one-line INFO summary of what it did."""

from __future__ import annotations

import logging

import grpc
import pytest

from sluice_collector.service.summary import ActivityReporter
from sluice_collector.testing import InMemorySink, start_receiver
from tests.otlp_builders import log_record, logs_request, span, spans_request

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_period_with_records_per_signal_and_category_and_refusals() -> None:
    receiver = start_receiver({"telemetry": {"summary_interval_s": 0}}, sinks=[InMemorySink()])
    clock = Clock()
    reporter = ActivityReporter(receiver.telemetry, 60, clock=clock)
    try:
        assert reporter.summary() is None  # nothing happened: nothing to say
        with grpc.insecure_channel(receiver.endpoint) as channel:
            logs = channel.unary_unary(LOGS_EXPORT)
            logs(logs_request(log_record("a"), log_record("b"), log_record("boom", severity=17),
                              log_record("bad id", trace_id=b"\x01" * 3)).SerializeToString(), timeout=10)
            channel.unary_unary(TRACES_EXPORT)(spans_request(
                span(kind=1, span_id=b"\x01" * 8), span(kind=1, span_id=b"\x02" * 8)).SerializeToString(),
                timeout=10)
            with pytest.raises(grpc.RpcError):
                logs(b"\xff not protobuf", timeout=10)
        clock.now += 60.2
        assert reporter.summary() == (
            "activity in the last 60s: logs 3 (app 2, error 1), traces 2; "
            "refused 1 request (INVALID_ARGUMENT 1); rejected 1 record (invalid 1)")
        clock.now += 60
        assert reporter.summary() is None  # differences since the last line only
    finally:
        receiver.stop(5)


def test_the_reporter_logs_at_info_on_its_period_and_once_more_at_stop(
        caplog: pytest.LogCaptureFixture) -> None:
    receiver = start_receiver({"telemetry": {"summary_interval_s": "50ms"}}, sinks=[InMemorySink()])
    assert receiver.activity.interval_s == 0.05
    with caplog.at_level(logging.INFO, logger="sluice.receiver"), \
            grpc.insecure_channel(receiver.endpoint) as channel:
        channel.unary_unary(LOGS_EXPORT)(logs_request(log_record("a")).SerializeToString(), timeout=10)
        receiver.stop(5)  # the thread may or may not have reported yet: stop reports the rest
    lines = [r.getMessage() for r in caplog.records if "activity in the last" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].endswith(": logs 1 (app 1)")
    assert {r.levelno for r in caplog.records if "activity" in r.getMessage()} == {logging.INFO}


def test_summary_interval_zero_turns_it_off_and_bad_values_name_the_key() -> None:
    from sluice_collector.errors import ConfigError
    from sluice_collector.service.config import parse_config

    assert parse_config("telemetry: {summary_interval_s: 0}").telemetry.summary_interval_s == 0
    assert parse_config("{}").telemetry.summary_interval_s == 60
    with pytest.raises(ConfigError, match=r"telemetry\.summary_interval_s: got 'often'"):
        parse_config("telemetry: {summary_interval_s: often}")
