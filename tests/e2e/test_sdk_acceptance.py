"""The SDK as a user meets it: only `sluice.init(service_name, endpoint)`, then stdlib logging,
the OTel API tracer and meter, urllib (auto-instrumented) and `sluice.audit` — read back from a
real receiver's files."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.receiver_process import ReceiverProcess

APP = r'''
import http.server, logging, sys, threading, urllib.request
import sluice
from opentelemetry import metrics, trace

sluice.init(service_name="acceptance-app", endpoint=sys.argv[1])
logging.basicConfig(level=logging.INFO)

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Hello)
threading.Thread(target=server.serve_forever, daemon=True).start()

log = logging.getLogger("acceptance")
with trace.get_tracer("acceptance").start_as_current_span("work") as span:
    log.info("inside the span")
    urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/hello", timeout=5).read()
    sluice.audit("user.role.change", actor="admin-1", entity_type="user", entity_id="u-9",
                 old={"role": "dev"}, new={"role": "admin"})
    print(format(span.get_span_context().trace_id, "032x"))
metrics.get_meter("acceptance").create_counter("acceptance.jobs").add(5)
server.shutdown()
sluice.shutdown()
'''


def test_init_only_app_gets_correlated_logs_auto_http_spans_audit_and_metrics(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.instrumentation.urllib")
    receiver = ReceiverProcess(tmp_path).start()
    try:
        (tmp_path / "app.py").write_text(APP)
        result = subprocess.run([sys.executable, str(tmp_path / "app.py"), f"http://{receiver.endpoint}"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        trace_id = result.stdout.strip()
        assert receiver.stop(signal.SIGTERM) == 0
    finally:
        receiver.kill()
    logs = [r for r in receiver.read("app") if r["body"] == "inside the span"]
    assert len(logs) == 1
    assert logs[0]["trace_id"] == trace_id
    assert logs[0]["service.name"] == "acceptance-app"
    spans = [s for s in receiver.read("traces") if s["trace_id"] == trace_id]
    assert {s["name"] for s in spans} >= {"work"}
    http_spans = [s for s in spans if s["kind"] == "client"]
    assert http_spans, f"no auto-instrumented HTTP client span among {[s['name'] for s in spans]}"
    assert any("GET" in s["name"] for s in http_spans)
    audit = receiver.read("audit")
    assert len(audit) == 1
    attrs = audit[0]["attributes"]
    assert attrs["audit.actor"] == "admin-1"
    assert attrs["audit.action"] == "user.role.change"
    assert attrs["audit.entity.id"] == "u-9"
    assert attrs["audit.new"] == {"role": "admin"}
    assert audit[0]["trace_id"] == trace_id
    assert any(m["name"] == "acceptance.jobs" for m in receiver.read("metrics"))
