"""The official Python OTLP/HTTP exporters (protobuf, with and without gzip) against a real
receiver: every log, span and metric is on disk, masked and categorised exactly as the same
records sent by the official OTLP/gRPC exporters — line for line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.otlp_exporter_app import SECRETS
from tests.e2e.stored import stored_files
from tests.receiver_process import ReceiverProcess

APP = Path(__file__).with_name("otlp_exporter_app.py")
REPO = Path(__file__).resolve().parents[2]
# Bodies per category file, with every mask token written [REDACTED].
EXPECTED = {
    "app": ["order placed", {"event": "profile", "contact": {"email": "[REDACTED]", "plan": "pro"}}],
    "access": ["POST /checkout 200"],
    "security": ["login failed for [REDACTED] with password=[REDACTED]"],
    "error": ["payment failed for card [REDACTED]"],
    "audit": ["role changed"],
}
MASK_TOKEN = re.compile(r"\[REDACTED:[a-z_]+\]")


def run_app(tmp_path: Path, name: str, **env: str) -> dict[str, str]:
    """Start a receiver, run the app against it with `env`, stop the receiver; its files."""
    work = tmp_path / name
    work.mkdir()
    receiver = ReceiverProcess(work).start()
    try:
        endpoint = receiver.endpoint if env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc" else receiver.http_endpoint
        app_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        app_env.update(env, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{endpoint}",
                       PYTHONPATH=str(REPO), OTEL_SDK_DISABLED="false")
        done = subprocess.run([sys.executable, str(APP)], env=app_env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert receiver.stop() == 0, receiver.stderr
    finally:
        receiver.kill()
    return stored_files(receiver.logs_dir)


@pytest.fixture(scope="module")
def over_grpc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return run_app(tmp_path_factory.mktemp("grpc"), "grpc", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_python_http_exporters_store_exactly_what_grpc_stores(
    tmp_path: Path, over_grpc: dict[str, str], compression: str
) -> None:
    over_http = run_app(tmp_path, "http", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                        OTEL_EXPORTER_OTLP_COMPRESSION=compression)
    assert set(over_http) == set(over_grpc)
    for name, text in over_grpc.items():
        assert over_http[name] == text, f"{name} differs between OTLP/gRPC and OTLP/HTTP"


def test_what_both_store_is_masked_and_in_its_category(over_grpc: dict[str, str]) -> None:
    everything = "".join(over_grpc.values())
    for secret in SECRETS:
        assert secret not in everything
    for category, bodies in EXPECTED.items():
        lines = [json.loads(MASK_TOKEN.sub("[REDACTED]", line))
                 for line in over_grpc[f"{category}.log"].splitlines()]
        assert [r["body"] for r in lines] == bodies, category
        assert {r["category"] for r in lines} == {category}
        assert {r["trace_id"] for r in lines} == {"4bf92f3577b34da6a3ce929d00000001"}
    spans = [json.loads(line) for line in over_grpc["traces.log"].splitlines()]
    assert sorted(s["name"] for s in spans) == ["POST /checkout", "SELECT orders"]
    metrics = [json.loads(line) for line in over_grpc["metrics.log"].splitlines()]
    assert sorted(m["name"] for m in metrics) == ["orders_placed", "queue_depth", "request_duration"]
