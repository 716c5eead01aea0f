"""`AlertsSink`: log alert rules evaluated on the masked stream, delivered to Alertmanager and
written back as records of the `alerts` category.

Why a sink, and why the last one (docs/design.md, "Alerts"): a batch reaches it only after
every other sink took it — so a rule counts exactly the records that were acknowledged, never
a batch that a later sink refused and the client will send again — and it reads the routed,
masked batch as the other sinks do. It never refuses a batch: counting cannot fail, and a
destination that is down (Alertmanager, a full disk for the records) is retried from this
sink's own state.

Per batch: `scan` the batch without a lock (matching, grouping), then under the lock add the
counts to the windows and, for each alert that fired or resolved, in this order:

1. append the change to the Alertmanager spool (durable; the sender thread posts it),
2. append it to the journal (`state.py`), so a firing alert survives even a SIGKILL,
3. queue its record for the `alerts` category (`records.py`), written right after the lock
   is released, by whoever gets there first, in order.

A thread ticks every `evaluation_interval`: it slides the windows (alerts resolve when their
window drains, even with no traffic), retries records a sink refused, and saves the snapshot
every `state.save_interval`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import SinkError, SluiceReceiverError
from sluice_collector.sinks._delivery.sender import flush_senders
from sluice_collector.sinks._delivery.spool import DiskSpool
from sluice_collector.sinks.alerts.alertmanager import AlertmanagerMetrics, AlertmanagerSender
from sluice_collector.sinks.alerts.config import AlertsConfig
from sluice_collector.sinks.alerts.evaluator import AlertEvaluator, AlertEvent
from sluice_collector.sinks.alerts.records import AlertRecordWriter
from sluice_collector.sinks.alerts.state import AlertState
from sluice_collector.sinks.base import Sink
from sluice_collector.telemetry import ReceiverTelemetry

log = logging.getLogger("sluice.alerts")

# Changes held in memory while the spool cannot be written (disk trouble), oldest dropped first.
MAX_PENDING_CHANGES = 10_000


class _AlertMetrics:
    def __init__(self, telemetry: ReceiverTelemetry) -> None:
        r = telemetry.registry
        self.evaluated = Counter("sluice_alerts_evaluated_records", "Log records the alert rules "
                                 "were evaluated on.", registry=r)
        self.matched = Counter("sluice_alerts_matched_records", "Records a rule counted as "
                               "matching.", ["rule"], registry=r)
        self.changes = Counter("sluice_alerts_changes", "Alerts that started firing or resolved.",
                               ["rule", "status"], registry=r)
        self.firing = Gauge("sluice_alerts_firing", "Alerts firing now.", ["rule"], registry=r)
        self.groups = Gauge("sluice_alerts_groups", "Groups a rule tracks now (bounded by "
                            "alerts.max_groups).", ["rule"], registry=r)
        self.groups_dropped = Counter("sluice_alerts_groups_dropped", "New groups not tracked "
                                      "because the rule already tracked alerts.max_groups (their "
                                      "records were not counted).", ["rule"], registry=r)
        self.spooled = Counter("sluice_alerts_spooled", "Alert changes taken into the "
                               "Alertmanager spool.", registry=r)
        self.spool_events = Gauge("sluice_alerts_spool_events", "Alert changes waiting in the "
                                  "Alertmanager spool.", registry=r)
        self.spool_bytes = Gauge("sluice_alerts_spool_bytes", "Bytes of Alertmanager spool "
                                 "segments on disk.", registry=r)
        self.record_failures = Counter("sluice_alerts_record_failures", "Alert records a sink "
                                       "refused (they are retried).", ["sink"], registry=r)
        self.am = AlertmanagerMetrics(r)


class AlertsSink:
    """Evaluates `config.rules` on every acknowledged batch; see the module docstring.

    `record_sinks` are the sinks the `alerts` records go to (those built before this one);
    `clock` is the receiver's clock for windows and alert times (injectable for tests).
    """

    name = "alerts"

    def __init__(self, config: AlertsConfig, telemetry: ReceiverTelemetry, state_dir: Path, *,
                 record_sinks: Sequence[Sink] = (), clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state_dir = config.state_directory or Path(state_dir)
        self._clock = clock
        self.metrics = _AlertMetrics(telemetry)
        self.evaluator = AlertEvaluator(config.rules, max_groups=config.max_groups,
                                        on_group_dropped=self._group_dropped)
        self.records = AlertRecordWriter(
            record_sinks, clock, on_failure=lambda n: self.metrics.record_failures.labels(n).inc())
        self._state = AlertState(self.state_dir)
        self._lock = threading.Lock()  # evaluator, journal, spool order, outbox
        self._write_lock = threading.Lock()  # one writer of records at a time
        self._spool: DiskSpool | None = None
        self._sender: AlertmanagerSender | None = None
        self._am_pending: list[AlertEvent] = []  # changes the spool could not take yet
        self._seq = 0  # journal sequence of the last event
        self._written = 0  # every record through this seq is with every record sink
        self._dirty = False
        self._next_save = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._started = False
        self._warned_dropped: set[str] = set()
        self.last_error = ""
        for rule in config.rules:  # every rule's series from the start, at 0
            self.metrics.matched.labels(rule.name)
            self.metrics.groups_dropped.labels(rule.name)
            self.metrics.firing.labels(rule.name).set(0)
            self.metrics.groups.labels(rule.name).set(0)
            for status in ("firing", "resolved"):
                self.metrics.changes.labels(rule.name, status)
        self.metrics.spool_events.set_function(lambda: self._spool.pending if self._spool else 0)
        self.metrics.spool_bytes.set_function(lambda: self._spool.size_bytes if self._spool else 0)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        try:
            snapshot, journal = self._state.open()
            if self.config.alertmanager is not None:
                self._spool = DiskSpool(self.state_dir / "spool",
                                        self.config.alertmanager.spool_max_bytes)
        except OSError as exc:
            self._state.close()
            raise SinkError(f"alerts: cannot open the state under {self.state_dir}: {exc}") from exc
        with self._lock:
            events = self._restore(snapshot, journal)
            events += self.evaluator.tick(self._clock(), time.monotonic())
            self._dispatch(events)
            self._update_firing_gauge()
            self._save()
        if self.config.alertmanager is not None and self._spool is not None:
            self._sender = AlertmanagerSender(self.config.alertmanager, self._spool,
                                              self.metrics.am, self._firing, self._clock)
            self._sender.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sluice-alerts", daemon=True)
        self._thread.start()
        self._started = True
        self._write_records()

    def consume(self, batch: Batch) -> None:
        if not self._started:
            raise SinkError("the alerts sink is not started")
        # Log records, including those derived from a trace batch (access records from spans).
        changed = False
        for member in batch.family():
            if member.signal is not Signal.LOGS:
                continue
            tally = self.evaluator.scan(member)
            if tally.records:
                self.metrics.evaluated.inc(tally.records)
            for rule, n in tally.matched.items():
                self.metrics.matched.labels(rule).inc(n)
            if not tally.counts:
                continue
            with self._lock:
                events = self.evaluator.apply(tally, self._clock(), time.monotonic())
                self._dispatch(events)
            changed = changed or bool(events)
        if changed:
            self._write_records()

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Write pending alert records, post pending changes (giving up on an Alertmanager
        that keeps failing: they stay spooled), and save the state."""
        if not self._started:
            return True
        self._write_records()
        ok = self.records.pending == 0
        if self._sender is not None:
            ok = flush_senders([self._sender], timeout_s) and ok
        with self._lock:
            self._save()
        return ok

    def shutdown(self) -> None:
        """Stop the tick thread and the sender, save the state. Idempotent."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        if self._sender is not None:
            self._sender.close(self.config.alertmanager.timeout_s + 1.0 if self.config.alertmanager
                               else 1.0)
            self._sender = None
        with self._lock:
            self._save()
            self._state.close()

    def health(self) -> dict[str, Any]:
        with self._lock:
            firing = self.evaluator.firing_counts()
            pending_am = len(self._am_pending)
        sender = self._sender
        out: dict[str, Any] = {
            "state": "ok",
            "rules": len(self.config.rules),
            "firing": sum(firing.values()),
            "pending_records": self.records.pending,
            "last_error": self.last_error or self.records.last_error,
        }
        if sender is not None:
            state = sender.state()
            with sender.lock:
                error = sender.last_error
            out["alertmanager"] = {
                "url": sender.config.url, "state": state,
                "spool_events": sender.spool.pending + pending_am, "last_error": error,
            }
            if state != "ok":
                out["state"] = "degraded"
        if self.records.pending or pending_am:
            out["state"] = "degraded"
        return out

    # -- the tick thread ------------------------------------------------------------------------
    def _run(self) -> None:
        interval = self.config.evaluation_interval_s
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception as exc:  # a bug or a disk error must not end evaluation
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("alerts: evaluation tick failed; retrying")

    def tick(self) -> None:
        """Slide the windows, retry what could not be delivered, save when due."""
        with self._lock:
            events = self.evaluator.tick(self._clock(), time.monotonic())
            if self._am_pending:
                pending, self._am_pending = self._am_pending, []
                self._spool_changes(pending)
            self._dispatch(events)
            for rule, n in self.evaluator.group_counts().items():
                self.metrics.groups.labels(rule).set(n)
            if self._dirty and time.monotonic() >= self._next_save:
                self._save()
        self._write_records()

    # -- under the lock -------------------------------------------------------------------------
    def _dispatch(self, events: list[AlertEvent]) -> None:
        """Spool, journal and queue `events` (caller holds the lock)."""
        if not events:
            return
        self._dirty = True
        spooled = self._spool_changes(events)
        entries = []
        for event in events:
            self._seq += 1
            entry: dict[str, Any] = {"n": self._seq, "event": event.to_json(), "spooled": spooled}
            if event.status == "firing":
                entry["buckets"] = self.evaluator.window_of(event.rule, event.group)
            entries.append(entry)
            self.records.add(self._seq, event)
            self.metrics.changes.labels(event.rule, event.status).inc()
            log.info("alerts: %s %s %s", event.rule, event.status,
                     {k: v for k, v in event.labels if k != "alertname"})
        try:
            self._state.append(entries)
        except OSError as exc:
            self.last_error = f"journal: {exc}"
            log.warning("alerts: cannot append to the journal: %s", exc)
        self._update_firing_gauge()

    def _spool_changes(self, events: list[AlertEvent]) -> bool:
        """Append changes to the Alertmanager spool; keep them for the next tick if it cannot
        take them now. True when they are in the spool (or there is no Alertmanager)."""
        if self._spool is None:
            return True
        data = [orjson.dumps(e.to_json()) for e in events]
        try:
            # Ordinary records: past spool.max_bytes the oldest changes give way (counted). What
            # that loses heals itself: firing alerts are resent from the state, and an alert
            # whose resolution was lost expires in Alertmanager at its endsAt.
            result = self._spool.append(data)
        except (OSError, SluiceReceiverError) as exc:
            self._am_pending.extend(events)
            excess = len(self._am_pending) - MAX_PENDING_CHANGES
            if excess > 0:
                del self._am_pending[:excess]
                self.metrics.am.dropped.labels("spool_full").inc(excess)
            self.last_error = f"alertmanager spool: {exc}"
            log.warning("alerts: cannot spool %d alert changes, retrying: %s", len(events), exc)
            return False
        self.metrics.spooled.inc(result.stored)
        if result.dropped:
            self.metrics.am.dropped.labels("spool_full").inc(result.dropped)
        return True

    def _restore(self, snapshot: dict[str, Any] | None,
                 journal: list[dict[str, Any]]) -> list[AlertEvent]:
        now = self._clock()
        events: list[AlertEvent] = []
        self._seq = 0
        self._written = 0
        if snapshot is not None:
            events += self.evaluator.import_state(snapshot.get("evaluator") or {}, now,
                                                  time.monotonic())
            self._seq = int(snapshot.get("seq", 0))
            self._written = int(snapshot.get("written", 0))
            for item in snapshot.get("outbox") or []:
                self.records.add(int(item["n"]), AlertEvent.from_json(item["event"]),
                                 item.get("waiting"))
            for item in snapshot.get("am_pending") or []:
                self._am_pending.append(AlertEvent.from_json(item))
        for entry in journal:
            if "w" in entry:
                self._written = max(self._written, int(entry["w"]))
                continue
            seq = int(entry.get("n", 0))
            if seq <= self._seq:
                continue
            try:
                event = AlertEvent.from_json(entry["event"])
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("alerts: skipping a journal entry that cannot be read: %s", exc)
                continue
            self._seq = seq
            self.evaluator.replay(event, entry.get("buckets"))
            if not entry.get("spooled", True):
                self._am_pending.append(event)
            self.records.add(seq, event)
        self.records.drop_through(self._written)
        if snapshot is not None or journal:
            firing = sum(self.evaluator.firing_counts().values())
            log.info("alerts: state restored from %s: %d alerts firing", self.state_dir, firing)
        if self._am_pending:
            pending, self._am_pending = self._am_pending, []
            self._spool_changes(pending)
        return events

    def _save(self) -> None:
        snapshot = {
            "saved_at": self._clock(),
            "seq": self._seq,
            "written": self._written,
            "evaluator": self.evaluator.export_state(),
            "outbox": self.records.snapshot(),
            "am_pending": [e.to_json() for e in self._am_pending],
        }
        try:
            self._state.save(snapshot)
        except OSError as exc:
            self.last_error = f"state: {exc}"
            log.warning("alerts: cannot save the state under %s: %s", self.state_dir, exc)
            return
        self._dirty = False
        self._next_save = time.monotonic() + self.config.save_interval_s

    def _update_firing_gauge(self) -> None:
        for rule, n in self.evaluator.firing_counts().items():
            self.metrics.firing.labels(rule).set(n)

    # -- helpers --------------------------------------------------------------------------------
    def _firing(self) -> list[AlertEvent]:
        with self._lock:
            return self.evaluator.firing()

    def _write_records(self) -> None:
        """Hand queued alert records to the record sinks, in order, outside the evaluation lock
        (a sink may take a while); one thread writes at a time, the others leave it to it."""
        while self._write_lock.acquire(blocking=False):
            try:
                while True:
                    with self._lock:
                        item = self.records.head()
                    if item is None:
                        break
                    if not self.records.deliver(item):
                        return  # a sink refused: the tick retries
                    with self._lock:
                        self.records.pop(item)
                        self._written = item.seq
                        self._dirty = True
                        try:
                            self._state.append([{"w": item.seq}])
                        except OSError as exc:
                            self.last_error = f"journal: {exc}"
            finally:
                self._write_lock.release()
            with self._lock:  # queued by another thread while we were finishing
                if not self.records.pending:
                    return

    def _group_dropped(self, rule: str) -> None:
        self.metrics.groups_dropped.labels(rule).inc()
        if rule not in self._warned_dropped:
            self._warned_dropped.add(rule)
            log.warning("alerts: rule %s tracks alerts.max_groups=%d groups; records of new "
                        "groups are not counted (sluice_alerts_groups_dropped_total)", rule,
                        self.config.max_groups)


__all__ = ["AlertsSink"]
