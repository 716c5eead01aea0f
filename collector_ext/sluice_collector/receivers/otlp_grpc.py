"""The gRPC edge: OTLP logs/traces/metrics `Export` and the standard health service.

Handlers receive raw bytes (no grpcio deserializer) so that malformed input is answered with
`INVALID_ARGUMENT` rather than grpcio's `INTERNAL`. This is the only module that knows about
gRPC; it translates receiver errors into OTLP-conformant statuses:

    DecodeError      → INVALID_ARGUMENT    (not retryable: the data is bad)
    RequestTooLarge  → RESOURCE_EXHAUSTED  (without retry info: retrying the same bytes won't help)
    Overloaded       → UNAVAILABLE + google.rpc.RetryInfo
    SinkError        → UNAVAILABLE + google.rpc.RetryInfo
    no/wrong token   → UNAUTHENTICATED     (when `auth` is on; see `TokenAuthenticator`)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import Counter

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import DecodeError, Overloaded, RequestTooLarge, SinkError
from sluice_collector.ingest.decode import decode_request
from sluice_collector.pipeline import Pipeline
from sluice_collector.service.config import AuthConfig, ReceiverConfig
from sluice_collector.telemetry import ReceiverTelemetry

log = logging.getLogger("sluice.receiver")

SERVICES: dict[Signal, tuple[str, str]] = {
    Signal.LOGS: ("opentelemetry.proto.collector.logs.v1.LogsService", "rejected_log_records"),
    Signal.TRACES: ("opentelemetry.proto.collector.trace.v1.TraceService", "rejected_spans"),
    Signal.METRICS: (
        "opentelemetry.proto.collector.metrics.v1.MetricsService", "rejected_data_points",
    ),
}
RESPONSE_TYPES: dict[Signal, Any] = {
    Signal.LOGS: ExportLogsServiceResponse,
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
}
_EMPTY_RESPONSE = b""  # an Export*ServiceResponse with no partial_success encodes to no bytes


def _retry_trailer(delay_s: float) -> tuple[tuple[str, bytes], ...]:
    seconds = int(delay_s)
    info = RetryInfo(retry_delay=Duration(seconds=seconds, nanos=int((delay_s - seconds) * 1e9)))
    return (("google.rpc.retryinfo-bin", info.SerializeToString()),)


class TokenAuthenticator:
    """Maps an `authorization: Bearer <token>` header to the tenant that owns the token.

    Tokens are compared as SHA-256 digests with `hmac.compare_digest`, against every configured
    token without stopping at a match, so neither the position of the right token nor the
    length of a guess shows in the response time. The tenant comes only from here — never from
    anything inside the request — so a client cannot write as another tenant.
    """

    def __init__(self, auth: AuthConfig) -> None:
        self._tokens = [
            (hashlib.sha256(t.token.encode("utf-8")).digest(), t.name) for t in auth.tenants
        ]

    def __call__(self, metadata: Any) -> tuple[str | None, str]:
        """(tenant, "") when the token is known, else (None, reason) with reason "missing" or
        "invalid" — a label for /metrics, never the token itself."""
        header: str | bytes | None = None
        for key, value in metadata or ():
            if key == "authorization":
                header = value
                break
        if header is None:
            return None, "missing"
        text = header.decode("latin-1") if isinstance(header, bytes) else header
        scheme, _, credential = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return None, "invalid"
        presented = hashlib.sha256(credential.strip().encode("utf-8", "surrogateescape")).digest()
        tenant: str | None = None
        for digest, name in self._tokens:
            if hmac.compare_digest(presented, digest):
                tenant = name
        return (tenant, "") if tenant is not None else (None, "invalid")


class OtlpHandlers:
    """One Export handler per signal, all feeding the same pipeline."""

    def __init__(self, pipeline: Pipeline, config: ReceiverConfig, telemetry: ReceiverTelemetry):
        self.pipeline = pipeline
        self.max_request_bytes = config.max_request_bytes
        self.telemetry = telemetry
        self._logged_unexpected: set[str] = set()
        self._authenticate = TokenAuthenticator(config.auth) if config.auth.enabled else None
        self._auth_failures = Counter(
            "sluice_auth_failures", "Export requests refused as UNAUTHENTICATED, by reason "
            "(missing or invalid token).", ["signal", "reason"], registry=telemetry.registry,
        ) if config.auth.enabled else None

    def handler(self, signal: Signal) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def export(data: bytes, context: grpc.ServicerContext) -> bytes:
            return self._export(signal, data, context)
        return export

    def _export(self, signal: Signal, data: bytes, context: grpc.ServicerContext) -> bytes:
        requests = self.telemetry.requests
        tenant = ""
        if self._authenticate is not None:
            found, reason = self._authenticate(context.invocation_metadata())
            if found is None:
                # Before admission and decoding: an unauthenticated client costs no queue space.
                requests.labels(signal.value, "UNAUTHENTICATED").inc()
                if self._auth_failures is not None:
                    self._auth_failures.labels(signal.value, reason).inc()
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing bearer token; send `authorization: Bearer <token>`" if reason == "missing"
                    else "invalid bearer token",
                )
            tenant = found or ""
        try:
            with self.pipeline.admit(len(data)):
                batch = decode_request(
                    signal, data, max_bytes=self.max_request_bytes, tenant=tenant
                )
                batch = self.pipeline.process(batch)
        except DecodeError as exc:
            requests.labels(signal.value, "INVALID_ARGUMENT").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except RequestTooLarge as exc:
            requests.labels(signal.value, "RESOURCE_EXHAUSTED").inc()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except (Overloaded, SinkError) as exc:
            requests.labels(signal.value, "UNAVAILABLE").inc()
            context.set_trailing_metadata(_retry_trailer(exc.retry_after_s))
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:
            # A bug of ours, not the client's: ask for a retry (nothing was acknowledged) and
            # log the first occurrence of each kind with its traceback.
            requests.labels(signal.value, "UNAVAILABLE").inc()
            kind = type(exc).__name__
            if kind not in self._logged_unexpected:
                self._logged_unexpected.add(kind)
                log.exception("unexpected error while processing a %s batch", signal.value)
            context.set_trailing_metadata(_retry_trailer(1.0))
            context.abort(grpc.StatusCode.UNAVAILABLE, f"receiver error ({kind}); retry later")
        requests.labels(signal.value, "OK").inc()
        return _response(signal, batch)


def _response(signal: Signal, batch: Batch) -> bytes:
    if not batch.rejected:
        return _EMPTY_RESPONSE
    response = RESPONSE_TYPES[signal]()
    setattr(response.partial_success, SERVICES[signal][1], batch.rejected)
    response.partial_success.error_message = batch.rejected_reason
    data: bytes = response.SerializeToString()
    return data


def build_server(
    config: ReceiverConfig, handlers: OtlpHandlers, *, listen: str | None = None,
    reuse_port: bool = False,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started-not-yet gRPC server bound to `listen`; returns it, the bound port and health."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", config.max_request_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    # More handler threads than the in-flight bound, and no grpc-level RPC limit: a request over
    # the bound must reach Pipeline.admit, which answers UNAVAILABLE with RetryInfo at once.
    # grpc's own limit (maximum_concurrent_rpcs) answers RESOURCE_EXHAUSTED without RetryInfo,
    # which OTLP exporters do not retry, and a pool no larger than the bound would queue the
    # excess silently instead of refusing it.
    server = grpc.server(
        futures.ThreadPoolExecutor(
            # Query streams (Export/Tail) hold a thread for their whole life: they get their
            # own share on top, so readers never starve ingest of threads.
            max_workers=max(config.threads, config.queue.max_requests + 4)
            + (config.query.max_streams + 8 if config.query.enabled else 0),
            thread_name_prefix="sluice-grpc",
        ),
        options=options,
    )
    generic = [
        grpc.method_handlers_generic_handler(
            service,
            {"Export": grpc.unary_unary_rpc_method_handler(handlers.handler(signal))},
        )
        for signal, (service, _) in SERVICES.items()
    ]
    server.add_generic_rpc_handlers(generic)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = listen or config.listen
    if config.tls is not None:
        credentials = grpc.ssl_server_credentials(
            [(config.tls.key_file.read_bytes(), config.tls.cert_file.read_bytes())],
            root_certificates=(
                config.tls.client_ca_file.read_bytes() if config.tls.client_ca_file else None
            ),
            require_client_auth=config.tls.client_ca_file is not None,
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    return server, port, health_servicer


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ["", *(service for service, _ in SERVICES.values())]:
        health_servicer.set(name, status)
