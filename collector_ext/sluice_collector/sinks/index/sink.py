"""The inline index sink: one SQLite transaction per batch, before the batch is acknowledged.

It serves where the index cannot follow the files (`fileindexer.py`): files off, text lines,
or `--workers` (several processes append to the same files). It encodes the very JSON lines
the file sink writes (`encode.json_lines`), so a query returns a record exactly as it is
stored — masked. Metrics are not indexed; `query.index_categories` narrows the categories
further. Checkpoints and retention sweeps run on `IndexMaintenance`'s thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sluice_collector.batch import Batch, Signal
from sluice_collector.encode import BatchCache, TimestampFormatter, json_lines
from sluice_collector.errors import SinkError
from sluice_collector.query.store import IndexStore, Row, row_of_line
from sluice_collector.sinks.files.config import FilePolicy
from sluice_collector.sinks.index.maintenance import IndexMaintenance


class IndexSink:
    """Indexes every routed log record and span of the categories it is asked to keep."""

    name = "index"

    def __init__(
        self,
        store: IndexStore,
        policies: Mapping[str, FilePolicy],
        *,
        index_categories: Sequence[str] = (),
        trace_url: str = "",
        sweep_interval_s: float = 3600.0,
        sweeps: bool = True,
        checkpoint_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._only = frozenset(index_categories)
        self._trace_url = trace_url
        self._clock = clock
        self._chores = IndexMaintenance(store, policies, sweep_interval_s=sweep_interval_s,
                                        sweeps=sweeps, checkpoint_interval_s=checkpoint_interval_s,
                                        clock=clock)
        self.indexed = 0
        self.last_error = ""

    def start(self) -> None:
        try:
            self.store.open(background_checkpoints=True)
        except (OSError, sqlite3.Error) as exc:
            raise SinkError(f"index: cannot open {self.store.path}: {exc}") from exc
        self._chores.start()
    def consume(self, batch: Batch) -> None:
        cache = BatchCache()
        cache.trace_url = self._trace_url
        ts = TimestampFormatter()
        rows: list[Row] = []
        for member in batch.family():  # one transaction for a batch and what was derived from it
            if member.signal is Signal.METRICS:
                continue
            for category, refs in member.routes.items():
                if not refs or (self._only and category not in self._only):
                    continue
                for line in json_lines(member, category, refs, cache=cache, ts=ts):
                    row = row_of_line(line, member.tenant)
                    if row is not None:
                        rows.append(row)
        try:
            self.store.insert(rows, int(self._clock() * 1e9))
        except (OSError, sqlite3.Error, RuntimeError) as exc:
            # Refuse the batch: the client retries, and the files, already written, get the
            # records twice rather than the index never.
            self.last_error = str(exc)
            raise SinkError(f"index: cannot write {self.store.path}: {exc}") from exc
        self.indexed += len(rows)

    def sweep(self) -> int:
        """Delete rows stored longer ago than their category's retention; returns how many."""
        return self._chores.sweep()

    def force_flush(self, timeout_s: float | None = None) -> bool:
        return True  # every batch is committed before consume returns

    def shutdown(self) -> None:
        self._chores.stop()
        self.store.close()

    def health(self) -> dict[str, Any]:
        error = self.last_error or self._chores.last_error
        return {"state": "degraded" if error else "ok", "path": str(self.store.path),
                "indexed": self.indexed, "last_error": error}

