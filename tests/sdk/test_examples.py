"""The examples run as documented and their telemetry arrives at a real OTLP receiver."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.sdk.otlp_sink import REPO, run_script, start_sink


def _env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SLUICE_"))}
    path = os.pathsep.join(filter(None, [str(REPO / "sdk"), str(REPO), os.environ.get("PYTHONPATH")]))
    env.update({"PYTHONPATH": path, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "SLUICE_SPILL_DIR": str(tmp_path), "SLUICE_RUNTIME_METRICS": "false"})
    return env


def test_web_service_example_serves_requests_with_access_records_and_spans(tmp_path: Path) -> None:
    sink = start_sink()
    proc = subprocess.Popen([sys.executable, str(REPO / "examples" / "web_service.py"), "--port", "0",
                             "--requests", "3"], env=_env(sink.endpoint, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().split()[-1]
        with urllib.request.urlopen(f"{base}/orders/42", timeout=5) as response:
            assert response.headers["X-Request-ID"]
        req = urllib.request.Request(f"{base}/login?user=alice", method="POST")
        urllib.request.urlopen(req, timeout=5).close()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/boom", timeout=5)
        assert info.value.code == 500
        assert proc.wait(timeout=15) == 0, proc.stderr.read() if proc.stderr else ""
        access = [r for r in sink.log_records() if r["attributes"].get("log.category") == "access"]
        assert sorted(r["attributes"]["http.response.status_code"] for r in access) == [200, 200, 500]
        assert {r["attributes"]["http.route"] for r in access} == {"/orders/{id}", "/login", "/boom"}
        assert any(r["event_name"] == "auth.login" for r in sink.log_records())
        assert {s["name"] for s in sink.spans()} >= {"GET /orders/{id}", "POST /login", "GET /boom"}
    finally:
        proc.kill()
        proc.wait()
        sink.stop()


def test_worker_example_success_and_failure_paths(tmp_path: Path) -> None:
    sink = start_sink()
    try:
        env = _env(sink.endpoint, tmp_path)
        ok = run_script(f"import runpy, sys; sys.argv=['worker']; runpy.run_path('{REPO}/examples/worker.py', "
                        "run_name='__main__')", env=env)
        assert ok.returncode == 0, ok.stderr
        assert any(r["event_name"] == "audit.installer.publish" for r in sink.log_records())
        failed = subprocess.run([sys.executable, str(REPO / "examples" / "worker.py"), "--fail-at", "sign"],
                                env=env, capture_output=True, text=True, timeout=30, check=False)
        assert failed.returncode == 1, failed.stderr
        fails = [r for r in sink.log_records() if r["event_name"] == "job.fail"]
        assert {r["attributes"]["job.name"] for r in fails} == {"msi.generate.sign", "msi.generate"}
        assert all(r["attributes"]["exception.type"] == "BuildError" for r in fails)
        error_spans = [s for s in sink.spans() if s["status"] == 2]
        assert {s["name"] for s in error_spans} == {"job msi.generate.sign", "job msi.generate"}
    finally:
        sink.stop()
