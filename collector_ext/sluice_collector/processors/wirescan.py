"""Find which records of an encoded OTLP request a byte range falls in, without decoding it.

All three Export requests share one shape on the wire:

    request      1: resource-level message (ResourceLogs / ResourceSpans / ResourceMetrics), repeated
    resource-lvl 1: Resource          2: scope-level message (repeated)
    scope-lvl    1: InstrumentationScope   2: record (LogRecord / Span / Metric), repeated

so one walker serves logs, traces and metrics. Every string of a request sits verbatim (UTF-8)
in its encoding, which lets the masking stage run one RE2 scan over the raw bytes and then touch
only the records a match falls in. The k-th occurrence of a repeated field on the wire is
element k of the decoded list, which is what makes the indexes line up with the decoded request.

Anything unexpected (group wire types, lengths past the end) raises `WireFormatError`; callers
then fall back to treating every record as a candidate, never to skipping one.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from sluice_collector import fastpath

_compiled_locate: Any = fastpath.compiled_function("locate")


class WireFormatError(ValueError):
    """The bytes are not laid out as this walker expects."""


@dataclass(slots=True)
class Located:
    """Where matches fell: whole resources, scopes, or single records (by decoded indexes)."""

    resources: set[int] = field(default_factory=set)
    scopes: set[tuple[int, int]] = field(default_factory=set)
    records: set[tuple[int, int, int]] = field(default_factory=set)
    # Per record: the (field number, occurrence) of each of its length-delimited fields a match
    # overlaps. The k-th occurrence of a repeated field is element k of the decoded list; a
    # singular field may occur more than once on the wire (the decoder merges them), so callers
    # read the decoded field whole, whichever occurrence was hit.
    parts: dict[tuple[int, int, int], list[tuple[int, int]]] = field(default_factory=dict)
    # Matches in parts the walker does not attribute (e.g. schema_url): callers may ignore them.
    elsewhere: int = 0


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(field number, value start, value end) of every length-delimited field in [start, end).

    The hot loop of the raw scan (it runs once per record of a flagged scope), so single-byte
    tags and one- or two-byte lengths — nearly all of them — skip the general varint decoder.
    """
    out: list[tuple[int, int, int]] = []
    append = out.append
    pos = start
    while pos < end:
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(buf, pos)
        wire_type = tag & 7
        if wire_type == 2:
            length = buf[pos] if pos < end else 0x80
            if length < 0x80:
                pos += 1
            elif pos + 1 < end and buf[pos + 1] < 0x80:  # two bytes: a record of 128 B to 16 KiB
                length = (length & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                length, pos = _varint(buf, pos)
            value_end = pos + length
            if value_end > end:
                raise WireFormatError("length past the end of its message")
            append((tag >> 3, pos, value_end))
            pos = value_end
        elif wire_type == 0:
            _, pos = _varint(buf, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise WireFormatError(f"wire type {wire_type} (groups) is not used by OTLP")
    if pos != end:
        raise WireFormatError("field runs past the end of its message")
    return out


def locate(buf: bytes, spans: list[tuple[int, int]]) -> Located:
    """Attribute every [start, end) byte span to the records, scopes and resources it overlaps.

    `spans` must be sorted and not overlap each other (as `finditer` yields them). A span
    overlapping several records marks all of them. The compiled twin answers when it is built
    (a walk over every record of a flagged scope is the masking stage's costliest Python after
    the rewrite itself); it raises on anything odd, and then this reference decides.
    """
    if _compiled_locate is not None:
        try:
            resources, scopes, records, parts, elsewhere = _compiled_locate(buf, spans)
        except ValueError:
            pass
        else:
            return Located(resources, scopes, records, parts, elsewhere)
    return locate_python(buf, spans)


def locate_python(buf: bytes, spans: list[tuple[int, int]]) -> Located:
    """`locate` in Python: the reference the compiled twin is tested against."""
    found = Located()
    if not spans:
        return found
    starts = [s for s, _ in spans]
    ends = [e for _, e in spans]
    count = len(spans)

    def overlapping(lo: int, hi: int) -> bool:
        # The first span ending after `lo` is the only one that can start before `hi` first.
        i = bisect_right(ends, lo)
        return i < count and starts[i] < hi

    resource_index = -1
    for number, r_start, r_end in _fields(buf, 0, len(buf)):
        if number != 1:
            if overlapping(r_start, r_end):
                found.elsewhere += 1
            continue
        resource_index += 1
        if not overlapping(r_start, r_end):
            continue
        scope_index = -1
        for inner, s_start, s_end in _fields(buf, r_start, r_end):
            if inner == 1:
                if overlapping(s_start, s_end):
                    found.resources.add(resource_index)
                continue
            if inner != 2:
                if overlapping(s_start, s_end):
                    found.elsewhere += 1
                continue
            scope_index += 1
            if not overlapping(s_start, s_end):
                continue
            record_index = -1
            # Records come in byte order and spans are sorted: sweep one pointer over both.
            k = bisect_right(ends, s_start)
            records = found.records
            for leaf, l_start, l_end in _fields(buf, s_start, s_end):
                if leaf != 2:
                    if overlapping(l_start, l_end):
                        if leaf == 1:
                            found.scopes.add((resource_index, scope_index))
                        else:
                            found.elsewhere += 1
                    continue
                record_index += 1
                while k < count and ends[k] <= l_start:
                    k += 1
                if k < count and starts[k] < l_end:
                    where = (resource_index, scope_index, record_index)
                    records.add(where)
                    found.parts[where] = _parts(buf, l_start, l_end, starts, ends, k)
    return found


def _parts(
    buf: bytes, start: int, end: int, starts: list[int], ends: list[int], k: int,
) -> list[tuple[int, int]]:
    """(field number, occurrence) of the record's length-delimited fields a span overlaps;
    `k` is the first span ending after `start` (fields come in byte order, so one sweep)."""
    out: list[tuple[int, int]] = []
    seen: dict[int, int] = {}
    count = len(starts)
    for number, f_start, f_end in _fields(buf, start, end):
        occurrence = seen.get(number, 0)
        seen[number] = occurrence + 1
        while k < count and ends[k] <= f_start:
            k += 1
        if k < count and starts[k] < f_end:
            out.append((number, occurrence))
    return out
