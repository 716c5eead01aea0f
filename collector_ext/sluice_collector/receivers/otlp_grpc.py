"""The OTLP/gRPC front door: logs/traces/metrics `Export` and the standard health service.

Thin on purpose: a handler turns its call into one `IngestCore.export` and the core's typed
errors into OTLP/gRPC statuses. Handlers receive raw bytes (no grpcio deserializer) so that
malformed input is answered with `INVALID_ARGUMENT` rather than grpcio's `INTERNAL`:

    Unauthenticated  → UNAUTHENTICATED
    DecodeError      → INVALID_ARGUMENT    (not retryable: the data is bad)
    RequestTooLarge  → RESOURCE_EXHAUSTED  (without retry info: retrying the same bytes won't help)
    Retryable        → UNAVAILABLE + google.rpc.RetryInfo (overload, sink failure, our bug)
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sluice_collector.batch import Signal
from sluice_collector.errors import DecodeError, RequestTooLarge, Retryable, Unauthenticated
from sluice_collector.ingest import Encoding, IngestCore
from sluice_collector.receivers.config import GrpcConfig

SERVICES: dict[Signal, str] = {
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
}


def _retry_trailer(delay_s: float) -> tuple[tuple[str, bytes], ...]:
    seconds = int(delay_s)
    info = RetryInfo(retry_delay=Duration(seconds=seconds, nanos=int((delay_s - seconds) * 1e9)))
    return (("google.rpc.retryinfo-bin", info.SerializeToString()),)


def _authorization(context: grpc.ServicerContext) -> str | bytes | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value
    return None


class OtlpGrpcHandlers:
    """One Export handler per signal, all calling the same ingest core."""

    def __init__(self, core: IngestCore) -> None:
        self.core = core

    def handler(self, signal: Signal) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def export(data: bytes, context: grpc.ServicerContext) -> bytes:
            return self._export(signal, data, context)
        return export

    def _export(self, signal: Signal, data: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            caller = self.core.authenticate(signal, _authorization(context))
            result = self.core.export(signal, data, Encoding.PROTOBUF, caller)
        except Unauthenticated as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except RequestTooLarge as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except Retryable as exc:
            context.set_trailing_metadata(_retry_trailer(exc.retry_after_s))
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if not result.rejected:
            return b""  # an Export*ServiceResponse with no partial_success encodes to no bytes
        data_out: bytes = result.response(signal).SerializeToString()
        return data_out


def listen_problem(endpoint: str, *, reuse_port: bool = False) -> str:
    """Why `endpoint` cannot be listened on ("" when it can), found by binding it ourselves.

    grpc core reports a failed bind by printing its own `add_port.cc` error line to stderr
    before `add_insecure_port` returns, so the receiver checks first and says it once, in its
    own words. The probe binds as grpc does (SO_REUSEADDR, so a port whose old connections
    are in TIME_WAIT is free; SO_REUSEPORT only for `--workers`) and, as grpc, is content
    when any of the addresses a host name resolves to binds. Port 0 always binds.
    """
    host, _, port_text = endpoint.rpartition(":")
    port = int(port_text)
    if port == 0:
        return ""
    host = host.strip("[]")
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    first_error: OSError | None = None
    for family, kind, proto, _name, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port and hasattr(socket, "SO_REUSEPORT"):
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                probe.bind(address)
            return ""
        except OSError as exc:
            first_error = first_error or exc
    if first_error is None:
        return f"{host!r} resolves to no address"
    return (first_error.strerror or str(first_error)).lower()


def build_server(
    config: GrpcConfig, handlers: OtlpGrpcHandlers, *, max_request_bytes: int, max_workers: int,
    reuse_port: bool = False,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started-not-yet gRPC server bound to `config.endpoint`; returns it, the bound port
    (0 when the address could not be bound) and its health servicer.

    `max_workers` must exceed the ingest core's in-flight bound, and there is no grpc-level RPC
    limit: a request over the bound must reach admission, which answers UNAVAILABLE with
    RetryInfo at once. grpc's own limit (maximum_concurrent_rpcs) answers RESOURCE_EXHAUSTED
    without RetryInfo, which OTLP exporters do not retry, and a pool no larger than the bound
    would queue the excess silently instead of refusing it.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sluice-grpc"),
        options=options,
    )
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler(
            service, {"Export": grpc.unary_unary_rpc_method_handler(handlers.handler(signal))},
        )
        for signal, service in SERVICES.items()
    ])
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        if config.tls is not None:
            credentials = grpc.ssl_server_credentials(
                [(config.tls.key_file.read_bytes(), config.tls.cert_file.read_bytes())],
                root_certificates=(
                    config.tls.client_ca_file.read_bytes() if config.tls.client_ca_file else None
                ),
                require_client_auth=config.tls.client_ca_file is not None,
            )
            port = server.add_secure_port(config.endpoint, credentials)
        else:
            port = server.add_insecure_port(config.endpoint)
    except RuntimeError:  # grpcio raises a bare RuntimeError("Failed to bind ...")
        port = 0
    return server, port, health_servicer


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ["", *SERVICES.values()]:
        health_servicer.set(name, status)
