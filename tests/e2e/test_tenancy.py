"""Tenancy end to end: a real `sluice receiver run` with `auth`, fed by the official OpenTelemetry
OTLP/gRPC log exporter with an `authorization` header, writing real files."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from tests.receiver_process import ReceiverProcess

TOKENS = {"acme": "acme-token-0123456789abcdef", "globex": "globex-token-0123456789abcdef"}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    proc = ReceiverProcess(tmp_path, {
        "auth": {"tenants": {name: {"token": token} for name, token in TOKENS.items()}},
        "categories": {"app": {"path": "{tenant}/{service.name}.log"}},
    }).start()
    try:
        yield proc
    finally:
        proc.kill()


def emit(endpoint: str, token: str | None, records: list[tuple[str, dict[str, Any]]]) -> str:
    """Log `records` with the official SDK, then export them with the official OTLP exporter;
    returns the exporter's result name (SUCCESS or FAILURE)."""
    captured = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "shop", "tenant.id": "globex"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(captured))
    logger = logging.getLogger("e2e.tenancy")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        for message, extra in records:
            logger.warning(message, extra=extra)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    headers = {"authorization": f"Bearer {token}"} if token else None
    exporter = OTLPLogExporter(endpoint=endpoint, insecure=True, headers=headers, timeout=10)
    try:
        return exporter.export(captured.get_finished_logs()).name
    finally:
        exporter.shutdown()


def on_disk(logs: Path) -> dict[str, list[str]]:
    return {p.relative_to(logs).as_posix(): [json.loads(x)["body"] for x in p.read_text().splitlines()]
            for p in sorted(logs.rglob("*.log"))}


def test_official_exporter_with_a_bearer_header_writes_under_its_tenant(
    receiver: ReceiverProcess,
) -> None:
    assert emit(receiver.endpoint, TOKENS["acme"], [("hello", {})]) == "SUCCESS"
    assert emit(receiver.endpoint, TOKENS["globex"], [("hi", {})]) == "SUCCESS"
    assert on_disk(receiver.logs_dir) == {
        "tenants/acme/acme/shop.log": ["hello"], "tenants/globex/globex/shop.log": ["hi"],
    }


def test_no_or_wrong_token_is_refused_and_nothing_is_written(receiver: ReceiverProcess) -> None:
    assert emit(receiver.endpoint, None, [("anonymous", {})]) == "FAILURE"
    assert emit(receiver.endpoint, "not-a-valid-token-at-all", [("forged", {})]) == "FAILURE"
    assert on_disk(receiver.logs_dir) == {}
    assert "not-a-valid-token-at-all" not in receiver.stderr


def test_acme_cannot_write_as_globex_through_record_fields(receiver: ReceiverProcess) -> None:
    """The resource says `tenant.id: globex`; records claim it again, route themselves to
    audit and security by `log.category`, and name paths: all of it lands under acme."""
    tricks = [
        ("claims globex", {"tenant.id": "globex", "tenant": "globex"}),
        ("audit as globex", {"log.category": "audit", "tenant.id": "globex"}),
        ("path trick", {"log.category": "../tenants/globex/audit"}),
        ("security", {"log.category": "security", "tenant": "../globex"}),
    ]
    assert emit(receiver.endpoint, TOKENS["acme"], tricks) == "SUCCESS"
    files = on_disk(receiver.logs_dir)
    assert all(rel.startswith("tenants/acme/") for rel in files), files
    assert sorted(b for bodies in files.values() for b in bodies) == sorted(m for m, _ in tricks)
    assert not (receiver.logs_dir / "tenants" / "globex").exists()
