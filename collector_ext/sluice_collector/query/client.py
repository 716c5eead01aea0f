"""The `sluice logs query|tail|stats|export` commands: a thin LogQuery client.

Uses plain grpcio
multi-callables with the generated message classes, not the generated stub, so it needs no
more of grpcio than the receiver does.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import grpc
import orjson

from sluice_collector.otlpvalues import SEVERITY_LEVELS
from sluice_collector.query._proto import query_pb2 as pb
from sluice_collector.redact import redact_text, url_password

SERVICE = "/sluice.v1.LogQuery/"
_RELATIVE_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FORMATS = {"jsonl": pb.JSONL, "csv": pb.CSV, "txt": pb.TXT}
COMPRESSIONS = {"none": pb.NONE, "gzip": pb.GZIP, "zip": pb.ZIP}


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


def add_parser(commands: Any) -> None:
    """Add `logs` and its four subcommands to the `sluice` parser."""
    logs = commands.add_parser("logs", help="read stored logs back from a receiver (LogQuery API)")
    sub = logs.add_subparsers(dest="logs_command", metavar="SUBCOMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpoint", default="127.0.0.1:4317", metavar="HOST:PORT",
                        help="the receiver's gRPC address (default 127.0.0.1:4317)")
    common.add_argument("--api-key", default=os.environ.get("SLUICE_API_KEY"), metavar="KEY",
                        help="API key (default $SLUICE_API_KEY)")
    common.add_argument("--since", type=parse_time, metavar="TIME",
                        help="from this time: RFC 3339 or a time ago (15m, 2h, 7d)")
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
    common.add_argument("--json", action="store_true", help="one JSON record per line")
    query = sub.add_parser("query", parents=[common], help="print matching records, newest first")
    query.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    query.add_argument("--oldest-first", action="store_true")
    tail = sub.add_parser("tail", parents=[common], help="the last records; -f to follow")
    tail.add_argument("--limit", "-n", type=int, default=20, help="records shown first (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    stats = sub.add_parser("stats", parents=[common], help="counts, error rate, durations")
    stats.add_argument("--bucket", type=int, default=0, metavar="SECONDS",
                       help="time bucket width (default: about 60 buckets)")
    export = sub.add_parser("export", parents=[common], help="write matching records to a file")
    export.add_argument("--format", choices=sorted(FORMATS), default="jsonl")
    export.add_argument("--compress", choices=sorted(COMPRESSIONS), default="none")
    export.add_argument("--limit", type=int, default=0, help="at most this many (default all)")
    export.add_argument("--output", "-o", metavar="FILE", help="file to write (default stdout)")


def _filter(args: argparse.Namespace) -> pb.Filter:
    attrs = {}
    for item in args.attr:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"sluice logs: --attr {item!r}: expected KEY=VALUE")
        attrs[key] = value
    return pb.Filter(
        since_unix_nano=args.since or 0, until_unix_nano=args.until or 0,
        severity_at_least=args.severity or 0, categories=args.category, services=args.service,
        trace_id=args.trace_id or "", user_id=args.user or "", event_type=args.event_type or "",
        attribute_equals=attrs, text=args.text or "", regex=args.grep or "",
    )


def _human(records: Iterable[pb.Record], out: TextIO) -> None:
    rows = []
    for record in records:
        try:
            obj = orjson.loads(record.line)
        except orjson.JSONDecodeError:
            obj = {}
        attrs = obj.get("attributes") or {}
        level = obj.get("severity") or ("SPAN" if "span_id" in obj and "kind" in obj else "")
        body = obj.get("body", obj.get("name", ""))
        user = attrs.get("user.id") or attrs.get("enduser.id") or ""
        rows.append((str(obj.get("timestamp", ""))[:23], str(level), record.category,
                     str(obj.get("service.name", "")), str(user),
                     (body if isinstance(body, str) else orjson.dumps(body).decode()).replace("\n", "\\n")))
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        head = "  ".join(value.ljust(widths[i]) for i, value in enumerate(r[:5]))
        out.write(f"{head}  {r[5]}\n")


def _print(records: Sequence[pb.Record], args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        for record in records:
            out.write(record.line + "\n")
    else:
        _human(records, out)
    out.flush()


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run one `sluice logs` subcommand; returns the exit code."""
    if not args.api_key:
        print("sluice logs: give --api-key or set SLUICE_API_KEY", file=sys.stderr)
        return 2
    metadata = (("x-api-key", args.api_key),)
    channel = grpc.insecure_channel(args.endpoint)
    try:
        return _dispatch(args, channel, metadata, out)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = str(exc.details() if hasattr(exc, "details") else exc)
        # Never echo a credential: not the key (should anything quote it), not a URL password.
        details = details.replace(args.api_key, "<api key>")
        password = url_password(args.endpoint)
        if password:
            details = details.replace(password, "xxxxx")
        details = redact_text(details)
        print(f"sluice logs: {getattr(code, 'name', code)}: {details}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        channel.close()


def _dispatch(args: argparse.Namespace, channel: grpc.Channel, metadata: Any, out: TextIO) -> int:
    f = _filter(args)
    query = channel.unary_unary(SERVICE + "Query", request_serializer=pb.QueryRequest.SerializeToString,
                                response_deserializer=pb.QueryResponse.FromString)
    command = args.logs_command
    if command == "query":
        remaining, token = args.limit, ""
        order = pb.OLDEST_FIRST if args.oldest_first else pb.NEWEST_FIRST
        while remaining > 0:
            response = query(pb.QueryRequest(filter=f, limit=min(remaining, 1000), page_token=token,
                                             order=order), metadata=metadata)
            _print(response.records, args, out)
            remaining -= len(response.records)
            token = response.next_page_token
            if not token or not response.records:
                break
        return 0
    if command == "tail":
        if args.limit > 0:
            response = query(pb.QueryRequest(filter=f, limit=args.limit), metadata=metadata)
            _print(list(reversed(response.records)), args, out)
        if args.follow:
            tail = channel.unary_stream(SERVICE + "Tail", request_serializer=pb.TailRequest.SerializeToString,
                                        response_deserializer=pb.TailResponse.FromString)
            for message in tail(pb.TailRequest(filter=f), metadata=metadata):
                _print(message.records, args, out)
        return 0
    if command == "stats":
        stats = channel.unary_unary(SERVICE + "Stats", request_serializer=pb.StatsRequest.SerializeToString,
                                    response_deserializer=pb.StatsResponse.FromString)
        s = stats(pb.StatsRequest(filter=f, bucket_seconds=args.bucket), metadata=metadata)
        if args.json:
            from google.protobuf.json_format import MessageToJson

            out.write(MessageToJson(s, preserving_proto_field_name=True, indent=None) + "\n")
            return 0
        out.write(f"records       {s.total}\nerror rate    {s.error_rate:.2%}\n"
                  f"unique users  {s.unique_users}\n"
                  f"avg duration  {s.avg_duration_ms:.2f} ms over {s.with_duration} records\n")
        for title, counts in (("category", s.by_category), ("severity", s.by_severity),
                              ("event type", s.by_event_type), ("status", s.by_status)):
            if counts:
                out.write(f"\nby {title}\n")
                width = max(len(c.key) for c in counts)
                for c in counts:
                    out.write(f"  {c.key.ljust(width)}  {c.count}\n")
        if s.buckets:
            out.write(f"\nper {s.bucket_seconds}s\n")
            for b in s.buckets:
                stamp = _dt.datetime.fromtimestamp(b.start_unix_nano / 1e9, _dt.UTC)
                out.write(f"  {stamp:%Y-%m-%dT%H:%M:%SZ}  {b.count:>8}  errors {b.errors}\n")
        return 0
    if command == "export":
        export = channel.unary_stream(
            SERVICE + "Export", request_serializer=pb.ExportRequest.SerializeToString,
            response_deserializer=pb.ExportChunk.FromString)
        request = pb.ExportRequest(filter=f, format=FORMATS[args.format],
                                   compression=COMPRESSIONS[args.compress], max_records=args.limit)
        sink = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
        try:
            for chunk in export(request, metadata=metadata):
                sink.write(chunk.data)
        finally:
            if args.output:
                sink.close()
            else:
                sink.flush()
        return 0
    print("sluice logs: give a subcommand: query, tail, stats or export", file=sys.stderr)
    return 2
