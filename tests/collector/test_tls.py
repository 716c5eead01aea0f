"""TLS on the OTLP listener, with and without client certificates, using a throwaway CA."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

from sluice_collector.testing import InMemorySink, start_receiver
from tests.otlp_builders import log_record, logs_request
from tests.tlsutil import make_tls_files


def emit(endpoint: str, credentials: grpc.ChannelCredentials) -> None:
    provider = LoggerProvider()
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, credentials=credentials))
    )
    provider.get_logger("tls").emit(body="over tls", severity_number=9)  # type: ignore[call-arg]
    provider.shutdown()


def grpc_tls(tls: dict[str, str]) -> dict[str, object]:
    return {"receivers": {"otlp": {"protocols": {"grpc": {"tls": tls}}}}}


def test_official_exporter_delivers_over_tls(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "pki")
    sink = InMemorySink()
    receiver = start_receiver(
        grpc_tls({"cert_file": str(tls.server_cert), "key_file": str(tls.server_key)}), sinks=[sink]
    )
    try:
        emit(f"https://127.0.0.1:{receiver.port}",
             grpc.ssl_channel_credentials(root_certificates=tls.ca_cert.read_bytes()))
    finally:
        receiver.stop(5)
    assert [r[2].body.string_value for r in sink.by_category["app"]] == ["over tls"]


def test_plaintext_client_cannot_talk_to_a_tls_listener(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "pki")
    receiver = start_receiver(
        grpc_tls({"cert_file": str(tls.server_cert), "key_file": str(tls.server_key)}),
        sinks=[InMemorySink()],
    )
    try:
        with grpc.insecure_channel(receiver.endpoint) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            with pytest.raises(grpc.RpcError) as info:
                export(logs_request(log_record()).SerializeToString(), timeout=3)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        receiver.stop(5)


def test_client_certificates_are_required_when_a_client_ca_is_set(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "pki")
    sink = InMemorySink()
    receiver = start_receiver(
        grpc_tls({"cert_file": str(tls.server_cert), "key_file": str(tls.server_key),
                  "client_ca_file": str(tls.ca_cert)}),
        sinks=[sink],
    )
    payload = logs_request(log_record("mtls")).SerializeToString()
    method = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
    try:
        anonymous = grpc.ssl_channel_credentials(root_certificates=tls.ca_cert.read_bytes())
        with grpc.secure_channel(receiver.endpoint, anonymous) as channel:
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(method)(payload, timeout=3)
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=tls.ca_cert.read_bytes(),
            private_key=tls.client_key.read_bytes(), certificate_chain=tls.client_cert.read_bytes(),
        )
        with grpc.secure_channel(receiver.endpoint, with_cert) as channel:
            channel.unary_unary(method)(payload, timeout=5)
    finally:
        receiver.stop(5)
    assert [r[2].body.string_value for r in sink.by_category["app"]] == ["mtls"]


logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").setLevel(logging.CRITICAL)
