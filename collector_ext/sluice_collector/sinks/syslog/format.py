"""Turning one OTLP log record into one syslog message (RFC 5424 or RFC 3164), and framing it.

Pure functions and one callable, no I/O, so the exact bytes can be pinned by unit tests and the
sink only has to move them. Every length limit here is in UTF-8 bytes of the final message,
because that is what receivers count (rsyslog's `maxMessageSize`, RFC 6587 octet counts).

Mapping decisions (documented in docs/syslog.md):

- severity: FATAL* → 2 (crit: "alert"/"emerg" make some daemons write to every terminal),
  ERROR* → 3, WARN* → 4, INFO → 6, INFO2–INFO4 → 5 (notice, the OTel spec's reverse mapping),
  DEBUG*/TRACE* → 7; an unspecified number falls back to the severity text, else 6.
- facility: per category, defaults in `DEFAULT_FACILITIES`, anything else `user`.
"""

from __future__ import annotations

import enum
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice_collector.otlpvalues import SEVERITY_LEVELS, body_text, find_attribute, hex_id

FACILITY_CODES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    "solaris-cron": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}
# security and audit hold who-did-what: authpriv keeps security with the system's own login
# records (root-only files on most distributions); audit gets local0 so one selector can route
# the application's audit trail to its own file, apart from sshd and sudo.
DEFAULT_FACILITIES: dict[str, str] = {
    "security": "authpriv", "audit": "local0", "access": "local1", "error": "user", "app": "user",
}
DEFAULT_FACILITY = "user"

SD_ID = "otel@32473"
TRUNCATION_MARKER = "…[truncated]"
BOM = b"\xef\xbb\xbf"
NIL = "-"
MIN_MESSAGE_BYTES = 480  # RFC 5424 §6.1: every receiver must take at least this much.

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class SyslogFormat(enum.StrEnum):
    RFC5424 = "rfc5424"
    RFC3164 = "rfc3164"


class Framing(enum.StrEnum):
    """How messages are delimited on stream transports (RFC 6587)."""

    OCTET_COUNTING = "octet-counting"
    LF = "lf"


def syslog_severity(severity_number: int, severity_text: str = "") -> int:
    """The syslog severity (0–7) for an OTel SeverityNumber (1–24)."""
    if severity_number <= 0 or severity_number > 24:
        severity_number = SEVERITY_LEVELS.get(severity_text.strip().upper(), 9)
    if severity_number >= 21:
        return 2
    if severity_number >= 17:
        return 3
    if severity_number >= 13:
        return 4
    if severity_number >= 10:
        return 5
    if severity_number >= 9:
        return 6
    return 7


def parse_facility(value: str | int) -> int | None:
    """A facility name (`local0`, `authpriv`) or code (0–23); None when neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= 23 else None
    text = str(value).strip().lower()
    if text.isdigit():
        return int(text) if int(text) <= 23 else None
    return FACILITY_CODES.get(text)


def printable_ascii(text: str, max_len: int, *, forbidden: str = "") -> str:
    """`text` made into an RFC 5424 header token: PRINTUSASCII (33–126) only, at most `max_len`.

    Characters outside the range (spaces, non-ASCII, control) and `forbidden` become `_`,
    so the token keeps its length and stays recognisable; an empty result is the NILVALUE.
    """
    out = []
    for ch in text[:max_len]:
        code = ord(ch)
        out.append(ch if 33 <= code <= 126 and ch not in forbidden else "_")
    return "".join(out) or NIL


def sd_name(text: str) -> str:
    """An SD-NAME (RFC 5424 §6.3.2): printable ASCII without `= ] "` or space, ≤ 32 chars."""
    return printable_ascii(text, 32, forbidden='=]"')


def escape_param_value(text: str) -> str:
    """A PARAM-VALUE (RFC 5424 §6.3.3): `"`, `\\` and `]` get a backslash; all else stays."""
    if '"' not in text and "\\" not in text and "]" not in text:
        return text
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def cut_utf8(data: bytes, max_bytes: int) -> bytes:
    """The longest prefix of UTF-8 `data` of at most `max_bytes` that ends on a character."""
    if len(data) <= max_bytes:
        return data
    end = max(max_bytes, 0)
    # Step back over continuation bytes (10xxxxxx) to the start of the cut character.
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


def frame(message: bytes, framing: Framing) -> bytes:
    """One message ready for a stream socket; datagram transports send `message` as it is."""
    if framing is Framing.OCTET_COUNTING:
        return b"%d %s" % (len(message), message)
    # LF framing cannot carry a newline inside a message; rsyslog's own escape for it is #012.
    return message.replace(b"\n", b"#012") + b"\n"


def rfc3339_micro(unix_nano: int) -> str:
    seconds, nanos = divmod(unix_nano, 1_000_000_000)
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
        f"{t.tm_sec:02d}.{nanos // 1000:06d}Z"
    )


def rfc3164_time(unix_nano: int) -> str:
    """`Mmm dd hh:mm:ss` in the receiver's local time, as RFC 3164 readers assume."""
    t = time.localtime(unix_nano // 1_000_000_000)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    import orjson

    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")


@dataclass(frozen=True, slots=True)
class FormattedMessage:
    """One syslog message without framing; `truncated` says the marker had to be added."""

    data: bytes
    truncated: bool


class SyslogFormatter:
    """Formats records of a routed batch as syslog messages; config here, work in `__call__`."""

    def __init__(
        self,
        *,
        syslog_format: SyslogFormat = SyslogFormat.RFC5424,
        facilities: Mapping[str, int] | None = None,
        sd_attributes: Sequence[str] = (),
        max_message_bytes: int = 8192,
        hostname: str | None = None,
    ) -> None:
        self.format = syslog_format
        defaults = {k: FACILITY_CODES[v] for k, v in DEFAULT_FACILITIES.items()}
        self.facilities = {**defaults, **(facilities or {})}
        self.sd_attributes = tuple(sd_attributes)
        self._sd_param_names = {name: sd_name(name) for name in self.sd_attributes}
        self.max_message_bytes = max(max_message_bytes, MIN_MESSAGE_BYTES)
        # An explicit hostname wins over the record's host.name; the local host is the fallback.
        self.hostname_override = hostname
        self._local_host = printable_ascii(socket.gethostname(), 255)
        self._marker = TRUNCATION_MARKER.encode("utf-8")

    def facility(self, category: str) -> int:
        return self.facilities.get(category, FACILITY_CODES[DEFAULT_FACILITY])

    def __call__(self, category: str, resource: Any, record: Any) -> FormattedMessage:
        """`resource` is the `Resource` message of the record's ResourceLogs."""
        pri = self.facility(category) * 8 + syslog_severity(
            record.severity_number, record.severity_text
        )
        unix_nano = record.time_unix_nano or record.observed_time_unix_nano or time.time_ns()
        if self.hostname_override:
            host = printable_ascii(self.hostname_override, 255)
        else:
            host_attr = find_attribute(resource.attributes, "host.name")
            host = printable_ascii(host_attr, 255) if isinstance(host_attr, str) and host_attr \
                else self._local_host
        service = find_attribute(resource.attributes, "service.name")
        service = service if isinstance(service, str) and service else ""
        pid = find_attribute(resource.attributes, "process.pid")
        procid = printable_ascii(str(pid), 128) if pid not in (None, "") else NIL
        body = body_text(record.body) if record.HasField("body") else ""
        trace_id = hex_id(record.trace_id)
        span_id = hex_id(record.span_id)
        if self.format is SyslogFormat.RFC3164:
            return self._rfc3164(
                pri, unix_nano, host=host, service=service, procid=procid, body=body,
                trace_id=trace_id, span_id=span_id,
            )
        header = (
            f"<{pri}>1 {rfc3339_micro(unix_nano)} {host} {printable_ascii(service, 48)} {procid} "
            f"{printable_ascii(category, 32)} "
        ).encode("ascii")
        params: list[tuple[str, str]] = []
        if trace_id:
            params.append(("trace_id", trace_id))
        if span_id:
            params.append(("span_id", span_id))
        for attr in self.sd_attributes:
            value = find_attribute(record.attributes, attr)
            if value is None:
                value = find_attribute(resource.attributes, attr)
            if value is not None:
                params.append((self._sd_param_names[attr], _value_text(value)))
        sd = self._structured_data(params)
        room = self.max_message_bytes - len(header) - len(BOM) - len(self._marker) - 1
        if len(sd) > room:
            # Oversized attribute values must not cut the header or SD in half (a malformed
            # message); they give way first, keeping the correlation ids.
            sd = self._structured_data(params[: (1 if trace_id else 0) + (1 if span_id else 0)])
        head = header + sd
        if not body:
            limit = self.max_message_bytes
            return FormattedMessage(cut_utf8(head, limit), len(head) > limit)
        return self._with_body(head + b" " + BOM, body.encode("utf-8"), b"")

    @staticmethod
    def _structured_data(params: list[tuple[str, str]]) -> bytes:
        if not params:
            return NIL.encode()
        inner = " ".join(f'{name}="{escape_param_value(value)}"' for name, value in params)
        return f"[{SD_ID} {inner}]".encode()

    def _with_body(self, head: bytes, body: bytes, tail: bytes) -> FormattedMessage:
        limit = self.max_message_bytes
        if len(head) + len(body) + len(tail) <= limit:
            return FormattedMessage(head + body + tail, False)
        keep = limit - len(head) - len(tail) - len(self._marker)
        if keep < 0:
            return FormattedMessage(cut_utf8(head + body + tail, limit), True)
        return FormattedMessage(head + cut_utf8(body, keep) + self._marker + tail, True)

    def _rfc3164(
        self, pri: int, unix_nano: int, *, host: str, service: str, procid: str, body: str,
        trace_id: str, span_id: str,
    ) -> FormattedMessage:
        # TAG is at most 32 characters; `[` and `:` would end it early for parsers.
        tag = printable_ascii(service or "sluice", 32, forbidden="[]:")
        pid = f"[{procid}]" if procid != NIL else ""
        head = f"<{pri}>{rfc3164_time(unix_nano)} {host} {tag}{pid}: ".encode("ascii")
        # No structured data in 3164: the correlation ids ride at the end of the message,
        # where truncation of a long body cannot take them away.
        ids = []
        if trace_id:
            ids.append(f"trace_id={trace_id}")
        if span_id:
            ids.append(f"span_id={span_id}")
        tail = (" " + " ".join(ids)).encode("ascii") if ids else b""
        return self._with_body(head, body.encode("utf-8"), tail)


__all__ = [
    "DEFAULT_FACILITIES",
    "FACILITY_CODES",
    "MIN_MESSAGE_BYTES",
    "SD_ID",
    "TRUNCATION_MARKER",
    "FormattedMessage",
    "Framing",
    "SyslogFormat",
    "SyslogFormatter",
    "cut_utf8",
    "escape_param_value",
    "frame",
    "parse_facility",
    "sd_name",
    "syslog_severity",
]
