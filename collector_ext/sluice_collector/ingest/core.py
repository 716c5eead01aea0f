"""The transport-neutral ingest core: one `export` call per OTLP Export request.

Every front door (`receivers/`: gRPC, HTTP) and the query API's audit path use it, as the
Collector's otlpreceiver shares one `Export` between its gRPC and HTTP servers:

    authenticate(header)            → Caller        (before the body is read)
    export(signal, body, encoding, caller)
        admission → decode → pipeline (mask → validate → classify → sinks)
                                    → ExportResult  (partial success), or a typed error

A front door that runs `export` on a worker thread (the gRPC one runs an event loop) takes the
request's admission place first, with `reserve(signal, nbytes)` on its own thread — so a
request over the bound is refused before it costs a thread or waits in a queue — and hands the
`Slot` to `export`, which releases it. A request the front door answers itself, before
`export` (its body never arrived, too many were waiting), is counted with `count`.

The typed errors (see `errors.py`) are the whole contract with the front doors, which map them
to status codes; this module counts every outcome once, in `sluice_requests_total` by signal and
by the OTLP/gRPC status name (HTTP front doors map the same names to HTTP codes).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import Counter

from sluice_collector.batch import Batch, Signal
from sluice_collector.configreader import Section
from sluice_collector.errors import (
    DecodeError,
    InternalError,
    RequestTooLarge,
    Retryable,
    SluiceReceiverError,
    Unauthenticated,
)
from sluice_collector.ingest.admission import Admission, QueueConfig, Slot
from sluice_collector.ingest.auth import AuthConfig, TokenAuthenticator
from sluice_collector.ingest.decode import Encoding, decode_request
from sluice_collector.ingest.peers import Peers
from sluice_collector.pipeline import Pipeline
from sluice_collector.telemetry import ReceiverTelemetry

log = logging.getLogger("sluice.receiver")

MiB = 1024 * 1024
RESPONSE_TYPES: dict[Signal, Any] = {
    Signal.LOGS: ExportLogsServiceResponse,
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
}
REJECTED_FIELDS = {
    Signal.LOGS: "rejected_log_records",
    Signal.TRACES: "rejected_spans",
    Signal.METRICS: "rejected_data_points",
}


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """The root keys every front door shares: request size, admission bounds, tenants."""

    max_request_bytes: int = 64 * MiB
    queue: QueueConfig = field(default_factory=QueueConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)

    @classmethod
    def from_root(cls, root: Section) -> IngestConfig:
        return cls(
            max_request_bytes=root.get_size("max_request_bytes", 64 * MiB, minimum=1024),
            queue=QueueConfig.from_section(root.section("queue")),
            auth=AuthConfig.from_section(root.section("auth")),
        )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request, as far as ingest cares: the tenant its token names ("" = none)."""

    tenant: str = ""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What became of an accepted request: records refused as invalid (and why) — what the
    client is told — plus, for in-process callers, what was dropped and where the rest went."""

    rejected: int
    message: str
    dropped: int = 0
    routed: dict[str, int] = field(default_factory=dict)  # category → records stored under it

    def response(self, signal: Signal) -> Any:
        """The OTLP Export*ServiceResponse (partial_success only when something was refused)."""
        response = RESPONSE_TYPES[signal]()
        if self.rejected:
            setattr(response.partial_success, REJECTED_FIELDS[signal], self.rejected)
            response.partial_success.error_message = self.message
        return response


class IngestCore:
    """Auth → admission → decode → pipeline, once for every transport."""

    def __init__(self, pipeline: Pipeline, config: IngestConfig, telemetry: ReceiverTelemetry) -> None:
        self.pipeline = pipeline
        self.config = config
        self.telemetry = telemetry
        self.admission = Admission(config.queue, telemetry)
        # Python runs one thread at a time. Admitted batches processed side by side on several
        # threads only take turns at the GIL, and every switch costs: on the PII bench, four
        # batches at once spent 48 us of CPU per record, one at a time 31 us (issue 14). So a
        # batch waits here for its turn (`queue.max_processing`), holding only its bytes;
        # health, queries and the reading of other requests go on meanwhile.
        self._turns = threading.BoundedSemaphore(config.queue.max_processing)
        # The other `--workers` workers, set by the receiver when it has some.
        self.peers: Peers | None = None
        self._authenticator = TokenAuthenticator(config.auth) if config.auth.enabled else None
        self._auth_failures = Counter(
            "sluice_auth_failures", "Export requests refused as UNAUTHENTICATED, by reason "
            "(missing or invalid token).", ["signal", "reason"], registry=telemetry.registry,
        ) if config.auth.enabled else None
        self._logged_unexpected: set[str] = set()

    @property
    def auth_required(self) -> bool:
        return self._authenticator is not None

    def authenticate(self, signal: Signal, authorization: str | bytes | None) -> Caller:
        """The caller behind an `authorization` header value; raises `Unauthenticated` (and
        counts it) when auth is on and the token is missing or unknown."""
        if self._authenticator is None:
            return Caller()
        try:
            return Caller(self._authenticator(authorization))
        except Unauthenticated as exc:
            self.telemetry.requests.labels(signal.value, "UNAUTHENTICATED").inc()
            if self._auth_failures is not None:
                self._auth_failures.labels(signal.value, exc.reason).inc()
            raise

    def reserve(self, signal: Signal, nbytes: int) -> Slot:
        """An admission place for a request of `nbytes` bytes, to pass to `export`; raises
        `Overloaded` (counted) when the in-flight set is full. Never blocks."""
        try:
            return self.admission.reserve(nbytes)
        except Retryable:
            self.telemetry.requests.labels(signal.value, "UNAVAILABLE").inc()
            raise

    def count(self, signal: Signal, outcome: str) -> None:
        """Count a request the front door answered itself (`outcome`: the OTLP/gRPC status
        name), so `sluice_requests_total` sees every request once."""
        self.telemetry.requests.labels(signal.value, outcome).inc()

    def export(self, signal: Signal, body: bytes, encoding: Encoding, caller: Caller,
               slot: Slot | None = None) -> ExportResult:
        """Take one Export request; raise DecodeError, RequestTooLarge or Retryable. With a
        `slot` from `reserve` the request is already admitted; the slot is released here."""
        requests = self.telemetry.requests
        try:
            if slot is None:
                slot = self.admission.reserve(len(body))  # counted below when refused
            try:
                result = self._in_turn(signal, body, encoding, caller.tenant)
            finally:
                slot.release()
        except DecodeError:
            requests.labels(signal.value, "INVALID_ARGUMENT").inc()
            raise
        except RequestTooLarge:
            requests.labels(signal.value, "RESOURCE_EXHAUSTED").inc()
            raise
        except Retryable:
            requests.labels(signal.value, "UNAVAILABLE").inc()
            raise
        except Exception as exc:
            requests.labels(signal.value, "UNAVAILABLE").inc()
            raise self._unexpected(signal, exc) from exc
        requests.labels(signal.value, "OK").inc()
        return result

    def _unexpected(self, signal: Signal, exc: Exception) -> InternalError:
        """A bug of ours, not the client's: ask for a retry (nothing was acknowledged) and
        log the first occurrence of each kind with its traceback."""
        kind = type(exc).__name__
        if kind not in self._logged_unexpected:
            self._logged_unexpected.add(kind)
            log.error("unexpected error while processing a %s batch", signal.value, exc_info=exc)
        return InternalError(f"receiver error ({kind}); retry later")

    def _process(self, signal: Signal, body: bytes, encoding: Encoding, tenant: str) -> ExportResult:
        batch = decode_request(signal, body, max_bytes=self.config.max_request_bytes,
                               tenant=tenant, encoding=encoding)
        return _result(self.pipeline.process(batch))

    def _at_once(self, signal: Signal, body: bytes, encoding: Encoding,
                 tenant: str) -> ExportResult | None:
        """Process the request now when a turn is free; None when every turn is taken."""
        if not self._turns.acquire(blocking=False):
            return None
        try:
            return self._process(signal, body, encoding, tenant)
        finally:
            self._turns.release()

    def _in_turn(self, signal: Signal, body: bytes, encoding: Encoding, tenant: str) -> ExportResult:
        """Process an admitted request in this process's turn; while it is taken, first offer
        the request to the other workers (`peers.py`), one of which may be idle."""
        result = self._at_once(signal, body, encoding, tenant)
        if result is not None:
            return result
        if self.peers is not None:
            taken = self.peers.offer(signal, body, encoding, tenant)
            if taken is not None:
                return ExportResult(**taken)
        with self._turns:
            return self._process(signal, body, encoding, tenant)

    def take_over(self, signal: Signal, body: bytes, encoding: Encoding,
                  tenant: str) -> ExportResult | None:
        """Process a request another worker offers (`peers.py`) — at once, or not at all (None:
        this one is busy, full or stopping). Never waits, never passes it on. Not counted in
        `sluice_requests_total`: the worker that answers the client counts it."""
        try:
            slot = self.admission.reserve(len(body))
        except Retryable:
            return None
        try:
            return self._at_once(signal, body, encoding, tenant)
        except SluiceReceiverError:
            raise
        except Exception as exc:
            raise self._unexpected(signal, exc) from exc
        finally:
            slot.release()

    def close(self, timeout_s: float) -> bool:
        """Refuse new requests and wait for the in-flight ones (see `Admission.close`)."""
        return self.admission.close(timeout_s)


def _result(batch: Batch) -> ExportResult:
    return ExportResult(batch.rejected, batch.rejected_reason if batch.rejected else "",
                        batch.dropped, {name: len(refs) for name, refs in batch.routes.items()})
