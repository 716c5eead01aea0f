"""What every spooled sender shares: backoff, failure accounting, the delivery thread, flushing.

A remote sink appends to a `DiskSpool` in `consume` and one `SpoolSender` thread per destination
empties it: peek, send, acknowledge on success, back off on a retryable failure. The sending
itself differs per destination (OTLP export for `forward`, `POST /api/v2/alerts` for `alerts`),
so a subclass implements `deliver_once`; the loop around it, the backoff policy, the
"failing since / delivering again" log lines and the flush rules live here once, as the
Collector keeps its retry and queue logic in `exporterhelper`.

`Backoff` is also used on its own by the syslog sink, whose connection-oriented loop (confirm
delays, fallback targets) does not fit `deliver_once`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sluice_collector.sinks._delivery.spool import DiskSpool

# A sender whose last five attempts failed reports `down` (retrying before that).
DOWN_AFTER_FAILURES = 5
# force_flush gives up on a sender after this many failed attempts during the flush.
FLUSH_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter; a server's own delay wins when it sent one."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay_s(self, attempt: int, server_delay_s: float | None = None, *,
                flushing: bool = False) -> float:
        """How long to wait before attempt `attempt + 1` (`attempt` counts from 1).

        A server delay of 0 (Retry-After: 0, a date in the past) would spin on a down target:
        then our own exponential backoff applies. While someone waits for a flush the wait is
        at most `initial_s`.
        """
        if server_delay_s is not None and server_delay_s > 0:
            delay = min(server_delay_s, max(self.max_s, 60.0))
            wait = delay + random.uniform(0, delay / 10)
        else:
            delay = min(self.max_s, self.initial_s * 2 ** min(max(attempt, 1) - 1, 30))
            wait = delay / 2 + random.uniform(0, delay / 2)
        if flushing:
            wait = min(wait, self.initial_s)
        return wait


class SpoolSender:
    """One spool and the thread that empties it; subclasses implement `deliver_once`.

    `label` prefixes the sender's log lines (``forward jaeger/logs``, ``alerts alertmanager``).
    """

    def __init__(self, spool: DiskSpool, backoff: Backoff, *, label: str, thread_name: str,
                 log: logging.Logger) -> None:
        self.spool = spool
        self.backoff = backoff
        self.label = label
        self.log = log
        self.stop = threading.Event()
        self.wake = threading.Event()  # cuts a backoff short: force_flush and shutdown set it
        self.flushing = threading.Event()  # while set, backoffs are short: someone is waiting
        self.lock = threading.Lock()
        self.failures = 0  # consecutive failed attempts
        self.attempts_failed = 0  # every failed attempt since start, for force_flush
        self.last_error = ""
        self.thread = threading.Thread(target=self.run, name=thread_name, daemon=True)

    def deliver_once(self) -> None:
        """Send what is due (or wait a little for something to be); never block for long."""
        raise NotImplementedError

    def state(self) -> str:
        with self.lock:
            if self.failures == 0:
                return "ok"
            return "down" if self.failures >= DOWN_AFTER_FAILURES else "retrying"

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.deliver_once()
            except Exception as exc:  # a bug or a disk error must not end delivery: back off
                self.log.exception("%s: sender failed; retrying", self.label)
                attempt = self.failed(f"{type(exc).__name__}: {exc}")
                self.wait_backoff(attempt, None)

    def succeeded(self) -> None:
        with self.lock:
            was_failing = self.failures
            self.failures = 0
        if was_failing:
            self.log.warning("%s: delivering again after %d failed attempts", self.label, was_failing)

    def failed(self, error: str) -> int:
        """Count a failed attempt; returns how many failed in a row (the backoff attempt)."""
        with self.lock:
            first = self.failures == 0
            self.failures += 1
            self.attempts_failed += 1
            self.last_error = error
            attempt = self.failures
        if first:
            self.log.warning("%s: delivery failed, spooling (%s)", self.label, error)
        return attempt

    def wait_backoff(self, attempt: int, server_delay_s: float | None) -> None:
        self.pause(self.backoff.delay_s(attempt, server_delay_s, flushing=self.flushing.is_set()))

    def pause(self, seconds: float) -> None:
        """Wait `seconds`, cut short by `wake` (flush, shutdown)."""
        self.wake.wait(seconds)
        self.wake.clear()

    def start(self) -> None:
        self.thread.start()

    def close(self, join_timeout_s: float) -> None:
        """Stop the thread; unsent records stay in the spool for the next start."""
        self.stop.set()
        self.wake.set()
        self.spool.close()
        self.thread.join(join_timeout_s)


def flush_senders(senders: Sequence[SpoolSender], timeout_s: float | None) -> bool:
    """Wait for every sender's spool to empty. Senders retry at once and then back off no
    longer than their `initial_s`; a sender that fails `FLUSH_ATTEMPTS` times in a row makes
    the flush give up: the records are durable in the spool, and waiting for a dead target
    would only hold up a shutdown. One failure is not enough: a target that was just restarted
    often refuses the first attempt."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    senders = list(senders)
    failed_before = {id(s): s.attempts_failed for s in senders}
    for sender in senders:
        sender.flushing.set()
        sender.wake.set()
    try:
        while True:
            waiting = [s for s in senders if s.spool.pending]
            if not waiting:
                return True
            if any(s.attempts_failed - failed_before[id(s)] >= FLUSH_ATTEMPTS
                   or not s.thread.is_alive() for s in waiting):
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            waiting[0].spool.wait_until_empty(0.05)
    finally:
        for sender in senders:
            sender.flushing.clear()


__all__ = ["DOWN_AFTER_FAILURES", "FLUSH_ATTEMPTS", "Backoff", "SpoolSender", "flush_senders"]
