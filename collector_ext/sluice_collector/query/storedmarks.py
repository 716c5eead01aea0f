"""When rows were stored, by ranges of row ids: what retention sweeps by, without an index.

Why: retention deletes the rows of a category stored longer ago than its `retention_days`.
An index over (category, stored_ns) made that a range scan, and cost every insert another
B-tree (about 3 µs of 22 per row). Rows are stored in transactions, a transaction's rows get
consecutive ids, and retention is counted in days: so a mark per writer per minute — the first
row id it covers and the latest `stored_ns` of its rows — says the same. A row id range is
expired when its mark's time is before the cutoff; the sweep deletes the category's rows in
those ranges by primary key. Every row of a range is stored no later than its mark says, so
nothing goes early; at most a minute late.

A writer opens a new mark when the minute changes, and whenever its rows do not follow its
previous ones (another writer — `--workers` with inline indexing — or a restart came in
between), so a mark never covers rows another writer stored later.
"""

from __future__ import annotations

import sqlite3

MARK_NS = 60 * 1_000_000_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS stored_marks (
    first_id  INTEGER PRIMARY KEY,
    stored_ns INTEGER NOT NULL
);
"""


class MarkWriter:
    """The writer's open mark (in memory: first id, minute, latest stored_ns, next id)."""

    def __init__(self) -> None:
        self._first = 0
        self._minute = -1
        self._latest = 0
        self._next = 0

    def add(self, conn: sqlite3.Connection, first_id: int, count: int, stored_ns: int) -> None:
        """Rows `first_id` … `first_id + count - 1` were stored at `stored_ns`; written inside
        the caller's transaction."""
        if not count:
            return
        minute = stored_ns // MARK_NS
        if first_id != self._next or minute != self._minute:
            self._first, self._minute, self._latest = first_id, minute, stored_ns
        self._latest = max(self._latest, stored_ns)
        self._next = first_id + count
        conn.execute("INSERT OR REPLACE INTO stored_marks (first_id, stored_ns) VALUES (?, ?)",
                     (self._first, self._latest))

    def reset(self) -> None:
        """After a rolled-back transaction: the next rows open a new mark."""
        self._next = 0


def expired_ranges(conn: sqlite3.Connection, cutoff_ns: int) -> list[tuple[int, int]]:
    """The row-id ranges whose rows were all stored before `cutoff_ns`, adjacent ones merged."""
    marks = conn.execute("SELECT first_id, stored_ns FROM stored_marks ORDER BY first_id").fetchall()
    out: list[tuple[int, int]] = []
    for index, (first_id, stored_ns) in enumerate(marks):
        if stored_ns >= cutoff_ns:
            continue
        last_id = marks[index + 1][0] - 1 if index + 1 < len(marks) else 2**63 - 1
        if out and out[-1][1] + 1 == first_id:
            out[-1] = (out[-1][0], last_id)
        else:
            out.append((first_id, last_id))
    return out


def trim(conn: sqlite3.Connection) -> None:
    """Drop the marks that cover no row any more (all before the oldest row's mark)."""
    conn.execute(
        "DELETE FROM stored_marks WHERE first_id < (SELECT COALESCE(MAX(first_id), 0) FROM "
        "stored_marks WHERE first_id <= (SELECT COALESCE(MIN(id), 0) FROM records))")


def build_missing(conn: sqlite3.Connection) -> None:
    """Marks for an index written before them (it had an index over (category, stored_ns)):
    one pass over the rows, then that index goes. Inside the caller's transaction."""
    writer = MarkWriter()
    for row_id, stored_ns in conn.execute("SELECT id, stored_ns FROM records ORDER BY id"):
        writer.add(conn, row_id, 1, stored_ns)
    conn.execute("DROP INDEX IF EXISTS records_stored")
