"""The official OpenTelemetry JavaScript OTLP exporters, from npm, run under Node against a real
receiver: OTLP/HTTP JSON (`@opentelemetry/exporter-*-otlp-http`) and OTLP/HTTP protobuf
(`-otlp-proto`) store exactly what the same app stores over OTLP/gRPC (`-otlp-grpc`), line for
line — masked and categorised.

The app and its pinned dependencies live in tests/node (package.json + package-lock.json);
`npm ci` runs here, or in `make node-deps`, whenever node_modules is missing or older than the
lock file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.stored import stored_files
from tests.receiver_process import ReceiverProcess

NODE_APP = Path(__file__).resolve().parents[1] / "node"
STAMP = NODE_APP / "node_modules" / ".sluice-installed"  # the lock file's sha256 once installed
SECRETS = ("swordfish", "dave@example.com", "5500 0000 0000 0004", "n0de-s3cr3t-t0k3n-value",
           "erin@example.org")
MASK_TOKEN = re.compile(r"\[REDACTED:[a-z_]+\]")
EXPECTED = {
    "app": ["cart viewed", {"event": "signup", "contact": {"email": "[REDACTED]", "plan": "pro"}}],
    "access": ["GET /cart 200"],
    "security": ["login failed for [REDACTED] with password=[REDACTED]"],
    "error": ["card [REDACTED] was declined"],
}


def node_dependencies() -> str:
    """`node`, with tests/node/node_modules installed from the lock file (npm ci)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("Node.js (20.6 or later) and npm are needed; `make test` installs them")
    wanted = hashlib.sha256((NODE_APP / "package-lock.json").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_APP, check=True,
                       capture_output=True, timeout=600)
        STAMP.write_text(wanted + "\n")
    return node


@pytest.fixture(scope="module")
def node() -> str:
    return node_dependencies()


def run_node_app(node: str, work: Path, exporter: str) -> dict[str, str]:
    """A receiver (default config), the Node app sending through `exporter`, then its files."""
    work.mkdir()
    receiver = ReceiverProcess(work).start()
    try:
        endpoint = receiver.endpoint if exporter == "grpc" else receiver.http_endpoint
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(SLUICE_EXPORTER=exporter, SLUICE_ENDPOINT=f"http://{endpoint}")
        done = subprocess.run([node, "app.mjs"], cwd=NODE_APP, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert receiver.stop() == 0, receiver.stderr
    finally:
        receiver.kill()
    return stored_files(receiver.logs_dir)


@pytest.fixture(scope="module")
def over_grpc(node: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return run_node_app(node, tmp_path_factory.mktemp("node") / "grpc", "grpc")


@pytest.mark.parametrize("exporter", ["http-json", "http-proto"])
def test_javascript_http_exporters_store_exactly_what_the_grpc_exporter_stores(
    node: str, over_grpc: dict[str, str], tmp_path: Path, exporter: str
) -> None:
    over_http = run_node_app(node, tmp_path / exporter, exporter)
    assert set(over_http) == set(over_grpc)
    # The app's SimpleLogRecordProcessor exports each record on its own, concurrently: records
    # of different requests may be stored in either order, over any transport. Each line must
    # be the same, byte for byte.
    for name, text in over_grpc.items():
        assert sorted(over_http[name].splitlines()) == sorted(text.splitlines()), \
            f"{name} differs between {exporter} and grpc"


def test_what_the_javascript_app_stores_is_masked_and_in_its_category(over_grpc: dict[str, str]) -> None:
    everything = "".join(over_grpc.values())
    for secret in SECRETS:
        assert secret not in everything
    spans = {s["name"]: s for s in map(json.loads, over_grpc["traces.log"].splitlines())}
    assert set(spans) == {"GET /cart", "load cart"}
    assert spans["GET /cart"]["kind"] == "server"
    assert spans["load cart"]["parent_span_id"] == spans["GET /cart"]["span_id"]
    for category, bodies in EXPECTED.items():
        lines = [json.loads(MASK_TOKEN.sub("[REDACTED]", line))
                 for line in over_grpc[f"{category}.log"].splitlines()]
        # Each record is its own concurrent request (SimpleLogRecordProcessor): any order.
        assert sorted(json.dumps(r["body"], sort_keys=True) for r in lines) == sorted(
            json.dumps(body, sort_keys=True) for body in bodies), category
        assert {(r["trace_id"], r["span_id"]) for r in lines} == {
            (spans["GET /cart"]["trace_id"], spans["GET /cart"]["span_id"])}
        assert {r["service.name"] for r in lines} == {"storefront"}
