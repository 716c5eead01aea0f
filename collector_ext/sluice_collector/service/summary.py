"""`ActivityReporter`: one INFO line now and then saying what the receiver did, as operators
expect of a collector — never a line per record or per request.

    activity in the last 60s: logs 1250 (app 900, access 300, error 50), traces 310; refused
    3 requests (UNAVAILABLE 3); rejected 2 records (invalid)

The line is built from the receiver's own counters (`telemetry.py`), as differences since the
previous line, so it always agrees with `/metrics`: records accepted per signal and category
(`sluice_records_accepted_total`), requests refused per status (`sluice_requests_total` other
than OK), and records rejected or dropped per reason. Nothing happened, nothing is logged.
`telemetry.summary_interval_s` sets the period (0 turns it off); a last line covers the time
between the previous one and the stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client import Counter as PromCounter

from sluice_collector.telemetry import ReceiverTelemetry

log = logging.getLogger("sluice.receiver")
_SIGNALS = ("logs", "traces", "metrics")


def _totals(counter: PromCounter, *labels: str) -> Counter[tuple[str, ...]]:
    """The counter's current `_total` samples, keyed by the values of `labels`."""
    out: Counter[tuple[str, ...]] = Counter()
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[tuple(sample.labels[name] for name in labels)] += int(sample.value)
    return out


def _breakdown(items: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(items, key=lambda kv: (-kv[1], kv[0])))


class ActivityReporter:
    """Logs `summary()` every `interval_s` on a daemon thread (`start`/`stop`); `summary()` is
    also usable alone: each call covers the time since the previous one."""

    def __init__(self, telemetry: ReceiverTelemetry, interval_s: float, *, prefix: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._telemetry = telemetry
        self.interval_s = interval_s
        self._prefix = prefix
        self._clock = clock
        self._last = self._snapshot()
        self._last_at = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _snapshot(self) -> dict[str, Counter[tuple[str, ...]]]:
        t = self._telemetry
        return {
            "accepted": _totals(t.accepted, "signal", "category"),
            "requests": _totals(t.requests, "outcome"),
            "rejected": _totals(t.rejected, "reason"),
            "dropped": _totals(t.dropped, "reason"),
        }

    def summary(self) -> str | None:
        """The line for the time since the previous call, or None when nothing happened."""
        with self._lock:
            now, current = self._clock(), self._snapshot()
            before, since = self._last, self._last_at
            self._last, self._last_at = current, now
        delta = {name: current[name] - before[name] for name in current}  # Counter drops ≤ 0
        delta["requests"].pop(("OK",), None)  # refusals only: accepted records say the rest
        if not any(delta.values()):
            return None
        parts: list[str] = []
        accepted = delta["accepted"]
        for signal in _SIGNALS:
            per_category = [(category, n) for (sig, category), n in accepted.items() if sig == signal]
            if not per_category:
                continue
            total = sum(n for _, n in per_category)
            detail = "" if [c for c, _ in per_category] == [signal] else f" ({_breakdown(per_category)})"
            parts.append(f"{signal} {total}{detail}")
        pieces = [", ".join(parts) if parts else "no records accepted"]
        for name, noun in (("requests", "request"), ("rejected", "record"), ("dropped", "record")):
            items = [(key[0], n) for key, n in delta[name].items()]
            if items:
                total = sum(n for _, n in items)
                verb = "refused" if name == "requests" else name
                pieces.append(f"{verb} {total} {noun}{'' if total == 1 else 's'} ({_breakdown(items)})")
        return f"{self._prefix}activity in the last {now - since:.0f}s: {'; '.join(pieces)}"

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sluice-summary", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and log what happened since the last line."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(5.0)
        self._emit()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._emit()

    def _emit(self) -> None:
        try:
            line = self.summary()
        except Exception as exc:  # a summary must never take the receiver down
            log.warning("activity summary failed: %s", exc)
            return
        if line:
            log.info("%s", line)
