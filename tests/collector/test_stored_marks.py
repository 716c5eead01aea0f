"""Retention sweeps by the marks of when rows were stored (query/storedmarks.py): never a row
early, every row at most a minute late — with several writers interleaving, clocks that go
back (a rebuild stores rows at their files' mtimes), and an index written before the marks."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from sluice_collector.query.store import IndexStore, Row
from sluice_collector.query.storedmarks import MARK_NS

MINUTE = MARK_NS
T0 = 1_900_000_000 * 1_000_000_000


def _row(category: str, i: int) -> Row:
    return Row(time_ns=T0, severity=9, category=category, service="svc", trace_id="", span_id="",
               user_id="", tenant="", event_name="", status="", duration_ms=None,
               line=f'{{"seq":{i}}}')


def _stored(path: Path) -> list[tuple[int, str, int]]:
    conn = sqlite3.connect(path)
    try:
        return [(r[0], r[1], r[2]) for r in conn.execute("SELECT id, category, stored_ns FROM records")]
    finally:
        conn.close()


def _fill(path: Path, rnd: random.Random) -> None:
    writers = [IndexStore(path) for _ in range(3)]
    for w in writers:
        w.open()
    clock = T0
    n = 0
    for _ in range(400):
        writer = rnd.choice(writers)
        clock += rnd.choice([0, 1, 10**9, 20 * 10**9, -10 * 10**9, 2 * MINUTE, -3 * MINUTE])
        size = rnd.choice([1, 3, 40])
        writer.insert([_row(rnd.choice(["app", "access"]), n + i) for i in range(size)], clock)
        n += size
    for w in writers:
        w.close()


def test_a_sweep_takes_no_row_early_and_every_row_within_a_minute(tmp_path: Path) -> None:
    rnd = random.Random(3)
    path = tmp_path / "records.db"
    _fill(path, rnd)
    rows = _stored(path)
    times = sorted(t for _, _, t in rows)
    store = IndexStore(path)
    store.open()
    try:
        for cutoff in [times[len(times) // 4], times[len(times) // 2] + 7, times[-1] + 1]:
            before = {r[0]: r for r in _stored(path)}
            removed = store.delete_older("app", cutoff)
            after = {r[0] for r in _stored(path)}
            gone = [before[i] for i in before if i not in after]
            assert removed == len(gone)
            assert all(category == "app" and stored < cutoff for _, category, stored in gone)
            late = [r for i, r in before.items() if i in after and r[1] == "app"
                    and r[2] < cutoff // MINUTE * MINUTE]
            assert not late, late[:3]
        assert all(category == "access" for _, category, _ in _stored(path))
    finally:
        store.close()


def test_an_index_with_a_stored_btree_gets_marks_on_open(tmp_path: Path) -> None:
    path = tmp_path / "records.db"
    store = IndexStore(path)
    store.open()
    store.insert([_row("app", i) for i in range(10)], T0)
    store.insert([_row("app", i) for i in range(10, 20)], T0 + 10 * MINUTE)
    store.close()
    conn = sqlite3.connect(path)  # what an older sluice left: the B-tree, and no marks
    conn.execute("CREATE INDEX records_stored ON records (category, stored_ns)")
    conn.execute("DELETE FROM stored_marks")
    conn.commit()
    conn.close()
    store = IndexStore(path)
    store.open()
    try:
        assert store.delete_older("app", T0 + 5 * MINUTE) == 10
        assert len(_stored(path)) == 10
        conn = sqlite3.connect(path)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        conn.close()
        assert "records_stored" not in names
    finally:
        store.close()
