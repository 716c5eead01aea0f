"""Finding a trace's rows without a B-tree over trace ids: a Bloom filter per block of rows.

Why: trace ids are random, so an index on them puts every new row on a random page of that
index — measured, that one index cost more than the row and the five other indexes together
(13.6 of 24.4 µs per row). Traces are looked up by people, a few times a minute; rows come in
by the ten thousand per second. So the writer pays a few bit-sets per row instead: each block
of up to BLOCK_ROWS consecutive row ids keeps a Bloom filter of the trace ids in it (16 bits
per row, 4 probes: about 0.25 % false positives), stored in `trace_blooms` in the same
transaction as the rows. Each transaction also stores its rows' trace-id prefixes (8 bytes
a row, in row order). A trace lookup tests every block's filter (kept in memory), searches the
prefixes of the blocks that may hold the trace (a `bytes.find`, in C), and reads only the rows
whose prefix matches, by primary key — reading a whole block's rows instead cost 20 ms.
Blocks of several writers (`--workers` with inline indexing) may overlap; each covers its own
rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Sequence

BLOCK_ROWS = 8192
_BITS = 1 << 17  # 16 bits per row of a full block: a probe is 17 bits of the key
_MASK = _BITS - 1
_M128 = (1 << 128) - 1
# Two rounds of xor-shift-multiply over 128 bits (odd multipliers): every output bit depends on
# every bit of the id, so ids that differ only in a few digits — counters, test ids, 64-bit
# Jaeger/Zipkin ids zero-padded to 128 bits — still spread over the filter and the prefixes.
_MIX1 = 0x9E3779B97F4A7C15F39CC0605CEDC835
_MIX2 = 0xD6E8FEB86659FD93C2B2AE3D27D4EB4F

SCHEMA = """
CREATE TABLE IF NOT EXISTS trace_blooms (
    first_id INTEGER PRIMARY KEY,
    last_id  INTEGER NOT NULL,
    bloom    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS trace_prefixes (
    first_id INTEGER PRIMARY KEY,
    prefixes BLOB NOT NULL
);
"""
PREFIX_BYTES = 8
_NO_TRACE = bytes(PREFIX_BYTES)


def _key(trace_id: str) -> int:
    """128 well-mixed bits of a trace id (the Bloom probes take the low ones, the prefixes
    the high ones)."""
    x = -1
    if len(trace_id) == 32:
        with contextlib.suppress(ValueError):
            x = int(trace_id, 16)
    if x < 0:  # not a W3C trace id (a rebuilt hand-written file): hash it
        return int.from_bytes(hashlib.blake2b(trace_id.encode(), digest_size=16).digest())
    x ^= x >> 64
    x = (x * _MIX1) & _M128
    x ^= x >> 67
    x = (x * _MIX2) & _M128
    return x ^ (x >> 61)


def prefix(trace_id: str) -> bytes:
    """A row's 8-byte trace-id prefix: the high half of the mixed id (zeros for none). Not the
    id's own first bytes: 64-bit trace ids (Jaeger, Zipkin) are zero there."""
    return (_key(trace_id) >> 64).to_bytes(PREFIX_BYTES, "big") if trace_id else _NO_TRACE


def might_hold(bloom: bytes, trace_id: str) -> bool:
    key = _key(trace_id)
    for _probe in range(4):
        bit = key & _MASK
        if not bloom[bit >> 3] & (1 << (bit & 7)):
            return False
        key >>= 17
    return True


class BloomWriter:
    """The writer's open block: rows go in until it spans BLOCK_ROWS ids, then a new one opens.
    Lives with the writer connection; a new writer (restart, another worker) opens its own."""

    def __init__(self) -> None:
        self._first = 0
        self._last = 0
        self._bits = bytearray(_BITS // 8)

    def add(self, conn: sqlite3.Connection, first_id: int, trace_ids: Sequence[str]) -> None:
        """Rows `first_id`, `first_id + 1`, … carry `trace_ids` ("" for none); written inside
        the caller's transaction, split over as many blocks as they fill."""
        done = 0
        while done < len(trace_ids):
            start = first_id + done
            if not self._first or start - self._first >= BLOCK_ROWS or start != self._last + 1:
                self._first, self._bits = start, bytearray(_BITS // 8)
            chunk = trace_ids[done:done + BLOCK_ROWS - (start - self._first)]
            keys = [_key(t) if t else None for t in chunk]
            self._set(keys)
            self._last = start + len(chunk) - 1
            conn.execute("INSERT OR REPLACE INTO trace_blooms (first_id, last_id, bloom) "
                         "VALUES (?, ?, ?)", (self._first, self._last, bytes(self._bits)))
            prefixes = b"".join(_NO_TRACE if k is None else (k >> 64).to_bytes(PREFIX_BYTES, "big")
                                for k in keys)
            conn.execute("INSERT OR REPLACE INTO trace_prefixes (first_id, prefixes) VALUES (?, ?)",
                         (start, prefixes))
            done += len(chunk)

    def _set(self, keys: Sequence[int | None]) -> None:
        bits = self._bits
        mask = _MASK
        for key in keys:
            if key is not None:  # four probes, unrolled: this runs for every row
                bit = key & mask
                bits[bit >> 3] |= 1 << (bit & 7)
                bit = (key >> 17) & mask
                bits[bit >> 3] |= 1 << (bit & 7)
                bit = (key >> 34) & mask
                bits[bit >> 3] |= 1 << (bit & 7)
                bit = (key >> 51) & mask
                bits[bit >> 3] |= 1 << (bit & 7)

    def reset(self) -> None:
        """After a rolled-back transaction the stored block may lack rows of this one: start
        a new block (the rows of the failed transaction are gone anyway)."""
        self._first = 0


def build_missing(conn: sqlite3.Connection) -> None:
    """Blooms for an index written before they existed (it had a B-tree over trace ids): one
    pass over the rows, then that index goes. Inside the caller's transaction."""
    writer = BloomWriter()
    block: list[str] = []
    start = 0
    for row_id, trace_id in conn.execute("SELECT id, trace_id FROM records ORDER BY id"):
        if block and (row_id != start + len(block) or len(block) >= BLOCK_ROWS):
            writer.add(conn, start, block)
            writer.reset()
            block = []
        if not block:
            start = row_id
        block.append(trace_id)
    writer.add(conn, start, block)
    conn.execute("DROP INDEX IF EXISTS records_trace")


class BloomReader:
    """Row-id ranges that may hold a trace. Filters are kept by (first id, last id): a block's
    filter changes only with its last id, so a kept one is never stale."""

    MAX_KEPT = 4096  # 64 MB of filters, for 33 million rows

    def __init__(self) -> None:
        self._closed: dict[tuple[int, int], bytes] = {}

    def ranges(self, conn: sqlite3.Connection, trace_id: str) -> list[tuple[int, int]]:
        out = []
        seen: set[tuple[int, int]] = set()
        for first_id, last_id in conn.execute("SELECT first_id, last_id FROM trace_blooms"):
            key = (first_id, last_id)
            seen.add(key)
            bloom = self._closed.get(key)
            if bloom is None:
                bloom = conn.execute("SELECT bloom FROM trace_blooms WHERE first_id = ?",
                                     (first_id,)).fetchone()[0]
                if len(self._closed) < self.MAX_KEPT:
                    self._closed[key] = bloom
            if might_hold(bloom, trace_id):
                out.append(key)
        for key in [k for k in self._closed if k not in seen]:  # swept away
            del self._closed[key]
        return out

    def row_ids(self, conn: sqlite3.Connection, trace_id: str) -> list[int]:
        """The ids of the trace's rows: candidates by prefix in the blocks that may hold it,
        then checked by primary key."""
        needle = prefix(trace_id)
        candidates: list[int] = []
        for first_id, last_id in self.ranges(conn, trace_id):
            for start, prefixes in conn.execute(
                    "SELECT first_id, prefixes FROM trace_prefixes WHERE first_id BETWEEN ? AND ?",
                    (first_id, last_id)):
                at = prefixes.find(needle)
                while at >= 0:
                    if at % PREFIX_BYTES == 0:
                        candidates.append(start + at // PREFIX_BYTES)
                    at = prefixes.find(needle, at + 1)
        if not candidates:
            return []
        found = conn.execute(
            f"SELECT id FROM records WHERE id IN ({','.join(map(str, candidates))}) "  # noqa: S608 - ints
            "AND trace_id = ?", (trace_id,))
        return sorted(r[0] for r in found)


def trim(conn: sqlite3.Connection) -> None:
    """Drop the filters and prefixes that cover no row any more (retention removed them)."""
    oldest = "(SELECT COALESCE(MIN(id), 9223372036854775807) FROM records)"
    conn.execute(f"DELETE FROM trace_blooms WHERE last_id < {oldest}")  # noqa: S608 - fixed SQL
    conn.execute(f"DELETE FROM trace_prefixes WHERE first_id + length(prefixes) / {PREFIX_BYTES} "  # noqa: S608
                 f"<= {oldest}")
