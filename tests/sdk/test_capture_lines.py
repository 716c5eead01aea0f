"""sluice._capture.lines: what one line of a program's output says."""

from __future__ import annotations

import pytest

from sluice._capture.lines import DEBUG, ERROR, FATAL, INFO, TRACE, WARN, has_level, parse_line, strip_ansi


def test_ansi_colour_codes_and_overwritten_progress_are_stripped() -> None:
    assert strip_ansi("\x1b[31mERROR\x1b[0m boom \x1b]0;title\x07done") == "ERROR boom done"
    assert strip_ansi("10%\r50%\r100% done\r") == "100% done"
    assert strip_ansi("plain") == "plain"


@pytest.mark.parametrize(("line", "level", "body"), [
    ('{"level":30,"time":1700000000000,"pid":7,"hostname":"h","msg":"pino hi"}', INFO, "pino hi"),
    ('{"name":"app","hostname":"h","pid":1,"level":50,"msg":"bunyan","time":"2023-11-14T22:13:20.000Z","v":0}',
     ERROR, "bunyan"),
    ('{"event":"structlog hi","level":"warning","timestamp":"2023-11-14T22:13:20Z"}', WARN, "structlog hi"),
    ('{"level":"info","msg":"logrus hi","time":"2023-11-14T23:13:20+01:00"}', INFO, "logrus hi"),
    ('{"level":"debug","ts":1700000000.0,"caller":"main.go:10","msg":"zap hi"}', DEBUG, "zap hi"),
    ('{"message":"json-logger","levelname":"CRITICAL"}', FATAL, "json-logger"),
    ('{"log.level":"trace","message":"ecs"}', TRACE, "ecs"),
])
def test_json_lines_of_common_loggers_give_body_severity_and_time(line: str, level: int, body: str) -> None:
    parsed = parse_line(line)
    assert (parsed.level, parsed.body) == (level, body)
    if "time" in line or "ts" in line:
        assert parsed.time_s == pytest.approx(1_700_000_000.0)


def test_json_fields_stay_attributes_unrenamed_and_only_the_record_fields_are_taken_out() -> None:
    parsed = parse_line('{"level":30,"time":1700000000000,"msg":"hi","pid":7,"req_id":"r-1",'
                       '"user":{"id":"u-1","roles":["a"]},"time_local":"x"}')
    assert parsed.attributes == {"pid": 7, "req_id": "r-1", "user": {"id": "u-1", "roles": ["a"]},
                                 "time_local": "x"}


def test_a_json_time_without_a_zone_is_kept_as_a_field_not_guessed() -> None:
    parsed = parse_line('{"msg":"hi","timestamp":"2023-11-14 22:13:20"}')
    assert parsed.time_s is None
    assert parsed.attributes == {"timestamp": "2023-11-14 22:13:20"}


def test_json_trace_context_becomes_the_records_trace_context() -> None:
    parsed = parse_line('{"msg":"hi","trace_id":"0123456789abcdef0123456789abcdef",'
                        '"span_id":"0123456789abcdef","trace_flags":"01"}')
    assert parsed.trace_id == 0x0123456789ABCDEF0123456789ABCDEF
    assert parsed.span_id == 0x0123456789ABCDEF
    assert parsed.trace_flags == 1
    assert parsed.attributes == {}
    bad = parse_line('{"msg":"hi","trace_id":"nothex","span_id":"0123456789abcdef"}')
    assert bad.trace_id == 0
    assert bad.attributes["trace_id"] == "nothex"


def test_pino_errors_and_pino_http_requests_get_semantic_attributes() -> None:
    err = parse_line('{"level":50,"msg":"failed","err":{"type":"TypeError","message":"x is undefined",'
                     '"stack":"TypeError: x is undefined\\n    at f (a.js:1:1)"}}')
    assert err.attributes["exception.type"] == "TypeError"
    assert err.attributes["exception.message"] == "x is undefined"
    assert err.attributes["err"]["stack"].startswith("TypeError")
    req = parse_line('{"level":30,"msg":"request completed","req":{"method":"GET","url":"/a?b=1",'
                     '"remoteAddress":"10.0.0.1"},"res":{"statusCode":404},"responseTime":3}')
    assert req.attributes["http.request.method"] == "GET"
    assert (req.attributes["url.path"], req.attributes["url.query"]) == ("/a", "b=1")
    assert req.attributes["http.response.status_code"] == 404
    assert req.attributes["client.address"] == "10.0.0.1"


def test_json_that_is_not_an_object_is_a_plain_line() -> None:
    assert parse_line("[1, 2]").body == "[1, 2]"
    assert parse_line("{not json}").structured is False


def test_logfmt_lines_of_slog_and_logrus() -> None:
    parsed = parse_line('time=2023-11-14T22:13:20Z level=WARN msg="disk almost full" free_mb=12 path=/var')
    assert (parsed.level, parsed.body) == (WARN, "disk almost full")
    assert parsed.time_s == pytest.approx(1_700_000_000.0)
    assert parsed.attributes == {"free_mb": "12", "path": "/var"}
    assert parse_line("the level=3 of things").structured is False


def test_python_logging_default_format_gives_level_logger_and_message() -> None:
    parsed = parse_line("WARNING:payments.api:card declined: 4xx")
    assert (parsed.level, parsed.scope, parsed.body) == (WARN, "payments.api", "card declined: 4xx")
    assert parse_line("ERROR:root:boom").scope == "root"


@pytest.mark.parametrize(("line", "level"), [
    ("ERROR something broke", ERROR),
    ("[warn] careful", WARN),
    ("2024-05-01 12:00:00,123 INFO started", INFO),
    ("2024-05-01T12:00:00.5Z DEBUG x", DEBUG),
    ("12:00:01 | ERROR | x", ERROR),
    ("WARN[0000] logrus text", WARN),
    ("FATA[0003] gone", FATAL),
    ("error: could not open file", ERROR),
    ("Error: boom", ERROR),
    ("warning: deprecated", WARN),
    ("(info) x", INFO),
])
def test_a_level_word_at_the_start_sets_the_severity(line: str, level: int) -> None:
    assert parse_line(line).level == level
    assert has_level(line)


@pytest.mark.parametrize("line", [
    "Info about the cat", "errors were found", "Debugging is fun", "the ERROR is later", "information",
])
def test_prose_that_merely_starts_with_a_level_like_word_is_not_a_level(line: str) -> None:
    assert parse_line(line).level == 0


@pytest.mark.parametrize(("line", "method", "path", "status", "client"), [
    ('127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
     '"http://example.com/start.html" "Mozilla/4.08"', "GET", "/apache_pb.gif", 200, "127.0.0.1"),
    ('INFO:werkzeug:127.0.0.1 - - [01/May/2024 12:00:00] "POST /login?next=/ HTTP/1.1" 302 -',
     "POST", "/login", 302, "127.0.0.1"),
    ('INFO:     127.0.0.1:51234 - "GET /items/5 HTTP/1.1" 500 Internal Server Error', "GET", "/items/5", 500,
     "127.0.0.1"),
    ("GET /users 404 3.250 ms - 9", "GET", "/users", 404, None),
])
def test_http_request_lines_get_http_attributes(line: str, method: str, path: str, status: int,
                                                client: str | None) -> None:
    parsed = parse_line(line)
    assert parsed.attributes["http.request.method"] == method
    assert parsed.attributes["url.path"] == path
    assert parsed.attributes["http.response.status_code"] == status
    assert parsed.attributes.get("client.address") == client


def test_an_http_line_without_a_level_takes_its_severity_from_the_status() -> None:
    assert parse_line('1.2.3.4 - - [x] "GET / HTTP/1.1" 200 5').level == INFO
    assert parse_line('1.2.3.4 - - [x] "GET / HTTP/1.1" 404 5').level == WARN
    assert parse_line('1.2.3.4 - - [x] "GET / HTTP/1.1" 503 5').level == ERROR
    assert parse_line('INFO:werkzeug:1.2.3.4 - - [x] "GET / HTTP/1.1" 503 -').level == INFO


def test_plain_lines_have_no_level_and_keep_the_whole_text() -> None:
    parsed = parse_line("  hello  world ")
    assert (parsed.level, parsed.body, parsed.attributes) == (0, "  hello  world ", {})
