"""Tails are pushed: a commit to the index wakes every waiting tail of the process at once, with
no thread asking the index anything; only where other processes write the same index
(`--workers`) does a follower also poll, and then it finds their rows."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sluice_collector.query.core import IndexFollower
from sluice_collector.query.store import IndexStore, row_of_line

LINE = (b'{"timestamp":"2026-01-01T00:00:00.0Z","category":"app","severity_number":9,'
        b'"body":"pushed","attributes":{}}\n')


def _waiter(follower: IndexFollower, after_id: int) -> threading.Thread:
    # An hour: it ends only when woken by a new row, never by its own timeout.
    waiter = threading.Thread(target=follower.wait, args=(after_id, 3600.0), daemon=True)
    waiter.start()
    return waiter


def test_a_commit_wakes_a_waiting_tail_and_nothing_polls(tmp_path: Path) -> None:
    reader = IndexStore(tmp_path / "records.db")
    reader.open()
    follower = IndexFollower(reader)
    follower.subscribe()
    try:
        waiter = _waiter(follower, reader.last_id())
        writer = IndexStore(tmp_path / "records.db")  # the index sink's own store object
        writer.open()
        row = row_of_line(LINE)
        assert row is not None
        writer.insert([row], 1)
        waiter.join(60)
        assert not waiter.is_alive(), "the commit did not wake the tail"
        assert follower.newest() == writer.last_id() == 1
        assert not any(t.name == "sluice-index-follower" for t in threading.enumerate())
    finally:
        follower.unsubscribe()
        follower.close()


def test_with_other_writers_the_follower_polls_for_their_rows(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "records.db")
    store.open()
    follower = IndexFollower(store, poll_s=0.05)
    follower.subscribe()
    try:
        waiter = _waiter(follower, store.last_id())
        row = row_of_line(LINE)
        assert row is not None
        # Another process's insert: straight into the file, no commit listener of ours hears it.
        other = sqlite3.connect(tmp_path / "records.db")
        columns = ", ".join(["?"] * (len(row) + 1))
        other.execute(f"INSERT INTO records ({', '.join(row._fields)}, stored_ns) VALUES ({columns})",
                      (*row, 1))
        other.commit()
        other.close()
        waiter.join(60)
        assert not waiter.is_alive(), "the poll never saw the other process's row"
    finally:
        follower.unsubscribe()
        follower.close()
