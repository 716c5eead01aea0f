"""Trace lookups through the per-block Bloom filters (query/traceblooms.py) find exactly the
rows a full scan finds — across many blocks, writers that restart, retention, and an index
written before the filters existed (it had a B-tree over trace ids)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from sluice_collector.query.store import AccessScope, IndexStore, RecordFilter, Row
from sluice_collector.query.traceblooms import BLOCK_ROWS, BloomWriter, might_hold, prefix


def _row(rnd: random.Random, traces: list[str], i: int) -> Row:
    trace = rnd.choice(traces) if rnd.random() < 0.9 else ""
    return Row(time_ns=1_700_000_000_000_000_000 + rnd.randrange(10**12), severity=9,
               category=rnd.choice(["app", "access"]), service="svc", trace_id=trace,
               span_id="", user_id="", tenant="", event_name="", status="", duration_ms=None,
               line=f'{{"seq":{i},"trace_id":"{trace}"}}')


def _scan(path: Path, trace: str) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in conn.execute("SELECT id FROM records WHERE trace_id = ?", (trace,)))
    finally:
        conn.close()


def _found(store: IndexStore, trace: str) -> list[int]:
    rows, token = store.query(RecordFilter(trace_id=trace), AccessScope(), limit=100_000)
    assert not token
    return sorted(r.id for r in rows)


def test_every_trace_is_found_exactly_across_blocks_restarts_and_sweeps(tmp_path: Path) -> None:
    rnd = random.Random(5)
    # Many rare traces (most blocks hold none of them) and a few in every block.
    traces = [f"{rnd.getrandbits(128):032x}" for _ in range(3000)] + ["0" * 31 + "1", "not-hex"]
    path = tmp_path / "records.db"
    n = 0
    for _writer in range(3):  # each writer (a restart) opens blocks of its own
        store = IndexStore(path)
        store.open()
        for _batch in range(12):
            size = rnd.choice([1, 7, 500, 2500])
            store.insert([_row(rnd, traces, n + i) for i in range(size)], stored_ns=n)
            n += size
        store.close()
    assert n > 2 * BLOCK_ROWS
    store = IndexStore(path)
    store.open()
    try:
        # Only well-formed ids can be asked for; "not-hex" rows go through the hashing path.
        probe = [*rnd.sample(traces[:3000], 300), "0" * 31 + "1", "f" * 32]
        for trace in probe:
            assert _found(store, trace) == _scan(path, trace), trace
        store.delete_older("app", n // 2)  # retention leaves holes in the blocks
        for trace in probe[:100]:
            assert _found(store, trace) == _scan(path, trace), trace
        stats = store.stats(RecordFilter(trace_id=probe[0]), AccessScope())
        assert stats.total == len(_scan(path, probe[0]))
    finally:
        store.close()


def test_an_index_with_a_trace_btree_gets_filters_on_open(tmp_path: Path) -> None:
    rnd = random.Random(9)
    traces = [f"{rnd.getrandbits(128):032x}" for _ in range(50)]
    path = tmp_path / "records.db"
    store = IndexStore(path)
    store.open()
    store.insert([_row(rnd, traces, i) for i in range(3000)], stored_ns=1)
    store.close()
    # What an older sluice left: the B-tree over trace ids, and no filters.
    conn = sqlite3.connect(path)
    conn.execute("CREATE INDEX records_trace ON records (trace_id)")
    conn.execute("DELETE FROM trace_blooms")
    conn.commit()
    conn.close()
    store = IndexStore(path)
    store.open()
    try:
        for trace in traces:
            assert _found(store, trace) == _scan(path, trace)
        conn = sqlite3.connect(path)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        conn.close()
        assert "records_trace" not in names
    finally:
        store.close()


def test_a_trace_lookup_reads_by_row_id(tmp_path: Path) -> None:
    """Whatever else the filter holds, SQLite reads the trace's rows by their ids."""
    store = IndexStore(tmp_path / "records.db")
    store.open()
    rnd = random.Random(1)
    store.insert([_row(rnd, ["a" * 32], i) for i in range(100)], stored_ns=1)
    conn = sqlite3.connect(tmp_path / "records.db")
    try:
        where, params = store._where(conn, RecordFilter(trace_id="a" * 32, categories=("app",),
                                                        since_ns=1), AccessScope(user_id="u"))
        plan = " ".join(str(r[-1]) for r in conn.execute(
            f"EXPLAIN QUERY PLAN SELECT id FROM records WHERE {where} ORDER BY time_ns DESC",
            params))
    finally:
        conn.close()
        store.close()
    assert "INTEGER PRIMARY KEY (rowid=?)" in plan, plan


def test_ids_with_little_entropy_still_find_few_blocks(tmp_path: Path) -> None:
    """Counters and 64-bit ids zero-padded to 128 bits (Jaeger, Zipkin) differ in few digits:
    mixed before use, they still leave a lookup one block or two to read."""
    store = IndexStore(tmp_path / "records.db")
    store.open()
    rnd = random.Random(4)
    n = 5 * BLOCK_ROWS
    kinds = {"counter": [f"{i // 4:032x}" for i in range(n)],
             "jaeger": [f"{rnd.getrandbits(64) if i % 4 == 0 else 0:032x}" for i in range(n)]}
    try:
        for kind, ids in kinds.items():
            if kind == "jaeger":  # one id per 4 rows, like the counter
                ids = [ids[i - i % 4] for i in range(n)]
            first = store.last_id() + 1
            store.insert([_row(rnd, [t], i)._replace(trace_id=t) for i, t in enumerate(ids)],
                         stored_ns=1)
            conn = sqlite3.connect(tmp_path / "records.db")
            try:
                for trace in rnd.sample(ids, 50):
                    assert len(store._bloom_reader.ranges(conn, trace)) <= 3, (kind, trace)
                    found = store._bloom_reader.row_ids(conn, trace)
                    assert [i - first for i in found] == [j for j, t in enumerate(ids) if t == trace]
            finally:
                conn.close()
    finally:
        store.close()


def test_filters_and_prefixes_stay_sharp_on_ids_with_little_entropy() -> None:
    """A full block of counter ids: other counters hit its filter about 0.25 % of the time (not
    more than 1 %), and no two ids share a prefix (which would make a lookup read both)."""
    ids = [f"{i:032x}" for i in range(BLOCK_ROWS)]
    jaeger = [f"{i * 7919:032x}" for i in range(BLOCK_ROWS)]  # 64-bit ids, zero-padded
    for block in (ids, jaeger):
        conn = sqlite3.connect(":memory:")
        conn.executescript("CREATE TABLE trace_blooms (first_id INTEGER PRIMARY KEY, last_id, bloom);"
                           "CREATE TABLE trace_prefixes (first_id INTEGER PRIMARY KEY, prefixes);")
        writer = BloomWriter()
        writer.add(conn, 1, block)
        bloom = conn.execute("SELECT bloom FROM trace_blooms").fetchone()[0]
        others = [f"{BLOCK_ROWS * 10 + i:032x}" for i in range(20000)]
        assert sum(might_hold(bloom, t) for t in others) < 200
        assert all(might_hold(bloom, t) for t in block)
        assert len({prefix(t) for t in block}) == len(block)
        conn.close()
