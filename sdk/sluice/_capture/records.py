"""A group of lines from one stream -> one shipper `Item` (an OTLP log record before encoding).

What every captured record carries:

- `log.iostream`: `stdout` or `stderr` (OpenTelemetry semantic conventions);
- the body (ANSI-stripped; for a multi-line record the lines joined with `\\n`), the severity
  and attributes from `lines.parse_line` of its first line;
- for a recognised stack trace, `exception.type` and `exception.message` (the trace itself is
  the body), and ERROR when the line did not name a level;
- the run's correlation ids (`user.id`, `enduser.id`, `tenant.id`, `request.id` given with
  `--resource-attribute`) as record attributes too, as `sluice.context()` sets them: the query
  index and per-user file paths read them there. They win over a line's own field of the same
  name, so a program cannot file its output under another user.

No `log.category` is set: routing is the receiver's job, and its rules (which an operator may
change) see the severity, `exception.*`, `http.*` and `log.iostream` attributes set here. With
the default rules that is `access` for HTTP request lines, `error` for ERROR and above (stderr by
default) and stack traces, `app` for the rest. A JSON line's own `log.category` field is kept,
and then wins as any client's does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from sluice._capture.lines import ERROR, INFO, LEVEL_NAMES, parse_line
from sluice._capture.multiline import Group
from sluice._shipper import Item

__all__ = ["CORRELATION_KEYS", "SCOPE", "RecordBuilder"]

SCOPE = "sluice.run"
CORRELATION_KEYS = ("user.id", "enduser.id", "tenant.id", "request.id")
_EXCEPTION_RE = re.compile(
    r"(?P<type>(?:[A-Za-z_$][\w$.]*)?(?:Error|Exception|Throwable|Failure|Fault|Panic|Interrupt|Exit))"
    r"(?::\s*(?P<message>.*))?\Z"
)
_EXCEPTION_ANYWHERE_RE = re.compile(
    r"(?P<type>\b(?:[A-Za-z_$][\w$.]*)?(?:Error|Exception|Throwable|Failure|Fault|Panic))"
    r"(?::\s*(?P<message>.*))?\Z"
)


def _python_exception(lines: list[str]) -> tuple[str, str] | None:
    for line in reversed(lines):
        if not line or line[0] in " \t" or line.startswith(("Traceback", "During handling", "The above")):
            continue
        kind, sep, message = line.partition(": ")
        if kind and " " not in kind and (sep or kind.isidentifier() or "." in kind):
            return kind, message
        return None
    return None


def _first_exception(lines: list[str]) -> tuple[str, str] | None:
    for line in lines:
        if not line or line[0] in " \t":
            continue
        text = line.removeprefix("Uncaught ")
        if text.startswith("Exception in thread "):
            text = text.split('" ', 1)[-1]
        match = _EXCEPTION_RE.match(text) or _EXCEPTION_ANYWHERE_RE.search(text)
        if match is not None:
            return match.group("type"), match.group("message") or ""
    return None


class RecordBuilder:
    """Callable: `(stream, group, observed_s) -> Item`. Config in `__init__`, work in `__call__`."""

    def __init__(
        self,
        *,
        stdout_level: int = INFO,
        stderr_level: int = ERROR,
        record_attributes: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.defaults = {"stdout": stdout_level, "stderr": stderr_level}
        self.record_attributes = {k: v for k, v in (record_attributes or {}).items() if k in CORRELATION_KEYS}
        self._clock = clock

    def __call__(self, stream: str, group: Group, observed_s: float | None = None) -> Item:
        lines = group.lines
        parsed = parse_line(lines[0])
        body = parsed.body if len(lines) == 1 else "\n".join([parsed.body, *lines[1:]])
        attrs = parsed.attributes
        level = parsed.level
        level_text = parsed.level_text
        if group.kind != "plain":
            found = _python_exception(lines) if group.kind == "python" else _first_exception(
                lines[4:] if group.kind == "node" else lines)
            if found is not None:
                attrs.setdefault("exception.type", found[0])
                attrs.setdefault("exception.message", found[1])
            if not level:
                level = ERROR
        if not level:
            level = self.defaults.get(stream, INFO)
        if not level_text:
            level_text = LEVEL_NAMES.get(level, "INFO")
        attrs["log.iostream"] = stream
        attrs.update(self.record_attributes)
        created = parsed.time_s if parsed.time_s is not None else (
            observed_s if observed_s is not None else self._clock())
        return (created, level, level_text, parsed.scope or SCOPE, body, "", "", 0,
                parsed.trace_id, parsed.span_id, parsed.trace_flags, attrs, None)
