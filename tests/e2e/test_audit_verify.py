"""`sluice audit verify` against files written by a real `sluice receiver run` (OTLP over gRPC,
restarts, `--workers 2`, tenants), with the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc

from tests.otlp_builders import log_record, logs_request
from tests.receiver_process import ReceiverProcess

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TOKEN = "acme-token-0123456789abcdef"


def send_audit(endpoint: str, *bodies: str, token: str | None = None) -> None:
    payload = logs_request(
        *(log_record(b, attributes={"log.category": "audit", "actor": "u1"}) for b in bodies)
    ).SerializeToString()
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(endpoint) as channel:
        channel.unary_unary(LOGS_EXPORT).with_call(payload, timeout=10, metadata=metadata)


def verify(logs: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice_collector", "audit", "verify", str(logs), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )


def run_receiver(workdir: Path, settings: dict[str, Any], *, extra_args: list[str] | None = None,
                 send: list[tuple[str, ...]], token: str | None = None) -> ReceiverProcess:
    proc = ReceiverProcess(workdir, settings, extra_args=extra_args).start()
    try:
        for bodies in send:
            send_audit(proc.endpoint, *bodies, token=token)
    finally:
        assert proc.stop() == 0
    return proc


def test_chain_survives_restarts_and_workers_and_verify_finds_an_edit(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"files": {"rotation": {"max_bytes": "2KiB", "compress": True}}}
    run_receiver(tmp_path, settings, send=[("a1", "a2"), ("a3",), ("a4", "a5", "a6")])
    proc = run_receiver(tmp_path, settings, extra_args=["--workers", "2"],
                        send=[(f"b{i}",) for i in range(8)])
    logs = proc.logs_dir
    assert len(list(logs.glob("audit.log.*.gz"))) >= 1  # it did rotate and compress
    ok = verify(logs)
    assert ok.returncode == 0, ok.stderr
    assert "intact: 14 audit records in 1 file set(s)" in ok.stdout
    active = logs / "audit.log"
    active.write_bytes(active.read_bytes().replace(b'"actor":"u1"', b'"actor":"u9"', 1))
    broken = verify(logs)
    assert broken.returncode == 1
    assert f"BROKEN {active}:1: audit.hash does not match" in broken.stderr


def test_keyed_tenant_chain_needs_the_key_to_verify(tmp_path: Path) -> None:
    key_file = tmp_path / "chain.key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    settings = {"auth": {"tenants": {"acme": {"token": TOKEN}}},
                "files": {"audit_chain": {"key_file": str(key_file)}}}
    proc = run_receiver(tmp_path, settings, send=[("k1", "k2")], token=TOKEN)
    logs = proc.logs_dir
    assert (logs / "tenants" / "acme" / "audit.log").exists()
    ok = verify(logs, "--key-file", str(key_file))
    assert ok.returncode == 0, ok.stderr
    assert "intact: 2 audit records in 1 file set(s) (keyed)" in ok.stdout
    keyed_env = verify(logs, "--key-env", "CHAIN_KEY", env={"CHAIN_KEY": key_file.read_text().strip()})
    assert keyed_env.returncode == 0, keyed_env.stderr
    unkeyed = verify(logs)
    assert unkeyed.returncode == 1
    assert "pass --key-env or --key-file" in unkeyed.stderr


def test_verify_refuses_a_directory_without_audit_files(tmp_path: Path) -> None:
    """Deleting every audit file must not read as "intact"."""
    result = verify(tmp_path)
    assert result.returncode == 1
    assert "no audit files" in result.stderr
