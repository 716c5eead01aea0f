"""The `sluice logs` command line: flags and their parsing, nothing else.

Kept apart from the client (`client.py`, which needs grpc, orjson and the generated query
messages) so that building the `sluice` parser — `sluice --help`, `sluice run` — imports none
of the receiver's dependencies.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import time
from typing import Any

from sluice_collector.otlpvalues import SEVERITY_LEVELS

_RELATIVE_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FORMAT_NAMES = ("csv", "jsonl", "txt")
COMPRESSION_NAMES = ("gzip", "none", "zip")


def parse_time(text: str, now_s: float | None = None) -> int:
    """Unix ns of RFC 3339 (``2026-11-23T08:00:00Z``) or a time ago (``15m``, ``2h``, ``7d``)."""
    now = time.time() if now_s is None else now_s
    match = _RELATIVE_RE.match(text.strip())
    if match:
        return int((now - float(match.group(1)) * _UNIT_S[match.group(2)]) * 1e9)
    try:
        stamp = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected RFC 3339 (2026-11-23T08:00:00Z) or a time ago such as "
            "15m, 2h, 7d") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.UTC)
    return int(stamp.timestamp() * 1e6) * 1000


def parse_severity(text: str) -> int:
    if text.isdigit() and 1 <= int(text) <= 24:
        return int(text)
    number = SEVERITY_LEVELS.get(text.upper())
    if number is None:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected one of {', '.join(SEVERITY_LEVELS)} or 1-24")
    return number


def _at_least(minimum: int) -> Any:
    """An argparse type: a whole number >= minimum (a usage error otherwise, never an empty
    answer with exit 0)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"got {value}; expected {minimum} or more")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a number of seconds") from None
    if not 0 < value < 86400 * 365:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected seconds above 0")
    return value


def add_parser(commands: Any) -> None:
    """Add `logs` and its four subcommands to the `sluice` parser."""
    logs = commands.add_parser("logs", help="read stored logs back from a receiver (LogQuery API)")
    sub = logs.add_subparsers(dest="logs_command", metavar="SUBCOMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpoint", default="127.0.0.1:4317", metavar="HOST:PORT",
                        help="the receiver's gRPC address (default 127.0.0.1:4317)")
    common.add_argument("--api-key", default=os.environ.get("SLUICE_API_KEY"), metavar="KEY",
                        help="API key (default $SLUICE_API_KEY)")
    common.add_argument("--timeout", type=_seconds, default=30.0, metavar="SECONDS",
                        help="give up on a query or stats call after this long (default 30); "
                             "export and tail -f run as long as they stream")
    common.add_argument("--since", type=parse_time, metavar="TIME",
                        help="from this time: RFC 3339 (without a zone: UTC, as every time "
                             "sluice prints) or a time ago (15m, 2h, 7d)")
    common.add_argument("--until", type=parse_time, metavar="TIME", help="up to this time (exclusive)")
    common.add_argument("--category", action="append", default=[], metavar="NAME",
                        help="only this category (repeatable)")
    common.add_argument("--service", action="append", default=[], metavar="NAME",
                        help="only this service.name (repeatable)")
    common.add_argument("--severity", type=parse_severity, metavar="LEVEL",
                        help="at least this severity (DEBUG, INFO, WARN, ERROR, FATAL or 1-24)")
    common.add_argument("--trace-id", metavar="HEX", help="only this trace")
    common.add_argument("--user", metavar="ID", help="only this user id (as stored)")
    common.add_argument("--event-type", metavar="NAME", help="only this event.name")
    common.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE",
                        help="attribute equals value (repeatable)")
    common.add_argument("--text", metavar="TEXT", help="substring of the stored JSON line")
    common.add_argument("--grep", metavar="REGEX", help="RE2 regex searched in the stored JSON line")
    common.add_argument("--include-reads", action="store_true",
                        help="also the audit records of reads (every LogQuery call writes one; "
                        "left out otherwise, so a query never finds itself)")
    common.add_argument("--json", action="store_true", help="one JSON record per line")
    query = sub.add_parser("query", parents=[common], help="print matching records, newest first")
    query.add_argument("--limit", type=_at_least(1), default=100, help="at most this many (default 100)")
    query.add_argument("--oldest-first", action="store_true")
    tail = sub.add_parser("tail", parents=[common], help="the last records; -f to follow")
    tail.add_argument("--limit", "-n", type=_at_least(0), default=20,
                      help="records shown first (default 20; 0 with -f: only new ones)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    stats = sub.add_parser("stats", parents=[common], help="counts, error rate, durations")
    stats.add_argument("--bucket", type=_at_least(0), default=0, metavar="SECONDS",
                       help="time bucket width (default: about 60 buckets)")
    export = sub.add_parser("export", parents=[common], help="write matching records to a file")
    export.add_argument("--format", choices=FORMAT_NAMES, default="jsonl")
    export.add_argument("--compress", choices=COMPRESSION_NAMES, default="none")
    export.add_argument("--limit", type=_at_least(0), default=0, help="at most this many (default all)")
    export.add_argument("--output", "-o", metavar="FILE", help="file to write (default stdout)")
