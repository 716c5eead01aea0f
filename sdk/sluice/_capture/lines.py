"""What one line of a program's output says: body, severity, time, attributes. Pure: text in, `Parsed` out.

The rules, in order (docs/run.md repeats them for users):

1. ANSI escape sequences are removed, and of a line rewritten with carriage returns (a progress
   bar) only what a terminal finally shows — the text after the last `\\r` — is kept.
2. A line that is a JSON object is a structured record (pino, bunyan, structlog, logrus, zap,
   python-json-logger, ECS-style `log.level`): `msg`/`message`/`event` is the body,
   `level`/`severity`/`levelname`/`log.level`/`lvl` the severity (pino/bunyan numbers 10–60 or
   words), `time`/`timestamp`/`ts`/`@timestamp` the time (epoch s/ms/µs/ns, or RFC 3339 *with* a
   zone), `trace_id`/`span_id` (and camelCase) the trace context; every other field stays an
   attribute as it is (nested objects as maps). Nothing is renamed, so the program's own field
   names still find its records.
3. A logfmt line (`time=… level=info msg="…" k=v`, Go's slog and logrus text) likewise.
4. Python's `logging` default format, `LEVEL:logger:message`: the logger becomes the record's
   instrumentation scope (as the in-process bridge does) and the message the body.
5. Otherwise a level word at the start of the line — after an optional timestamp, optionally in
   brackets — sets the severity: `ERROR x`, `[warn] x`, `2024-05-01 12:00:00 INFO x`,
   `WARN[0000] x` (logrus), `error: x`, `Error: boom`. A word in lower or mixed case counts only
   when a colon follows it or brackets enclose it, so prose ("Info about…") is not a level.
6. An HTTP request line (Common/Combined Log Format, werkzeug, uvicorn, gunicorn, nginx, morgan's
   `GET /x 200 3.1 ms`, pino-http's `req`/`res`) also gets the OpenTelemetry HTTP attributes
   (`http.request.method`, `url.path`, `http.response.status_code`, `client.address`, …) — which
   is what the receiver's `access` rules look for — and, without a level of its own, a severity
   from its status: INFO, WARN for 4xx, ERROR for 5xx (as `sluice.middleware` does).
7. A line with no severity from any of these gets its stream's default (stdout INFO, stderr
   ERROR, both configurable).

Severities are carried as stdlib level numbers (TRACE 5, DEBUG 10, INFO 20, WARN 30, ERROR 40,
FATAL 50), which the shipper maps onto OpenTelemetry's ranges, with the OpenTelemetry short name
as the text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "DEBUG",
    "ERROR",
    "FATAL",
    "INFO",
    "LEVEL_NAMES",
    "TRACE",
    "WARN",
    "Parsed",
    "has_level",
    "level_from_word",
    "parse_line",
    "strip_ansi",
]

TRACE, DEBUG, INFO, WARN, ERROR, FATAL = 5, 10, 20, 30, 40, 50
LEVEL_NAMES = {TRACE: "TRACE", DEBUG: "DEBUG", INFO: "INFO", WARN: "WARN", ERROR: "ERROR", FATAL: "FATAL"}

_WORDS: dict[str, int] = {
    "trace": TRACE, "trac": TRACE, "finest": TRACE, "finer": TRACE, "verbose": TRACE,
    "debug": DEBUG, "debu": DEBUG, "dbg": DEBUG, "fine": DEBUG,
    "info": INFO, "information": INFO, "informational": INFO, "notice": INFO, "default": INFO,
    "warn": WARN, "warning": WARN, "wrn": WARN,
    "error": ERROR, "erro": ERROR, "err": ERROR, "severe": ERROR, "dpanic": ERROR,
    "fatal": FATAL, "fata": FATAL, "critical": FATAL, "crit": FATAL, "panic": FATAL, "pani": FATAL,
    "alert": FATAL, "emerg": FATAL, "emergency": FATAL,
}
# pino and bunyan: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
_PINO = {10: TRACE, 20: DEBUG, 30: INFO, 40: WARN, 50: ERROR, 60: FATAL}

_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_PY_DEFAULT_RE = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL):([^:\s]*):(.*)\Z", re.DOTALL)
_STAMP = (r"(?:\[?(?:\d{4}-\d{2}-\d{2}[T ])?\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\]?"
          r"(?:\s+|\s*\|\s*))?")
_LEVEL_WORD_RE = re.compile(
    _STAMP + r"(?:(?P<open>[\[(<])\s*)?(?P<word>[A-Za-z]{3,13})(?P<close>\s*[\])>])?"
    r"(?P<after>:|\[|\s|\||-|\Z)"
)
_LOGFMT_PAIR_RE = re.compile(r'\s*([A-Za-z_@][\w.@/-]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_METHODS = "GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH"
_REQUEST_RE = re.compile(
    r'"(?P<method>' + _METHODS + r') (?P<target>\S+) HTTP/(?P<version>[\d.]+)" (?P<status>[1-5]\d\d)\b'
    r'(?: (?P<size>\d+|-))?(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?'
)
_MORGAN_RE = re.compile(
    r"(?P<method>" + _METHODS + r") (?P<target>/\S*) (?P<status>[1-5]\d\d) (?P<ms>\d+(?:\.\d+)?) ms\b"
)
_CLIENT_RE = re.compile(
    r"(?:^|\s)(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]+)(?::\d+)?\s"
)
_HEX32 = re.compile(r"[0-9a-fA-F]{32}\Z")
_HEX16 = re.compile(r"[0-9a-fA-F]{16}\Z")

_BODY_KEYS = ("msg", "message", "event")
_LEVEL_KEYS = ("level", "severity", "levelname", "log.level", "lvl", "loglevel")
_TIME_KEYS = ("time", "timestamp", "ts", "@timestamp")
_TRACE_KEYS = ("trace_id", "traceId", "traceid", "trace.id")
_SPAN_KEYS = ("span_id", "spanId", "spanid", "span.id")
_FLAGS_KEYS = ("trace_flags", "traceFlags", "trace.flags")


@dataclass(slots=True)
class Parsed:
    """One record's worth of meaning; `level` 0 means the line said nothing about its severity."""

    body: str
    level: int = 0
    level_text: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    time_s: float | None = None
    scope: str | None = None
    trace_id: int = 0
    span_id: int = 0
    trace_flags: int = 0
    structured: bool = False


def strip_ansi(text: str) -> str:
    """Remove ANSI escapes; of a line rewritten with `\\r`, keep what a terminal finally shows."""
    if "\x1b" in text:
        text = _ANSI_RE.sub("", text)
    if "\r" in text:
        text = text.rstrip("\r")
        if "\r" in text:
            text = text.rsplit("\r", 1)[1]
    return text


def level_from_word(word: str) -> int:
    """The level a word names (any case), or 0."""
    return _WORDS.get(word.lower(), 0)


def _level_of(value: Any) -> tuple[int, str]:
    if isinstance(value, bool):
        return 0, ""
    if isinstance(value, int | float):
        level = _PINO.get(int(value), 0)
        return level, LEVEL_NAMES.get(level, "")
    if isinstance(value, str):
        level = level_from_word(value.strip())
        return level, LEVEL_NAMES.get(level, "")
    return 0, ""


def _time_of(value: Any) -> float | None:
    """Epoch seconds from epoch s/ms/µs/ns numbers or RFC 3339 text with a zone; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        if number <= 0:
            return None
        for scale in (1.0, 1e3, 1e6, 1e9):
            if number / scale < 1e11:  # before the year 5138 in this unit
                return number / scale
        return None
    if isinstance(value, str) and len(value) >= 20:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
        if when.tzinfo is None:  # a local time without a zone cannot be placed: keep it as a field
            return None
        return when.timestamp()
    return None


def _hex_id(value: Any, pattern: re.Pattern[str]) -> int:
    if isinstance(value, str) and pattern.match(value):
        return int(value, 16)
    return 0


def has_level(text: str) -> bool:
    """Whether a plain line names its own level (Python default format or a level word)."""
    return _PY_DEFAULT_RE.match(text) is not None or _level_word(text)[0] != 0


def _level_word(text: str) -> tuple[int, str]:
    match = _LEVEL_WORD_RE.match(text)
    if match is None:
        return 0, ""
    word = match.group("word")
    level = level_from_word(word)
    if not level:
        return 0, ""
    bracketed = match.group("open") is not None and match.group("close") is not None
    if not (word.isupper() or bracketed or match.group("after") == ":"):
        return 0, ""
    return level, LEVEL_NAMES[level]


def _json_record(text: str) -> Parsed | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    parsed = Parsed(body="", structured=True)
    attrs: dict[str, Any] = {}
    body_key = next((k for k in _BODY_KEYS if isinstance(obj.get(k), str)), None)
    level_key = next((k for k in _LEVEL_KEYS if k in obj), None)
    if level_key is not None:
        parsed.level, parsed.level_text = _level_of(obj[level_key])
    time_key = next((k for k in _TIME_KEYS if k in obj), None)
    if time_key is not None:
        parsed.time_s = _time_of(obj[time_key])
    trace_key = next((k for k in _TRACE_KEYS if k in obj), None)
    span_key = next((k for k in _SPAN_KEYS if k in obj), None)
    if trace_key is not None and span_key is not None:
        parsed.trace_id = _hex_id(obj[trace_key], _HEX32)
        parsed.span_id = _hex_id(obj[span_key], _HEX16)
        if not (parsed.trace_id and parsed.span_id):
            parsed.trace_id = parsed.span_id = 0
        flags_key = next((k for k in _FLAGS_KEYS if k in obj), None)
        flags = obj.get(flags_key) if flags_key else None
        if parsed.trace_id and isinstance(flags, int | str):
            try:
                parsed.trace_flags = int(flags, 16) if isinstance(flags, str) else int(flags)
            except ValueError:
                parsed.trace_flags = 0
    consumed: set[str | None] = {body_key}
    if parsed.level:
        consumed.add(level_key)
    if parsed.time_s is not None:
        consumed.add(time_key)
    if parsed.trace_id:
        consumed |= {trace_key, span_key}
        if parsed.trace_flags:
            consumed.add(next(k for k in _FLAGS_KEYS if k in obj))
    for key, value in obj.items():
        if key not in consumed:
            attrs[key] = value
    parsed.body = obj[body_key] if body_key else text
    _json_exception(obj, attrs)
    _json_http(obj, attrs)
    parsed.attributes = attrs
    return parsed


def _json_exception(obj: dict[str, Any], attrs: dict[str, Any]) -> None:
    """pino/bunyan `err` objects and structlog's `exception` text: add `exception.type/message`
    (the stack stays where the program put it, not copied)."""
    err = obj.get("err") if isinstance(obj.get("err"), dict) else obj.get("error")
    if isinstance(err, dict):
        kind = err.get("type") or err.get("name")
        if isinstance(kind, str) and kind:
            attrs.setdefault("exception.type", kind)
        if isinstance(err.get("message"), str):
            attrs.setdefault("exception.message", err["message"])
        return
    text = obj.get("exception")
    if isinstance(text, str) and text.strip():
        last = text.strip().splitlines()[-1]
        kind, _, message = last.partition(": ")
        if kind and " " not in kind:
            attrs.setdefault("exception.type", kind)
            attrs.setdefault("exception.message", message)


def _json_http(obj: dict[str, Any], attrs: dict[str, Any]) -> None:
    req = obj.get("req") if isinstance(obj.get("req"), dict) else obj.get("request")
    res = obj.get("res") if isinstance(obj.get("res"), dict) else obj.get("response")
    method: Any = None
    target: Any = None
    status: Any = None
    client: Any = None
    if isinstance(req, dict):
        method, target = req.get("method"), req.get("url") or req.get("path")
        client = req.get("remoteAddress") or req.get("remote_addr") or req.get("ip")
    if isinstance(res, dict):
        status = res.get("statusCode") or res.get("status_code") or res.get("status")
    if method is None:
        method, target = obj.get("method"), obj.get("url") or obj.get("path")
        status = status or obj.get("status") or obj.get("statusCode") or obj.get("status_code")
    if not (isinstance(method, str) and method.upper() in _METHODS.split("|")):
        return
    if not (isinstance(target, str) or isinstance(status, int)):
        return
    attrs.setdefault("http.request.method", method.upper())
    if isinstance(target, str):
        _url_attributes(target, attrs)
    if isinstance(status, int) and not isinstance(status, bool):
        attrs.setdefault("http.response.status_code", status)
    if isinstance(client, str):
        attrs.setdefault("client.address", client)
    duration = obj.get("responseTime")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        attrs.setdefault("http.server.request.duration_ms", duration)


def _url_attributes(target: str, attrs: dict[str, Any]) -> None:
    path, _, query = target.partition("?")
    attrs.setdefault("url.path", path)
    if query:
        attrs.setdefault("url.query", query)


def _logfmt_record(text: str) -> Parsed | None:
    if "=" not in text or not ("level=" in text or "msg=" in text or "lvl=" in text):
        return None
    pairs: dict[str, str] = {}
    pos = 0
    for match in _LOGFMT_PAIR_RE.finditer(text):
        if match.start() != pos:
            return None
        value = match.group(2)
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        pairs[match.group(1)] = value
        pos = match.end()
    if pos != len(text.rstrip()) or not pairs:
        return None
    parsed = Parsed(body=pairs.pop("msg", "") or pairs.pop("message", "") or text, structured=True)
    for key in ("level", "lvl", "severity"):
        if key in pairs:
            parsed.level, parsed.level_text = _level_of(pairs[key])
            if parsed.level:
                del pairs[key]
            break
    for key in ("time", "ts", "t", "timestamp"):
        if key in pairs:
            parsed.time_s = _time_of(pairs[key])
            if parsed.time_s is not None:
                del pairs[key]
            break
    parsed.attributes = dict(pairs)
    return parsed


def _http_line(text: str, attrs: dict[str, Any]) -> int | None:
    """Add the HTTP attributes of a request line to `attrs`; returns its status, or None."""
    if '" ' in text:
        match = _REQUEST_RE.search(text)
        if match is not None:
            attrs["http.request.method"] = match.group("method")
            _url_attributes(match.group("target"), attrs)
            attrs["network.protocol.version"] = match.group("version")
            status = int(match.group("status"))
            attrs["http.response.status_code"] = status
            size = match.group("size")
            if size and size != "-":
                attrs["http.response.body.size"] = int(size)
            if match.group("agent"):
                attrs["user_agent.original"] = match.group("agent")
            client = _CLIENT_RE.search(" " + text[:match.start()])
            if client is not None:
                attrs["client.address"] = client.group(1).strip("[]")
            return status
    match = _MORGAN_RE.search(text)
    if match is not None and match.start() <= 24:
        attrs["http.request.method"] = match.group("method")
        _url_attributes(match.group("target"), attrs)
        status = int(match.group("status"))
        attrs["http.response.status_code"] = status
        attrs["http.server.request.duration_ms"] = float(match.group("ms"))
        return status
    return None


def parse_line(text: str) -> Parsed:
    """Understand one line (already decoded and ANSI-stripped). The first line of a multi-line
    record is parsed this way; the caller adds the rest to the body."""
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        parsed = _json_record(stripped)
        if parsed is not None:
            return parsed
    parsed = _logfmt_record(stripped) if "=" in stripped else None
    if parsed is not None:
        return parsed
    parsed = Parsed(body=text)
    match = _PY_DEFAULT_RE.match(text)
    if match is not None:
        name = match.group(1)
        parsed.level = level_from_word(name)
        parsed.level_text = LEVEL_NAMES[parsed.level]
        parsed.scope = match.group(2) or "root"
        parsed.body = match.group(3)
    else:
        parsed.level, parsed.level_text = _level_word(text)
    status = _http_line(parsed.body, parsed.attributes)
    if status is not None and not parsed.level:
        parsed.level = ERROR if status >= 500 else WARN if status >= 400 else INFO
        parsed.level_text = LEVEL_NAMES[parsed.level]
    return parsed
