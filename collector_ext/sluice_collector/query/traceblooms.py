"""Finding a trace's rows without a B-tree over trace ids: a Bloom filter per block of rows.

Why: trace ids are random, so an index on them puts every new row on a random page of that
index — measured, that one index cost more than the row and the five other indexes together
(13.6 of 24.4 µs per row). Traces are looked up by people, a few times a minute; rows come in
by the ten thousand per second. So the writer pays a few bit-sets per row instead: each block
of up to BLOCK_ROWS consecutive row ids keeps a Bloom filter of the trace ids in it (16 bits
per row, 4 probes: about 0.25 % false positives), stored in `trace_blooms` in the same
transaction as the rows. A trace lookup tests every block's filter (closed blocks are cached:
they never change) and reads only the row-id ranges of the blocks that may hold it, by the
primary key. Blocks of several writers (`--workers` with inline indexing) may overlap; each
covers its own rows, and reading a range another writer's rows share costs only time.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence

BLOCK_ROWS = 8192
_BITS = 1 << 17  # 16 bits per row of a full block: a probe is 17 bits of the key
_MASK = _BITS - 1
# Odd 128-bit multiplier: the high half of the product depends on every bit of the id, so ids
# that differ only in their last digits (test ids, counters) still probe different bits.
_MIX = 0x9E3779B97F4A7C15F39CC0605CEDC835

SCHEMA = """
CREATE TABLE IF NOT EXISTS trace_blooms (
    first_id INTEGER PRIMARY KEY,
    last_id  INTEGER NOT NULL,
    bloom    BLOB NOT NULL
);
"""


def _key(trace_id: str) -> int:
    """128 well-mixed bits of a trace id."""
    if len(trace_id) == 32:
        try:
            return (int(trace_id, 16) * _MIX) >> 128
        except ValueError:
            pass
    # Not a W3C trace id (a rebuilt hand-written file): hash it.
    return int.from_bytes(hashlib.blake2b(trace_id.encode(), digest_size=16).digest())


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
        the caller's transaction."""
        if not trace_ids:
            return
        last_id = first_id + len(trace_ids) - 1
        if not self._first or last_id - self._first >= BLOCK_ROWS:
            self._first, self._bits = first_id, bytearray(_BITS // 8)
        bits = self._bits
        mask = _MASK
        for trace_id in trace_ids:
            if trace_id:
                key = _key(trace_id)  # four probes, unrolled: this runs for every row
                bit = key & mask
                bits[bit >> 3] |= 1 << (bit & 7)
                bit = (key >> 17) & mask
                bits[bit >> 3] |= 1 << (bit & 7)
                bit = (key >> 34) & mask
                bits[bit >> 3] |= 1 << (bit & 7)
                bit = (key >> 51) & mask
                bits[bit >> 3] |= 1 << (bit & 7)
        self._last = last_id
        conn.execute("INSERT OR REPLACE INTO trace_blooms (first_id, last_id, bloom) VALUES (?, ?, ?)",
                     (self._first, self._last, bytes(bits)))

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

    MAX_KEPT = 4096  # about 40 MB of filters, for 33 million rows

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
        """The ids of the trace's rows (read by the primary key, range by range)."""
        ids: list[int] = []
        for first_id, last_id in self.ranges(conn, trace_id):
            ids.extend(r[0] for r in conn.execute(
                "SELECT id FROM records WHERE id BETWEEN ? AND ? AND trace_id = ?",
                (first_id, last_id, trace_id)))
        return sorted(set(ids))
