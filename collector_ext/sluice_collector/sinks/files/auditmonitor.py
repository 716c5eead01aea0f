"""The receiver's own audit chain check: `sluice audit verify`, incrementally, on a timer.

Why in the receiver: a chain nobody verifies proves nothing until someone thinks of running
`verify`, usually long after the fact. Worker 0 (or the only receiver process) checks every
audit set every `files.audit_chain.verify_interval_s`, resuming each set from where the last run
left it (`auditverify.ChainVerifier`), so a run costs what was written since the last one.

What it publishes:

- ``sluice_audit_chain_intact{set}``: 1 when the set verified intact at the last run, 0 when
  broken (``set`` is the set's path relative to `files.directory`; ``.audit-manifest`` for the
  manifest);
- ``sluice_audit_chain_last_verified_timestamp_seconds``: when the last run finished;
- each new break once through `on_break(set, where)` — the receiver writes it into its own
  stream as one ``system`` record with the event name ``audit.chain.broken``. A set that stays
  broken is not reported again; one that is intact again and breaks again is. A set seen once
  and then gone altogether (files and head) is a break too.

A break found on a resumed run is confirmed by verifying that set again from its start before
anything is reported, so what is reported never rests on remembered state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from sluice_collector.sinks.files.auditchain import MANIFEST_NAME, ChainBreak, ChainHasher
from sluice_collector.sinks.files.auditverify import ChainReport, ChainVerifier

__all__ = ["AuditChainMonitor", "BreakHandler"]

log = logging.getLogger("sluice.files")

BreakHandler = Callable[[str, ChainBreak], bool]  # (set, first broken link) → reported?


class AuditChainMonitor:
    """Verifies every audit set under `directory` now and then every `interval_s` seconds."""

    def __init__(self, directory: Path, hasher: ChainHasher, templates: Iterable[str],
                 registry: CollectorRegistry, *, interval_s: float, on_break: BreakHandler,
                 clock: Callable[[], float] = time.time) -> None:
        self._verifier = ChainVerifier(directory, hasher, templates)
        self._interval_s = interval_s
        self._on_break = on_break
        self._clock = clock
        self._intact = Gauge(
            "sluice_audit_chain_intact",
            "1 when the audit file set verified intact at the receiver's last check, 0 when its "
            "hash chain is broken (sluice audit verify names the point).", ["set"], registry=registry)
        self._last_verified = Gauge(
            "sluice_audit_chain_last_verified_timestamp_seconds",
            "When the receiver last finished verifying every audit file set (Unix time).",
            registry=registry)
        self._reported: set[str] = set()
        self._known: dict[str, Path] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_error = ""

    def start(self) -> None:
        """Check now and then every `interval_s`, in a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="sluice-audit-verify", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # a failing check must not kill the thread nor the receiver
                message = f"audit chain check failed: {exc}"
                if message != self.last_error:
                    log.exception("files: audit chain check failed")
                self.last_error = message
            if self._stop.wait(self._interval_s):
                return

    def run_once(self) -> list[ChainReport]:
        """One pass over every set: update the gauges, report new breaks."""
        with self._lock:
            reports = self._verifier.run()
            seen: set[str] = set()
            for report in reports:
                broken = report.broken
                if broken is not None and report.rel != MANIFEST_NAME and report.rel not in self._reported:
                    # Before telling anyone: from the set's start, remembering nothing.
                    self._verifier.forget(report.active)
                    broken = self._verifier.verify(report.active).broken
                seen.add(report.rel)
                self._known.setdefault(report.rel, report.active)
                self._publish(report.rel, broken)
            for rel in set(self._known) - seen:
                self._publish(rel, ChainBreak(self._known[rel], 0, "the set is gone: its files and "
                                              "its head file were removed"))
            self._last_verified.set(self._clock())
            return reports

    def _publish(self, rel: str, broken: ChainBreak | None) -> None:
        self._intact.labels(set=rel).set(0 if broken else 1)
        if broken is None:
            self._reported.discard(rel)
        elif rel not in self._reported and not self._stop.is_set() and self._on_break(rel, broken):
            self._reported.add(rel)
