"""Export formats: stored rows in, file bytes out, in chunks small enough for one gRPC message.

JSONL is the stored lines exactly. TXT and CSV are for people (a terminal, a spreadsheet): their
text columns go through `printable`, so a control character a client put in a log body cannot
drive the reader's terminal; CSV's `record` column is the JSON line with such characters as JSON
escapes (`printable_json`: the same JSON value).

Chunks are produced while rows are read, so an export of millions of records never holds more
than one chunk in memory, compressed or not (zip archives are written in streaming mode, with
data descriptors, which every unzip understands).
"""

from __future__ import annotations

import csv
import io
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from sluice_collector.encode import rfc3339
from sluice_collector.query.printable import printable, printable_json
from sluice_collector.query.store import StoredRow, severity_name

CHUNK_BYTES = 256 * 1024
FORMATS = ("jsonl", "csv", "txt")
COMPRESSIONS = ("none", "gzip", "zip")
CSV_COLUMNS = ("timestamp", "category", "severity", "service", "trace_id", "span_id", "user_id",
               "tenant", "event_type", "status", "duration_ms", "message", "record")


def message_of(line: str) -> str:
    """The human part of a record: a log's body, a span's name."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    value: Any = obj.get("body", obj.get("name", "")) if isinstance(obj, dict) else ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _csv_header() -> str:
    out = io.StringIO()
    csv.writer(out).writerow(CSV_COLUMNS)
    return out.getvalue()


def format_rows(rows: Iterable[StoredRow], fmt: str) -> Iterator[bytes]:
    """One encoded piece per row (after a header for csv)."""
    if fmt == "csv":
        yield _csv_header().encode()
        buf = io.StringIO()
        writer = csv.writer(buf)
        for stored in rows:
            r = stored.row
            writer.writerow((
                rfc3339(r.time_ns), r.category, severity_name(r.severity) if r.severity else "",
                printable(r.service), r.trace_id, r.span_id, printable(r.user_id), r.tenant,
                printable(r.event_name), printable(r.status),
                "" if r.duration_ms is None else r.duration_ms, printable(message_of(r.line)),
                printable_json(r.line),
            ))
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    elif fmt == "txt":
        for stored in rows:
            r = stored.row
            level = severity_name(r.severity) if r.severity else "SPAN"
            message = printable(message_of(r.line))
            yield (f"{rfc3339(r.time_ns)} {level:<5} [{r.category}] {printable(r.service)}: "
                   f"{message}\n").encode()
    else:
        for stored in rows:
            yield stored.row.line.encode() + b"\n"


def _chunked(pieces: Iterable[bytes]) -> Iterator[bytes]:
    buf: list[bytes] = []
    size = 0
    for piece in pieces:
        buf.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


class _Sink(io.RawIOBase):
    """A write-only, unseekable file whose writes are collected for the next chunk."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def export_chunks(rows: Iterable[StoredRow], fmt: str, compression: str,
                  name: str = "export") -> Iterator[bytes]:
    """The export file, chunk by chunk; concatenated they are the whole file."""
    pieces = _chunked(format_rows(rows, fmt))
    if compression == "gzip":
        gz = zlib.compressobj(6, zlib.DEFLATED, 31)
        for chunk in pieces:
            out = gz.compress(chunk)
            if out:
                yield out
        yield gz.flush()
    elif compression == "zip":
        sink = _Sink()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive, \
                archive.open(f"{name}.{fmt}", "w", force_zip64=True) as member:
            for chunk in pieces:
                member.write(chunk)
                out = sink.take()
                if out:
                    yield out
        yield sink.take()
    else:
        yield from pieces
