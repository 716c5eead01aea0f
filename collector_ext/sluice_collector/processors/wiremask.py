"""Masking on the wire: the masking stage's collect-and-write-back without decoded messages.

On a PII-dense request a third of the records hold something to mask, and walking them as
decoded protobuf messages — a Python object per KeyValue and AnyValue read, a `setattr` per
masked string, then serialising the whole request again for the compiled path — cost about as
much as the masking itself. Here the compiled path reads the strings the walk would collect
straight from the request's encoding (`_fastpath.mask_collect`: the same records, scopes and
resources the raw scan points at, the same fields, the same keys), the engine masks them as
before, and `_fastpath.splice` writes the new strings, the `sluice.masked` counts and the
dropped records into a copy of the encoding. The request is then decoded once from that copy,
which is what the later stages read.

`mask_on_wire` returns None — and the stage takes its walk over the decoded request, the
reference (`processors/masking.py`) — whenever the encoding could hide something from a
splice: a singular field or an AnyValue member sent twice (protobuf keeps the last, so an
earlier copy would stay on the wire), a match outside resources, scopes and records, a
`sluice.masked` already present, or anything malformed. tests/collector/test_wiremask.py
holds both paths to the same request, counts and drops.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sluice._wire import any_value, key_value, varint
from sluice.masking import KeyRule, Masker
from sluice_collector import fastpath

__all__ = ["MASKED_ATTRIBUTE", "WireMasked", "mask_on_wire"]

_COLLECT: Any = fastpath.compiled_function("mask_collect")
_SPLICE: Any = fastpath.compiled_function("splice")
AVAILABLE = _COLLECT is not None and _SPLICE is not None

_REPLACE, _APPEND, _DROP = 0, 1, 2
MASKED_ATTRIBUTE = "sluice.masked"  # the count of values masked in a record, scope or resource
_MASKED_KEY = MASKED_ATTRIBUTE.encode()
_CONTAINERS = {"kvlist_value": "{...}", "array_value": "[...]"}
_SIGNALS = {"logs": 0, "traces": 1}


@dataclass(slots=True)
class WireMasked:
    """What masking did to one request: its new encoding (None: nothing changed), the values
    masked per detector, and the records dropped."""

    data: bytes | None
    counts: Counter[str]
    dropped: int


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


@functools.lru_cache(maxsize=1024)
def _mark(field: int, hits: int) -> bytes:
    """KeyValue{key: "sluice.masked", value: {int_value: hits}} as element of `field`."""
    return _field(field, key_value(MASKED_ATTRIBUTE, hits))


def mask_on_wire(masker: Masker, signal: str, raw: bytes, spans: list[tuple[int, int]]) -> WireMasked | None:
    """Mask what `spans` (the raw scan's matches) point at in the encoded request `raw` of
    `signal` ("logs" or "traces"); None when only the walk over the decoded request can."""
    if not AVAILABLE or signal not in _SIGNALS or _MASKED_KEY in raw:
        return None
    try:
        texts, keys, places, values, owners = _COLLECT(_SIGNALS[signal], raw, spans)
    except fastpath.Unsupported:
        return None
    edits: list[tuple[int, int, int, bytes]] = []
    hits: Counter[int] = Counter()
    drop: set[int] = set()
    counts: Counter[str] = Counter()
    skipped: list[tuple[int, int]] = []  # texts under a container its key hides whole
    index, total = 0, len(values)
    while index < total:
        owner, key, kind, value, start, end, texts_from, texts_to, values_to = values[index]
        rule = masker.key_rule(key)
        whole: str | None = None
        if kind in _CONTAINERS:
            if rule is KeyRule.SENSITIVE:
                whole = _CONTAINERS[kind]
                skipped.append((texts_from, texts_to))
                index = values_to
            else:
                index += 1
        else:
            if rule in (KeyRule.SENSITIVE, KeyRule.PSEUDONYMIZE):
                whole = value.hex() if isinstance(value, bytes) else str(value)
            index += 1
        if whole is None:
            continue
        new, detector, drop_it = masker.mask_whole(whole, rule)
        if new is None:
            continue
        edits.append((start, end, _REPLACE, any_value(new)))
        counts[detector] += 1
        hits[owner] += 1
        if drop_it:
            drop.add(owner)
    if skipped:
        keep = [True] * len(texts)
        for first, last in skipped:
            keep[first:last] = [False] * (last - first)
        texts = [t for t, k in zip(texts, keep, strict=True) if k]
        keys = [t for t, k in zip(keys, keep, strict=True) if k]
        places = [t for t, k in zip(places, keep, strict=True) if k]
    if texts:
        result = masker.mask_many(texts, keys, prescanned=True)
        for position, count in result.hits.items():
            owner, start, end = places[position]
            new_text = result.values[position]
            assert new_text is not None
            edits.append((start, end, _REPLACE, new_text.encode("utf-8")))
            hits[owner] += count
        for position in result.drop:
            drop.add(places[position][0])
        counts.update(result.counts)
    if not edits and not drop:
        return WireMasked(None, counts, 0)
    dropped = 0
    for owner in drop:
        if _inside(owners, drop, owners[owner][6]):
            continue  # its scope or resource goes anyway
        elem_start, elem_end = owners[owner][0], owners[owner][1]
        edits.append((elem_start, elem_end, _DROP, b""))
        dropped += owners[owner][5]
    for owner, count in hits.items():
        if owner in drop:
            continue
        _, _, holder_start, holder_end, field, _, _ = owners[owner]
        if holder_start < 0:
            return None  # cannot happen: a hit is inside its holder
        edits.append((holder_start, holder_end, _APPEND, _mark(field, count)))
    # No two edits start at one byte (a holder's first field, a dropped message's first tag,
    # a string's first byte are all different places), so plain tuple order is splice order.
    edits.sort()
    try:
        data = _SPLICE(raw, edits)
    except ValueError:  # Unsupported, or edits out of order: cannot happen, but never a crash
        return None
    return WireMasked(data, counts, dropped)


def _inside(owners: list[tuple[int, ...]], drop: set[int], parent: int) -> bool:
    while parent >= 0:
        if parent in drop:
            return True
        parent = owners[parent][6]
    return False
