"""Delivery to Alertmanager through its v2 API: `POST <url>/api/v2/alerts`.

Two kinds of traffic, as Prometheus sends them:

- **changes** — an alert started firing or resolved. They must not be lost, so the sink
  appends them to a bounded on-disk spool (`DiskSpool`, shared with forward and syslog) under
  its lock, in the order they happened; this sender posts them in order, acknowledges the
  spool on HTTP 2xx and backs off and retries otherwise (`SpoolSender`). Alertmanager down
  means they wait in the spool, across restarts too.
- **resends** — every `resend_interval` while nothing is waiting in the spool, every firing
  alert is posted again with `endsAt` = now + 4 × `resend_interval`. Alertmanager merges them
  into the alert it has (same labels), and if this receiver disappears the alerts resolve
  there by themselves once `endsAt` passes. Resends are rebuilt from the sink's state, never
  spooled.

A firing change gets its `endsAt` when it is sent, not when it happened, so a change that
waited out an Alertmanager outage arrives as firing, not as already expired. Changes posted
together are folded per alert (the last one wins), so an alert that fired and resolved during
an outage arrives resolved.

**Two clocks.** Alertmanager compares `startsAt`/`endsAt` with its own clock, which need not
agree with the receiver's (a clock that is off, stepped by NTP, faked in a test). Every alert
change therefore also carries its instants on the machine's monotonic clock, and the sender
places them on Alertmanager's clock by the offset between the two, read from the `Date` header
of its answers (a `GET /api/v2/status` probes it when no answer did in the last five minutes).
An instant from another boot (a spool or state older than a reboot) is placed by its age on the
receiver's clock instead. The header has whole seconds, so Alertmanager's times are within a
second of the receiver's; a resolution is never placed in Alertmanager's future.

Answers: 2xx delivered; 400 (Alertmanager refuses the alerts themselves) dropped and counted
— several changes sent together are then retried one at a time so only the refused one is
dropped; anything else (no connection, 5xx, 429, 401/403/404 of a misconfigured URL) retried
with backoff, honouring `Retry-After`. Delivery is at-least-once; what is repeated is a
state Alertmanager already has, which it deduplicates.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_client import Counter

from sluice_collector.encode import rfc3339
from sluice_collector.sinks._delivery.sender import Backoff, SpoolSender
from sluice_collector.sinks._delivery.spool import DiskSpool
from sluice_collector.sinks.alerts.config import AlertmanagerConfig
from sluice_collector.sinks.alerts.evaluator import BOOT_ID, AlertEvent

log = logging.getLogger("sluice.alerts")

MAX_ALERTS_PER_POST = 64
SKEW_MAX_AGE_S = 300.0


@dataclass(frozen=True, slots=True)
class _Answer:
    ok: bool
    retryable: bool = False
    retry_after_s: float | None = None
    error: str = ""


class AlertmanagerClock:
    """Alertmanager's clock, as an offset from this machine's monotonic clock, measured from
    the `Date` header of its answers (whole seconds: the offset is the low end, so a time
    placed with it is never in Alertmanager's future)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._offset: float | None = None
        self._taken = 0.0

    def update(self, date_header: str | None) -> None:
        if not date_header:
            return
        with contextlib.suppress(TypeError, ValueError):
            theirs = email.utils.parsedate_to_datetime(date_header).timestamp()
            now = self._monotonic()
            offset = theirs - now
            # Each reading is a low estimate by under a second (the header drops the fraction);
            # the highest of recent ones is the closest. Start over when they are old.
            if self.stale or self._offset is None:
                self._offset, self._taken = offset, now
            elif offset > self._offset:
                self._offset = offset

    @property
    def stale(self) -> bool:
        return self._offset is None or self._monotonic() - self._taken > SKEW_MAX_AGE_S

    def at(self, mono: float) -> float:
        """The Alertmanager time of monotonic instant `mono` (before any answer: ours)."""
        if self._offset is None:
            return time.time() - (self._monotonic() - mono)
        return self._offset + mono

    def now(self) -> float:
        return self.at(self._monotonic())


class AlertmanagerClient:
    """One kept-alive HTTP(S) connection to Alertmanager's v2 API."""

    def __init__(self, config: AlertmanagerConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.secure else 80)
        self.prefix = parts.path.rstrip("/")
        self.context: ssl.SSLContext | None = None
        if self.secure:
            self.context = ssl.create_default_context(cafile=config.tls.ca_file)
            if config.tls.insecure_skip_verify:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
        self.conn: http.client.HTTPConnection | None = None
        self.last_date: str | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.context is not None:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.config.timeout_s, context=self.context)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=self.config.timeout_s)
        return self.conn

    def request(self, method: str, path: str, body: bytes | None = None) -> _Answer:
        headers = {"Accept": "application/json", **dict(self.config.headers)}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn = self._connection()
            conn.request(method, self.prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return _Answer(False, True, error=f"{type(exc).__name__}: {exc}")
        self.last_date = response.getheader("Date")
        if response.will_close:
            self.close()
        if 200 <= response.status < 300:
            return _Answer(True)
        text = data[:300].decode("utf-8", "replace").strip()
        return _Answer(False, response.status != 400, _retry_after(response.getheader("Retry-After")),
                       error=f"HTTP {response.status}: {text}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None


class AlertmanagerMetrics:
    def __init__(self, registry: Any) -> None:
        self.sent = Counter("sluice_alerts_sent", "Alert states Alertmanager accepted: kind=change "
                            "(fired or resolved) or resend (still firing).", ["kind"],
                            registry=registry)
        self.failed = Counter("sluice_alerts_send_failures", "Failed POSTs to Alertmanager that "
                              "will be retried (the alerts wait in the spool).", registry=registry)
        self.dropped = Counter("sluice_alerts_dropped", "Alert changes that will never reach "
                               "Alertmanager: spool_full, refused (HTTP 400) or corrupt.",
                               ["reason"], registry=registry)


class AlertmanagerSender(SpoolSender):
    """Empties the change spool into Alertmanager and resends firing alerts."""

    def __init__(self, config: AlertmanagerConfig, spool: DiskSpool, metrics: AlertmanagerMetrics,
                 firing: Callable[[], list[AlertEvent]], clock: Callable[[], float]) -> None:
        super().__init__(spool, Backoff(config.backoff_initial_s, config.backoff_max_s),
                         label="alerts alertmanager", thread_name="sluice-alerts-alertmanager",
                         log=log)
        self.config = config
        self.client = AlertmanagerClient(config)
        self.metrics = metrics
        self._firing = firing
        self._clock = clock
        self.am_clock = AlertmanagerClock()
        self._next_resend = time.monotonic()  # a restart tells Alertmanager at once
        self._acked_seq = 0
        self._isolate_through = 0

    def close(self, join_timeout_s: float) -> None:
        super().close(join_timeout_s)
        self.client.close()

    def deliver_once(self) -> None:
        single = self._isolate_through > self._acked_seq
        records = self.spool.peek(max_records=1 if single else MAX_ALERTS_PER_POST,
                                  max_bytes=1024 * 1024)
        if records:
            events: list[AlertEvent] = []
            for record in records:
                try:
                    events.append(AlertEvent.from_json(orjson.loads(record.data)))
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("alerts: dropping a spooled alert change that cannot be read: %s", exc)
                    self.metrics.dropped.labels("corrupt").inc()
            answer = self._post(events) if events else _Answer(True)
            if answer.retryable:
                self.metrics.failed.inc()
                self.wait_backoff(self.failed(answer.error), answer.retry_after_s)
                return
            if not answer.ok and len(records) > 1:
                self._isolate_through = records[-1].seq
                return
            if answer.ok:
                self.metrics.sent.labels("change").inc(len(events))
                self.succeeded()
            else:
                self.metrics.dropped.labels("refused").inc(len(events))
                log.warning("alerts: Alertmanager refused %d alert changes: %s", len(events),
                            answer.error)
            self.spool.ack(records[-1].seq)
            self._acked_seq = records[-1].seq
            return
        wait = self._next_resend - time.monotonic()
        if wait > 0:
            self.spool.wait_for_records(min(wait, 1.0), after_seq=self._acked_seq)
            return
        firing = self._firing()
        answer = self._post(firing) if firing else _Answer(True)
        if not answer.ok:
            self.metrics.failed.inc()
            self.wait_backoff(self.failed(answer.error), answer.retry_after_s)
            return
        if firing:
            self.metrics.sent.labels("resend").inc(len(firing))
            self.succeeded()
        self._next_resend = time.monotonic() + self.config.resend_interval_s

    def _post(self, events: list[AlertEvent]) -> _Answer:
        if self.am_clock.stale:
            probe = self.client.request("GET", "/api/v2/status")
            if not probe.ok and probe.retryable:
                return probe
            self.am_clock.update(self.client.last_date)
        answer = self.client.request("POST", "/api/v2/alerts", orjson.dumps(self.payload(events)))
        self.am_clock.update(self.client.last_date)
        return answer

    def payload(self, events: list[AlertEvent]) -> list[dict[str, Any]]:
        """The v2 API body: one alert per label set (the last change of each wins), times on
        Alertmanager's clock."""
        latest: dict[tuple[tuple[str, str], ...], AlertEvent] = {}
        for event in events:
            latest.pop(event.labels, None)
            latest[event.labels] = event
        am_now = self.am_clock.now()
        out = []
        for event in latest.values():
            starts = self._place(event.starts_at, event.starts_mono, event.boot)
            if event.status == "firing":
                ends = am_now + self.config.ends_after_s
            else:
                ended = event.ends_at if event.ends_at is not None else self._clock()
                ends = min(self._place(ended, event.ends_mono, event.boot), am_now)
            alert: dict[str, Any] = {
                "labels": dict(event.labels),
                "annotations": dict(event.annotations),
                "startsAt": _iso(min(starts, ends)),
                "endsAt": _iso(ends),
            }
            if event.generator_url:
                alert["generatorURL"] = event.generator_url
            out.append(alert)
        return out

    def _place(self, wall: float, mono: float | None, boot: str) -> float:
        """An instant on Alertmanager's clock: by its monotonic time when from this boot, else
        by its age on the receiver's clock."""
        if mono is not None and boot == BOOT_ID:
            return self.am_clock.at(mono)
        return self.am_clock.now() - max(0.0, self._clock() - wall)


def _iso(unix_s: float) -> str:
    """RFC 3339 with milliseconds, as Alertmanager prints its own."""
    text = rfc3339(int(unix_s * 1e9))  # ...SS.nnnnnnnnnZ
    return text[:23] + "Z"


__all__ = ["AlertmanagerClient", "AlertmanagerClock", "AlertmanagerMetrics", "AlertmanagerSender"]
