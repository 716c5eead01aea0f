"""What the alert sink keeps on disk so a restart neither re-fires everything nor loses a
firing alert: a snapshot and a journal, both in the state directory
(`<files.directory>/.alerts` by default).

    state.json   the snapshot: every tracked group's window buckets (30 numbers pairs at most),
                 the template values of its last record and its firing alert, plus the alert
                 events not yet handed to every destination. Written every
                 `alerts.state.save_interval` when something changed, and at shutdown, as a
                 temp file renamed over the old one.
    journal      one JSON line per event since the snapshot (an alert fired or resolved, its
                 records were written). Appended — one write, flushed to the OS — the moment it
                 happens, so a firing alert survives even a SIGKILL; emptied after each snapshot.

A torn last journal line (a crash inside a write) is ignored; a snapshot that cannot be read is
set aside as `state.json.bad` and the sink starts empty rather than not at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("sluice.alerts")

SNAPSHOT = "state.json"
JOURNAL = "journal"
VERSION = 1


class AlertState:
    """The snapshot and journal files of one alert sink (not thread-safe: the sink's lock)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._journal_fd = -1
        self.journal_bytes = 0

    def open(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """Create the directory and read what a previous run left: (snapshot or None, journal
        entries in order). The journal stays open for appends."""
        self.directory.mkdir(parents=True, exist_ok=True)
        snapshot = self._read_snapshot()
        entries: list[dict[str, Any]] = []
        path = self.directory / JOURNAL
        with contextlib.suppress(FileNotFoundError):
            data = path.read_bytes()
            offset = 0
            while offset < len(data):
                end = data.find(b"\n", offset)
                if end < 0:
                    break  # a torn tail: the write a crash cut short
                line = data[offset:end]
                try:
                    entry = orjson.loads(line) if line else None
                except orjson.JSONDecodeError:
                    break
                if isinstance(entry, dict):
                    entries.append(entry)
                offset = end + 1
            if offset < len(data):
                os.truncate(path, offset)
        self._journal_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.journal_bytes = os.fstat(self._journal_fd).st_size
        return snapshot, entries

    def _read_snapshot(self) -> dict[str, Any] | None:
        path = self.directory / SNAPSHOT
        try:
            data = orjson.loads(path.read_bytes())
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"not a version {VERSION} alert state")
            return data
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            bad = path.with_name(SNAPSHOT + ".bad")
            log.warning("alerts: cannot read %s (%s); moved it to %s and starting without it",
                        path, exc, bad.name)
            with contextlib.suppress(OSError):
                os.replace(path, bad)
            return None

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Journal `entries` in one write (flushed to the OS when this returns)."""
        if not entries or self._journal_fd < 0:
            return
        data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        view = memoryview(data)
        while view:
            view = view[os.write(self._journal_fd, view):]
        self.journal_bytes += len(data)

    def save(self, snapshot: dict[str, Any]) -> None:
        """Replace the snapshot, then empty the journal it now includes."""
        path = self.directory / SNAPSHOT
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({**snapshot, "version": VERSION}))
        os.replace(tmp, path)
        if self._journal_fd >= 0:
            os.ftruncate(self._journal_fd, 0)
            self.journal_bytes = 0

    def close(self) -> None:
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1


__all__ = ["AlertState"]
