"""examples/quickstart.py (what `make demo` runs) against a real receiver: every category file
gets its record, correlated and masked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.receiver_process import ReceiverProcess

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_records_land_in_their_categories(tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path).start()
    try:
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{receiver.endpoint}")
        result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert receiver.stop(signal.SIGTERM) == 0
    finally:
        receiver.kill()
    access, app, error = receiver.read("access"), receiver.read("app"), receiver.read("error")
    security, audit = receiver.read("security"), receiver.read("audit")
    assert [r["body"] for r in access] == ["GET /orders/42"]
    assert [r["body"] for r in app] == ["order placed"]
    assert [r["body"] for r in error] == ["payment failed"]
    assert len(security) == 1
    assert "hunter2" not in security[0]["body"]
    assert "[REDACTED:" in security[0]["body"]
    assert audit[0]["attributes"]["audit.actor"] == "u-17"
    trace_ids = {r["trace_id"] for r in access + app + error + security + audit}
    assert len(trace_ids) == 1
    assert "" not in trace_ids
    assert {r["attributes"].get("request.id") for r in app + access} == {"req-42"}
    spans = receiver.read("traces")
    assert [s["name"] for s in spans] == ["checkout"]
    assert spans[0]["trace_id"] in trace_ids
    assert any(m["name"] == "orders" for m in receiver.read("metrics"))
