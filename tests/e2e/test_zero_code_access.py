"""A zero-code app gets an access log: a real Flask app run under the official
`opentelemetry-instrument` command (opentelemetry-distro + the Flask instrumentation), its OTLP
exporter pointed at a real `sluice receiver run`, real HTTP requests over 127.0.0.1. The app
sends only spans; `access` fills with records carrying route, status and the request's trace id,
with the older HTTP conventions (today's default) and the stable ones alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.receiver_process import ReceiverProcess

APP = textwrap.dedent("""
    import sys
    from flask import Flask
    from werkzeug.serving import make_server

    app = Flask(__name__)

    @app.route("/orders/<int:order_id>")
    def order(order_id):
        return {"id": order_id}

    @app.route("/checkout", methods=["POST"])
    def checkout():
        return "payment service down", 503

    server = make_server("127.0.0.1", 0, app)
    print(server.port, flush=True)
    server.serve_forever()
""")
TRACE_OK = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_FAIL = "0af7651916cd43dd8448eb211c80319c"
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")


def request(port: int, method: str, path: str, trace_id: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None,
                                 headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
                                          "User-Agent": "zero-code-test/1.0"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for(read: Any, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        records: list[dict[str, Any]] = read()
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("conventions", ["default", "http"])  # OTEL_SEMCONV_STABILITY_OPT_IN
def test_a_flask_app_under_opentelemetry_instrument_gets_access_records(tmp_path: Path, conventions: str) -> None:
    receiver = ReceiverProcess(tmp_path).start()
    (tmp_path / "app.py").write_text(APP)
    env = {**os.environ, "OTEL_SERVICE_NAME": "zero-code-shop",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{receiver.endpoint}",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "true",
           "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
           "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "urllib,urllib3,requests"}
    env.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
    if conventions != "default":
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = conventions
    app = subprocess.Popen([str(INSTRUMENT), sys.executable, str(tmp_path / "app.py")], cwd=tmp_path,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None
        port = int(app.stdout.readline())
        assert request(port, "GET", "/orders/7", TRACE_OK) == 200
        assert request(port, "POST", "/checkout", TRACE_FAIL) == 503
        access = wait_for(lambda: receiver.read("access"), 2)
    finally:
        app.send_signal(signal.SIGINT)
        _, app_stderr = app.communicate(timeout=30)
        receiver.stop()
    assert len(access) == 2, (access, app_stderr, receiver.stderr)
    by_trace = {r["trace_id"]: r for r in access}
    ok, failed = by_trace[TRACE_OK], by_trace[TRACE_FAIL]
    assert ok["service.name"] == failed["service.name"] == "zero-code-shop"
    assert ok["attributes"]["http.route"] == "/orders/<int:order_id>"
    assert ok["attributes"]["http.request.method"] == "GET"
    assert ok["attributes"]["url.path"] == "/orders/7"
    assert ok["attributes"]["http.response.status_code"] == 200
    assert ok["attributes"]["user_agent.original"] == "zero-code-test/1.0"
    assert ok["attributes"]["client.address"].startswith("127.0.0.")  # partly masked by default
    assert ok["severity"] == "INFO"
    assert ok["body"].startswith('127.0.0.')
    assert '"GET /orders/7" 200 ' in ok["body"]
    assert failed["attributes"]["http.route"] == "/checkout"
    assert failed["attributes"]["http.response.status_code"] == 503
    assert failed["severity"] == "ERROR"
    # Same trace and span as the request's server span, which is stored too.
    spans = {(s["trace_id"], s["span_id"]): s for s in receiver.read("traces")}
    for record in (ok, failed):
        server = spans[record["trace_id"], record["span_id"]]
        assert server["kind"] == "server"
        assert server["scope"]["name"] == record["scope"]["name"] == "opentelemetry.instrumentation.flask"
