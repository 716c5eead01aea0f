"""Alert events as log records of the `alerts` category, and the writer that hands them on.

How an alert record enters the stream without a back-edge: it does not go back to the front
door or through the pipeline's stages. The evaluator sits after every other sink (they are
what a batch must reach before it counts), and when an alert fires or resolves the
`AlertRecordWriter` builds a one-record batch already routed to `alerts` and gives it to those
same sinks — files, syslog, forward, index — in their order, downstream only. Nothing is
re-decoded, re-masked (the values come from the masked stream and the config) or re-evaluated
(no rule ever sees an alert record, so alerts cannot feed themselves), and a client can never
write into `alerts` (routing reserves the name).

A sink that refuses a record (disk full, spool full) gets it again on the next tick; the
others are not asked twice. Records are written in event order, by one thread.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from sluice_collector.batch import Batch, Signal
from sluice_collector.encode import rfc3339
from sluice_collector.errors import SluiceReceiverError
from sluice_collector.otlpvalues import any_value
from sluice_collector.processors.routing import ALERTS_CATEGORY, CATEGORY_ATTRIBUTE
from sluice_collector.sinks.alerts.evaluator import AlertEvent
from sluice_collector.sinks.base import Sink

log = logging.getLogger("sluice.alerts")

SERVICE_NAME = "sluice-receiver"
SCOPE_NAME = "sluice.alerts"
# The `severity` label, as the records' severity; resolved alerts are INFO.
_SEVERITY = {"critical": (17, "ERROR"), "error": (17, "ERROR"), "page": (17, "ERROR"),
             "warning": (13, "WARN"), "warn": (13, "WARN"), "info": (9, "INFO"),
             "none": (9, "INFO")}


def _value(value: Any) -> AnyValue:
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=_value(v)) for k, v in value.items())
        return out
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def alert_record_batch(event: AlertEvent, now: float) -> Batch:
    """One routed batch holding the log record of `event` (category `alerts`, the event's
    tenant)."""
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.extend([
        KeyValue(key="service.name", value=AnyValue(string_value=SERVICE_NAME)),
        KeyValue(key="host.name", value=AnyValue(string_value=socket.gethostname())),
    ])
    sl = rl.scope_logs.add()
    sl.scope.name = SCOPE_NAME
    rec = sl.log_records.add()
    firing = event.status == "firing"
    when = event.starts_at if firing or event.ends_at is None else event.ends_at
    rec.time_unix_nano = int(when * 1e9)
    rec.observed_time_unix_nano = int(now * 1e9)
    number, text = (_SEVERITY.get(event.label("severity").lower(), (13, "WARN")) if firing
                    else (9, "INFO"))
    rec.severity_number = number  # type: ignore[assignment]
    rec.severity_text = text
    rec.event_name = f"alert.{event.status}"
    annotations = dict(event.annotations)
    summary = annotations.get("summary") or annotations.get("description") or ""
    name = event.label("alertname") or event.rule
    rec.body.string_value = f"[{event.status.upper()}] {name}" + (f": {summary}" if summary else "")
    attributes: dict[str, Any] = {
        CATEGORY_ATTRIBUTE: ALERTS_CATEGORY,
        "event.name": f"alert.{event.status}",
        "alert.name": name,
        "alert.status": event.status,
        "alert.fingerprint": event.fingerprint,
        "alert.starts_at": rfc3339(int(event.starts_at * 1e9)),
    }
    if event.ends_at is not None:
        attributes["alert.ends_at"] = rfc3339(int(event.ends_at * 1e9))
    attributes["alert.labels"] = dict(event.labels)
    if annotations:
        attributes["alert.annotations"] = annotations
    if event.generator_url:
        attributes["alert.generator_url"] = event.generator_url
    rec.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attributes.items())
    batch = Batch(Signal.LOGS, request, int(now * 1e9), tenant=event.tenant)
    batch.routes = {ALERTS_CATEGORY: [(rl, sl, rec)]}
    # What the router would have read; the sinks serialise from it.
    batch.route_attributes = {ALERTS_CATEGORY: [{kv.key: any_value(kv.value) for kv in rec.attributes}]}
    return batch


@dataclass(slots=True, eq=False)
class _Pending:
    seq: int
    event: AlertEvent
    waiting: list[str] = field(default_factory=list)  # names of the sinks still to take it


class AlertRecordWriter:
    """An ordered outbox of alert events and their delivery to the record sinks.

    `add`, `head`, `pop`, `drop_through` and `snapshot` change or read the outbox and are
    called under the owner's lock; `deliver` calls the sinks and is called without it, by one
    thread at a time.
    """

    def __init__(self, sinks: Sequence[Sink], clock: Callable[[], float] = time.time,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.sinks = list(sinks)
        self._by_name = {s.name: s for s in self.sinks}
        self._clock = clock
        self._on_failure = on_failure
        self._outbox: deque[_Pending] = deque()
        self.last_error = ""

    def add(self, seq: int, event: AlertEvent, waiting: Sequence[str] | None = None) -> None:
        names = list(waiting) if waiting is not None else [s.name for s in self.sinks]
        self._outbox.append(_Pending(seq, event, names))

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def head(self) -> _Pending | None:
        return self._outbox[0] if self._outbox else None

    def pop(self, item: _Pending) -> None:
        if self._outbox and self._outbox[0] is item:
            self._outbox.popleft()

    def drop_through(self, seq: int) -> None:
        """Forget records every sink already has (restored from a journal that says so)."""
        self._outbox = deque(p for p in self._outbox if p.seq > seq)

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"n": p.seq, "event": p.event.to_json(), "waiting": list(p.waiting)}
                for p in self._outbox]

    def deliver(self, item: _Pending) -> bool:
        """Give `item`'s record to every sink still waiting for it; False when one refused (it
        is asked again next time, the others are not)."""
        batch = alert_record_batch(item.event, self._clock())
        for name in list(item.waiting):
            sink = self._by_name.get(name)
            if sink is not None:
                try:
                    sink.consume(batch)
                except (SluiceReceiverError, OSError) as exc:
                    if f"{name}: {exc}" != self.last_error:
                        log.warning("alerts: the %s sink refused an alert record, retrying: %s",
                                    name, exc)
                    self.last_error = f"{name}: {exc}"
                    if self._on_failure is not None:
                        self._on_failure(name)
                    return False
            item.waiting.remove(name)
        self.last_error = ""
        return True


__all__ = ["SCOPE_NAME", "SERVICE_NAME", "AlertRecordWriter", "alert_record_batch"]
