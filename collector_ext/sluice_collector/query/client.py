"""The `sluice logs query|tail|stats|export` commands: a thin LogQuery client.

Uses plain grpcio
multi-callables with the generated message classes, not the generated stub, so it needs no
more of grpcio than the receiver does. Human output shows record text through `printable`
(control characters from log bodies never reach the terminal raw); `--json` prints the stored
lines exactly. A failed call is one line that says what to do, not a gRPC status dump.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import grpc
import orjson

from sluice_collector.query._proto import query_pb2 as pb
from sluice_collector.query.arguments import add_parser, parse_severity, parse_time
from sluice_collector.query.printable import printable
from sluice_collector.redact import redact_text, url_password

__all__ = ["add_parser", "explain", "parse_severity", "parse_time", "run"]

SERVICE = "/sluice.v1.LogQuery/"
FORMATS = {"jsonl": pb.JSONL, "csv": pb.CSV, "txt": pb.TXT}
COMPRESSIONS = {"none": pb.NONE, "gzip": pb.GZIP, "zip": pb.ZIP}


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
        include_reads=args.include_reads,
    )


def _human(records: Iterable[pb.Record], out: TextIO) -> None:
    rows: list[tuple[str, ...]] = []
    for record in records:
        try:
            obj = orjson.loads(record.line)
        except orjson.JSONDecodeError:
            obj = {}
        attrs = obj.get("attributes") or {}
        level = obj.get("severity") or ("SPAN" if "span_id" in obj and "kind" in obj else "")
        body = obj.get("body", obj.get("name", ""))
        user = attrs.get("user.id") or attrs.get("enduser.id") or ""
        text = body if isinstance(body, str) else orjson.dumps(body).decode()
        stamp = str(obj.get("timestamp", ""))
        # Milliseconds are enough on a terminal; the zone stays (stored times are UTC, "Z").
        shown = stamp[:23] + "Z" if len(stamp) > 23 and stamp.endswith("Z") else stamp
        rows.append(tuple(printable(value) for value in (
            shown, str(level), record.category,
            str(obj.get("service.name", "")), str(user), text)))
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
        # Never echo a credential: not the key (should anything quote it), not a URL password.
        message = explain(exc, args.endpoint, args.timeout).replace(args.api_key, "<api key>")
        password = url_password(args.endpoint)
        if password:
            message = message.replace(password, "xxxxx")
        print(f"sluice logs: {redact_text(message)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        channel.close()


def _export_progress(channel: grpc.Channel, f: pb.Filter, args: argparse.Namespace, metadata: Any) -> Any:
    """A progress bar for `export` on a terminal: records against the Stats total (asked for only
    then), bytes beside; bytes alone for compressed output, whose records cannot be counted."""
    from sluice_collector.progress import Progress, enabled

    if not enabled():
        return Progress("exporting")
    if args.compress != "none":
        return Progress("exporting", unit="B")
    stats = channel.unary_unary(SERVICE + "Stats", request_serializer=pb.StatsRequest.SerializeToString,
                                response_deserializer=pb.StatsResponse.FromString)
    total = int(stats(pb.StatsRequest(filter=f), metadata=metadata, timeout=args.timeout).total)
    if args.limit > 0:
        total = min(total, args.limit)
    if args.format == "csv":
        total += 1  # the header line
    return Progress("exporting", total=total, unit="records")


# What grpc's client says when it never reached a server (its details end in the OS's reason).
_UNREACHABLE = ("failed to connect", "dns resolution failed", "connection refused",
                "connection reset", "socket closed", "name resolution", "connect failed")


def explain(error: grpc.RpcError, endpoint: str, timeout_s: float | None = None) -> str:
    """One line for a failed call: what went wrong and what to do about it."""
    code = error.code() if hasattr(error, "code") else None
    details = str(error.details() if hasattr(error, "details") else error) or ""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and timeout_s is not None:
        return (f"no answer from {endpoint} within {timeout_s:g} s (--timeout); is --endpoint the "
                "receiver's OTLP/gRPC address, and is it overloaded? Narrow --since/--until, or "
                "raise --timeout")
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return (f"the receiver at {endpoint} does not serve the query API (it is off there): "
                "give it query.api_keys in its config (docs/query.md) and restart it")
    if code is grpc.StatusCode.UNAVAILABLE and any(m in details.lower() for m in _UNREACHABLE):
        reason = details.rsplit(": ", 1)[-1].strip() or "unreachable"
        return (f"cannot reach a receiver at {endpoint} ({printable(reason)}); is it running, "
                "and is --endpoint its OTLP/gRPC address?")
    name = getattr(code, "name", None) or "ERROR"
    return f"{name}: {printable(details)}"


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
                                             order=order), metadata=metadata, timeout=args.timeout)
            _print(response.records, args, out)
            remaining -= len(response.records)
            token = response.next_page_token
            if not token or not response.records:
                break
        return 0
    if command == "tail":
        if args.limit > 0:
            response = query(pb.QueryRequest(filter=f, limit=args.limit), metadata=metadata,
                             timeout=args.timeout)
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
        s = stats(pb.StatsRequest(filter=f, bucket_seconds=args.bucket), metadata=metadata,
                  timeout=args.timeout)
        if args.json:
            from google.protobuf.json_format import MessageToJson

            out.write(MessageToJson(s, preserving_proto_field_name=True, indent=None) + "\n")
            return 0
        duration = (f"{s.avg_duration_ms:.2f} ms over {s.with_duration} records"
                    if s.with_duration else "n/a (no record carries a duration)")
        out.write(f"records       {s.total}\nerror rate    {s.error_rate:.2%}\n"
                  f"unique users  {s.unique_users}\n"
                  f"avg duration  {duration}\n")
        for title, counts in (("category", s.by_category), ("severity", s.by_severity),
                              ("event type", s.by_event_type), ("status", s.by_status)):
            if counts:
                out.write(f"\nby {title}\n")
                keys = [printable(c.key) for c in counts]  # event types, statuses: app-sent text
                width = max(len(k) for k in keys)
                for key, c in zip(keys, counts, strict=True):
                    out.write(f"  {key.ljust(width)}  {c.count}\n")
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
        progress = _export_progress(channel, f, args, metadata)
        try:
            for chunk in export(request, metadata=metadata):
                sink.write(chunk.data)
                progress.advance(records=0 if args.compress != "none" else chunk.data.count(b"\n"),
                                 nbytes=len(chunk.data))
        finally:
            progress.close()
            if args.output:
                sink.close()
            else:
                sink.flush()
        return 0
    print("sluice logs: give a subcommand: query, tail, stats or export", file=sys.stderr)
    return 2
