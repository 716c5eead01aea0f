"""sluice._capture.records: a group of captured lines -> one shipper item."""

from __future__ import annotations

import logging

from sluice._capture.lines import WARN
from sluice._capture.multiline import Group
from sluice._capture.records import SCOPE, RecordBuilder


def build(stream: str, *lines: str, kind: str = "plain", **kwargs: object) -> tuple[object, ...]:
    builder = RecordBuilder(clock=lambda: 1_000.0, **kwargs)  # type: ignore[arg-type]
    return builder(stream, Group(list(lines), kind))


def test_a_plain_line_gets_its_streams_default_severity_and_the_iostream() -> None:
    item = build("stdout", "hello")
    assert item[0] == 1_000.0
    assert (item[1], item[2], item[3], item[4]) == (logging.INFO, "INFO", SCOPE, "hello")
    assert item[11] == {"log.iostream": "stdout"}
    assert build("stderr", "oops")[1:3] == (logging.ERROR, "ERROR")
    assert build("stderr", "oops", stderr_level=WARN)[1:3] == (logging.WARNING, "WARN")


def test_a_stack_trace_is_one_error_record_naming_its_exception() -> None:
    item = build("stdout", "Error: boom", "    at f (/a.js:1:1)", kind="stack")
    assert item[1] == logging.ERROR
    assert item[4] == "Error: boom\n    at f (/a.js:1:1)"
    assert item[11]["exception.type"] == "Error"  # type: ignore[index]
    assert item[11]["exception.message"] == "boom"  # type: ignore[index]
    java = build("stderr", 'Exception in thread "main" java.lang.IllegalStateException: bad state',
                 "\tat A.b(A.java:1)", kind="stack")
    assert java[11]["exception.type"] == "java.lang.IllegalStateException"  # type: ignore[index]


def test_a_logged_python_traceback_keeps_the_logs_level_and_names_the_last_exception() -> None:
    item = build("stderr", "WARNING:billing:retrying", "Traceback (most recent call last):",
                 '  File "a.py", line 1, in <module>', "KeyError: 'x'", kind="python")
    assert (item[1], item[3]) == (logging.WARNING, "billing")
    assert item[4].startswith("retrying\nTraceback")  # type: ignore[union-attr]
    assert (item[11]["exception.type"], item[11]["exception.message"]) == ("KeyError", "'x'")  # type: ignore[index]


def test_the_runs_correlation_ids_are_on_every_record_and_win_over_the_lines_own() -> None:
    item = build("stdout", '{"msg":"hi","user.id":"someone-else","tenant.id":"t"}',
                 record_attributes={"user.id": "u-7", "instance": "i-1"})
    assert item[11]["user.id"] == "u-7"  # type: ignore[index]
    assert item[11]["tenant.id"] == "t"  # type: ignore[index]
    assert "instance" not in item[11]  # type: ignore[operator]


def test_a_json_lines_own_time_and_trace_context_are_the_records() -> None:
    item = build("stdout", '{"msg":"hi","time":1700000000000,"trace_id":"0123456789abcdef0123456789abcdef",'
                           '"span_id":"0123456789abcdef"}')
    assert item[0] == 1_700_000_000.0
    assert item[8] == 0x0123456789ABCDEF0123456789ABCDEF
    assert item[9] == 0x0123456789ABCDEF
