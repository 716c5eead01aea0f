"""End to end: sluice in a fresh interpreter, exporting to a real OTLP/gRPC server in this process."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.receiver_process import ReceiverProcess
from tests.sdk.otlp_sink import Sink, free_port, run_script, start_sink


def test_log_line_inside_a_span_carries_the_span_trace_and_span_ids(sink: Sink, tmp_path: Path) -> None:
    result = run_script(f"""
        import logging, sluice
        from opentelemetry import trace
        sluice.init(service_name="e2e", endpoint="{sink.endpoint}", runtime_metrics=False,
                    spill_dir="{tmp_path}")
        logging.getLogger().setLevel(logging.INFO)
        tracer = trace.get_tracer("e2e")
        with tracer.start_as_current_span("work") as span:
            ctx = span.get_span_context()
            print(format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
            logging.getLogger("app.orders").info("order %s placed", 42)
        sluice.shutdown()
    """)
    assert result.returncode == 0, result.stderr
    trace_id, span_id = result.stdout.split()
    [record] = [r for r in sink.log_records() if r["body"] == "order 42 placed"]
    assert (record["trace_id"], record["span_id"]) == (trace_id, span_id)
    assert record["scope"] == "app.orders"
    assert record["severity_text"] == "INFO"
    assert record["severity_number"] == 9
    assert record["attributes"]["code.function.name"] == "<module>"
    assert record["attributes"]["code.line.number"] == 11  # the script starts with a blank line
    assert record["resource"]["service.name"] == "e2e"
    assert record["resource"]["deployment.environment"] == "development"
    assert "host.name" in record["resource"]
    assert "process.pid" in record["resource"]
    [span] = [s for s in sink.spans() if s["name"] == "work"]
    assert span["trace_id"] == trace_id


def test_categories_audit_events_and_correlation_ids_arrive_as_attributes(sink: Sink, tmp_path: Path) -> None:
    result = run_script(f"""
        import sluice
        sluice.init(service_name="e2e", endpoint="{sink.endpoint}", runtime_metrics=False,
                    spill_dir="{tmp_path}")
        with sluice.context(request_id="req-1", user_id="u-7", tenant_id="t-3"):
            sluice.get_logger("security").warning("too many attempts", extra={{"attempts": 5}})
            sluice.audit("user.update", actor="admin", entity_type="user", entity_id=7,
                         old={{"role": "dev", "name": "a"}}, new={{"role": "admin", "name": "a"}})
            sluice.event(sluice.EventType.AUTH_LOGIN, user_id="u-7", status="success", duration_ms=12.5,
                         source_ip="10.0.0.1")
        sluice.shutdown()
    """)
    assert result.returncode == 0, result.stderr
    records = {r["body"]: r for r in sink.log_records()}
    security = records["too many attempts"]["attributes"]
    assert security["log.category"] == "security"
    assert security["attempts"] == 5
    assert security["request.id"] == "req-1"
    assert security["enduser.id"] == "u-7"
    assert security["tenant.id"] == "t-3"
    [audit] = [r for r in records.values() if r["attributes"].get("log.category") == "audit"]
    attrs = audit["attributes"]
    assert attrs["audit.actor"] == "admin"
    assert attrs["audit.action"] == "user.update"
    assert attrs["audit.entity.type"] == "user"
    assert attrs["audit.entity.id"] == "7"
    assert attrs["audit.old"] == {"role": "dev", "name": "a"}
    assert attrs["audit.new"] == {"role": "admin", "name": "a"}
    assert attrs["audit.changed_keys"] == ["role"]
    assert attrs["audit.status"] == "success"
    assert audit["event_name"] == "audit.user.update"
    [login] = [r for r in records.values() if r["event_name"] == "auth.login"]
    assert login["attributes"]["log.category"] == "security"
    assert login["attributes"]["event.duration_ms"] == 12.5
    assert login["attributes"]["client.address"] == "10.0.0.1"


def test_basicconfig_output_is_unchanged_and_not_duplicated(sink: Sink, tmp_path: Path) -> None:
    script = """
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
        INIT
        logging.getLogger("app").info("hello %s", "world")
        logging.getLogger("app").warning("careful")
        try:
            1 / 0
        except ZeroDivisionError:
            logging.getLogger("app").exception("boom")
    """
    plain = run_script(script.replace("INIT", "pass"))
    with_sluice = run_script(script.replace(
        "INIT", f"import sluice; sluice.init(endpoint='{sink.endpoint}', runtime_metrics=False, "
                f"spill_dir='{tmp_path}')"))
    assert with_sluice.returncode == 0, with_sluice.stderr
    assert with_sluice.stdout == plain.stdout
    assert with_sluice.stdout.count("hello world") == 1
    assert sink.wait_for(lambda s: len([r for r in s.log_records() if r["scope"] == "app"]) == 3)
    boom = next(r for r in sink.log_records() if r["body"] == "boom")
    assert boom["attributes"]["exception.type"] == "ZeroDivisionError"
    assert boom["attributes"]["exception.message"] == "division by zero"
    assert "Traceback" in boom["attributes"]["exception.stacktrace"]


FLASK_DEV_SERVER = """
    import os, signal, socket, sys, threading, time, urllib.request
    INIT
    from flask import Flask

    app = Flask("shop")

    @app.get("/")
    def index():
        app.logger.warning("index hit")
        return "ok"

    def client():
        while True:
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        assert urllib.request.urlopen("http://127.0.0.1:PORT/").read() == b"ok"
        os.kill(os.getpid(), signal.SIGINT)  # werkzeug's server stops on Ctrl+C

    threading.Thread(target=client, daemon=True).start()
    app.run(host="127.0.0.1", port=PORT)
    print("server stopped")
"""


def _console(result: Any) -> tuple[str, str]:
    """stdout and stderr with the clock taken out (werkzeug and Flask print timestamps)."""
    def normalise(text: str) -> str:
        text = re.sub(r"\[\d\d/\w{3}/\d{4} \d\d:\d\d:\d\d\]", "[TIME]", text)
        return re.sub(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]", "[TIME]", text)

    return normalise(result.stdout), normalise(result.stderr)


def test_flask_development_server_console_looks_exactly_as_without_sluice(sink: Sink, tmp_path: Path) -> None:
    """werkzeug prints its banner and request lines only when no handler would print them; a
    root handler made them vanish. Now they stay, and are shipped as well."""
    port = free_port()
    script = FLASK_DEV_SERVER.replace("PORT", str(port))
    plain = run_script(script.replace("INIT", "pass"), timeout_s=60)
    with_sluice = run_script(script.replace(
        "INIT", f"import sluice; sluice.init(service_name='shop', endpoint='{sink.endpoint}', "
                f"runtime_metrics=False, spill_dir='{tmp_path}')"), timeout_s=60)
    assert plain.returncode == 0, plain.stderr
    assert with_sluice.returncode == 0, with_sluice.stderr
    assert f"Running on http://127.0.0.1:{port}" in plain.stderr
    assert '"GET / HTTP/1.1" 200' in plain.stderr
    assert "index hit" in plain.stderr
    assert _console(with_sluice) == _console(plain)
    assert sink.wait_for(lambda s: any('"GET / HTTP/1.1" 200' in str(r["body"]) for r in s.log_records()))
    request_line = next(r for r in sink.log_records() if '"GET / HTTP/1.1" 200' in str(r["body"]))
    assert (request_line["scope"], request_line["severity_text"]) == ("werkzeug", "INFO")
    assert any(r["body"] == "index hit" for r in sink.log_records())


def test_readme_first_example_ships_log_info_and_prints_what_it_printed_before(sink: Sink, tmp_path: Path) -> None:
    """The README's first example: no logging configuration, `log.info()` after `sluice.init()`.
    The root logger stays at WARNING for the console (which prints only the warning, through
    `logging.lastResort`, as without sluice), and the bridge ships INFO and above."""
    script = """
        import logging, sys
        INIT
        log = logging.getLogger("billing.invoices")
        log.info("charging %s", "inv-7")
        log.debug("not shipped: below the bridge's default INFO")
        log.warning("card expires soon")
        print("root level", logging.getLevelName(logging.getLogger().level))
    """
    plain = run_script(script.replace("INIT", "pass"))
    with_sluice = run_script(script.replace(
        "INIT", f"import sluice; sluice.init(service_name='billing', endpoint='{sink.endpoint}', "
                f"runtime_metrics=False, instrument=False, spill_dir='{tmp_path}')"))
    assert with_sluice.returncode == 0, with_sluice.stderr
    assert (plain.stdout, plain.stderr) == ("root level WARNING\n", "card expires soon\n")
    assert (with_sluice.stdout, with_sluice.stderr) == (plain.stdout, plain.stderr)
    assert sink.wait_for(lambda s: len([r for r in s.log_records() if r["scope"] == "billing.invoices"]) == 2)
    shipped = [(r["body"], r["severity_text"]) for r in sink.log_records() if r["scope"] == "billing.invoices"]
    assert shipped == [("charging inv-7", "INFO"), ("card expires soon", "WARN")]


def test_logging_configured_after_init_prints_as_without_sluice(sink: Sink, tmp_path: Path) -> None:
    """basicConfig(level=INFO) after init: the app's console gets INFO as it would without sluice."""
    script = """
        import logging, sys
        INIT
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("app").info("configured after init")
        logging.getLogger("app").debug("below every level")
    """
    plain = run_script(script.replace("INIT", "pass"))
    with_sluice = run_script(script.replace(
        "INIT", f"import sluice; sluice.init(endpoint='{sink.endpoint}', runtime_metrics=False, "
                f"instrument=False, spill_dir='{tmp_path}')"))
    assert with_sluice.returncode == 0, with_sluice.stderr
    assert plain.stdout == "INFO app: configured after init\n"
    assert (with_sluice.stdout, with_sluice.stderr) == (plain.stdout, plain.stderr)
    assert sink.wait_for(lambda s: [r["body"] for r in s.log_records() if r["scope"] == "app"]
                         == ["configured after init"])


def test_formatters_can_print_trace_id_and_span_id(sink: Sink, tmp_path: Path) -> None:
    result = run_script(f"""
        import logging, sys, sluice
        from opentelemetry import trace
        sluice.init(endpoint="{sink.endpoint}", runtime_metrics=False, spill_dir="{tmp_path}")
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(trace_id)s %(span_id)s %(message)s")
        logging.info("outside")
        with trace.get_tracer("t").start_as_current_span("s") as span:
            logging.info("inside")
            print("expected", format(span.get_span_context().trace_id, "032x"))
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{'0' * 32} {'0' * 16} outside"
    assert lines[1].split()[0] == lines[2].split()[1]


def test_forked_child_gets_fresh_exporters_and_its_logs_arrive(sink: Sink, tmp_path: Path) -> None:
    result = run_script(f"""
        import logging, os, sluice
        sluice.init(service_name="forker", endpoint="{sink.endpoint}", runtime_metrics=False,
                    spill_dir="{tmp_path}", schedule_delay_s=0.2)
        log = sluice.get_logger("app")
        log.info("from parent")
        pid = os.fork()
        if pid == 0:
            from opentelemetry import trace
            with trace.get_tracer("child").start_as_current_span("child-span"):
                log.info("from child %d", os.getpid())
            sluice.shutdown()
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid)
        sluice.shutdown()
    """)
    assert result.returncode == 0, result.stderr
    child_pid = int(result.stdout.split()[-1])
    bodies = {r["body"] for r in sink.log_records()}
    assert "from parent" in bodies
    assert f"from child {child_pid}" in bodies
    child_record = next(r for r in sink.log_records() if r["body"] == f"from child {child_pid}")
    assert child_record["resource"]["process.pid"] == child_pid
    [span] = [s for s in sink.spans() if s["name"] == "child-span"]
    assert span["trace_id"] == child_record["trace_id"]


def test_exit_with_receiver_down_finishes_within_the_deadline(tmp_path: Path) -> None:
    """exit_timeout_s bounds the exit, not the exporters' own timeout: with a 2 s deadline and
    60 s export timeouts, an exit that ignored the deadline would take a minute or more. The
    bound asserted is a hang detector far from both, not a speed measurement."""
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = run_script(f"""
        import logging, sluice
        from opentelemetry import trace
        sluice.init(endpoint="{dead}", runtime_metrics=False, spill_dir="{tmp_path}", exit_timeout_s=2,
                    export_timeout_s=60,
                    instrument=False)  # importing every installed framework is not what this measures
        with trace.get_tracer("t").start_as_current_span("s"):
            for i in range(100):
                logging.getLogger("app").warning("line %d", i)
        sluice.get_logger("audit").info("must survive")
    """, timeout_s=120)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < 40.0, f"exit took {elapsed:.1f}s: the exit deadline was not honoured"
    assert any(tmp_path.iterdir()), "the audit record was not spilled"


def test_receiver_down_is_one_console_line_not_a_traceback(tmp_path: Path) -> None:
    """What a developer sees when the receiver is not running: one line naming it and what to check."""
    dead = f"http://127.0.0.1:{free_port()}"
    result = run_script(f"""
        import logging, sys, sluice
        logging.basicConfig(stream=sys.stderr, format="%(name)s: %(message)s")
        handle = sluice.init(endpoint="{dead}", runtime_metrics=False, instrument=False, spill_dir="{tmp_path}",
                             export_timeout_s=0.3, exit_timeout_s=1)
        for i in range(3):
            logging.getLogger("app").warning("line %d", i)
            handle.force_flush(0.5)
        sluice.shutdown()
    """, timeout_s=20)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    internal = [line for line in result.stderr.splitlines() if line.startswith("sluice.internal:")]
    assert len(internal) == 1, result.stderr
    assert f"cannot deliver logs to {dead} over gRPC: UNAVAILABLE" in internal[0]
    assert "is a receiver listening there?" in internal[0]
    assert [line for line in result.stderr.splitlines() if line.startswith("app:")] == [
        "app: line 0", "app: line 1", "app: line 2"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_receiver_down_the_span_and_metric_exporters_say_one_line_each_not_every_retry(
    tmp_path: Path, protocol: str,
) -> None:
    """OpenTelemetry's exporters printed `Transient error StatusCode.UNAVAILABLE encountered while
    exporting metrics ...`, `Failed to export ...` and `Shutdown in progress, aborting retry.`
    for every attempt of every interval, beside sluice's one line for logs. Now each signal says
    it once, the way the log shipper does."""
    dead = f"http://127.0.0.1:{free_port()}"
    result = run_script(f"""
        import logging, sys, time, sluice
        from opentelemetry import metrics, trace
        logging.basicConfig(stream=sys.stderr, format="%(name)s: %(message)s")
        sluice.init(endpoint="{dead}", protocol="{protocol}", runtime_metrics=False, instrument=False,
                    spill_dir="{tmp_path}", metric_interval_s=0.5, export_timeout_s=1, exit_timeout_s=2,
                    schedule_delay_s=0.2)
        metrics.get_meter("m").create_counter("orders").add(1)
        with trace.get_tracer("t").start_as_current_span("work"):
            logging.getLogger("app").warning("line")
        from sluice import _health
        deadline = time.monotonic() + 30  # a hang detector: the first failures come within a second
        while time.monotonic() < deadline and not (
                _health.counters["errors.metric_export"] and _health.counters["errors.span_export"]):
            time.sleep(0.05)
        sluice.shutdown()
    """, timeout_s=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    internal = [line for line in lines if line.startswith("sluice.internal:")]
    assert [line for line in lines if line not in internal] == ["app: line"], result.stderr
    said = {kind: [line for line in internal if f"cannot deliver {kind} to {dead}" in line]
            for kind in ("traces", "metrics")}
    assert all(len(lines) <= 1 for lines in said.values()), result.stderr
    # Under load one exporter may not have failed yet when the script stops waiting.
    assert any(said.values()), result.stderr
    assert all("is a receiver listening there?" in line for lines in said.values() for line in lines)


def test_audit_records_spill_when_the_receiver_is_down_and_are_replayed_later(tmp_path: Path) -> None:
    port = free_port()
    spill = tmp_path / "spill"
    down = run_script(f"""
        import sluice
        sluice.init(endpoint="http://127.0.0.1:{port}", runtime_metrics=False, spill_dir="{spill}",
                    exit_timeout_s=1)
        sluice.audit("invoice.delete", actor="bob", entity_type="invoice", entity_id="INV-1")
        sluice.get_logger("app").info("ordinary line")
    """)
    assert down.returncode == 0, down.stderr
    assert list(spill.glob("*.spill")), "audit record was not spilled"
    sink = start_sink(port)
    try:
        up = run_script(f"""
            import sluice
            sluice.init(endpoint="http://127.0.0.1:{port}", runtime_metrics=False, spill_dir="{spill}")
            sluice.get_logger("app").info("receiver is back")
            sluice.shutdown()
        """)
        assert up.returncode == 0, up.stderr
        bodies = [r["body"] for r in sink.log_records()]
        assert "receiver is back" in bodies
        assert any("invoice.delete" in str(b) for b in bodies), bodies
        assert "ordinary line" not in bodies
        assert not list(spill.glob("*.spill"))
    finally:
        sink.stop()


def test_second_init_warns_and_returns_the_same_handle(tmp_path: Path) -> None:
    result = run_script(f"""
        import warnings, sluice
        first = sluice.init(exporter="none", runtime_metrics=False, spill_dir="{tmp_path}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            second = sluice.init(service_name="other")
        assert second is first
        assert any("called again" in str(w.message) for w in caught), caught
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_init_raises_config_errors_before_installing_anything_and_arguments_beat_variables() -> None:
    """Unknown names and bad values are sluice's ConfigError (never OTel's ValueError or a TypeError),
    nothing is installed by a failed call, and a later good call still works."""
    result = run_script("""
        import sluice
        from opentelemetry import trace
        for kwargs in ({"sample_rate": 0.5}, {"max_queue_size": 10, "max_batch_size": 100},
                       {"export_timeout_s": -1}, {"max_queue_size": "many"}):
            try:
                sluice.init("svc", **kwargs)
            except sluice.ConfigError as exc:
                print(type(exc).__name__, exc)
        print("installed:", type(trace.get_tracer_provider()).__name__)
        handle = sluice.init(service_name="from-argument", exporter="none", max_queue_size=16, max_batch_size=16,
                             runtime_metrics=False, instrument=False)
        print("settings:", handle.settings.service_name, handle.settings.max_queue_size, handle.settings.sample_ratio)
    """, env={"SLUICE_SERVICE_NAME": "from-variable", "SLUICE_MAX_QUEUE_SIZE": "1024", "OTEL_TRACES_SAMPLER": "always_off"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ConfigError sluice.init: unknown option sample_rate=0.5; did you mean `sample_ratio`?",
        "ConfigError sluice.init: max_batch_size=100 is invalid; expected an integer > 0, at most max_queue_size "
        "(10, from max_queue_size)",
        "ConfigError sluice.init: export_timeout_s=-1 is invalid; expected a number of seconds > 0",
        "ConfigError sluice.init: max_queue_size='many' is invalid; expected an integer > 0",
        "installed: ProxyTracerProvider",
        "settings: from-argument 16 0.0",
    ]


def test_shutdown_before_init_and_twice_is_harmless() -> None:
    result = run_script("""
        import sluice
        assert sluice.shutdown() is True
        sluice.init(exporter="none", runtime_metrics=False)
        sluice.shutdown()
        sluice.shutdown()
        print("ok")
    """)
    assert result.returncode == 0, result.stderr


def test_environment_variables_configure_service_and_endpoint(sink: Sink, tmp_path: Path) -> None:
    result = run_script("""
        import logging, sluice
        sluice.init(runtime_metrics=False)
        logging.getLogger("x").warning("via env")
        sluice.shutdown()
    """, env={
        "OTEL_SERVICE_NAME": "from-otel", "SLUICE_SERVICE_NAME": "from-sluice",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_RESOURCE_ATTRIBUTES": "team=payments",
        "SLUICE_SPILL_DIR": str(tmp_path),
    })
    assert result.returncode == 0, result.stderr
    [record] = [r for r in sink.log_records() if r["body"] == "via env"]
    assert record["resource"]["service.name"] == "from-sluice"
    assert record["resource"]["team"] == "payments"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_http_protobuf_protocol_is_accepted(tmp_path: Path) -> None:
    """protocol="http/protobuf" builds HTTP exporters (no receiver needed to check the wiring)."""
    result = run_script(f"""
        import sluice
        h = sluice.init(protocol="http/protobuf", endpoint="http://127.0.0.1:{free_port()}",
                        runtime_metrics=False, spill_dir="{tmp_path}", exit_timeout_s=1)
        print(type(h.shipper.transport).__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "HttpTransport"


def test_head_sampling_ratio_zero_drops_spans_but_never_log_records(sink: Sink, tmp_path: Path) -> None:
    result = run_script(f"""
        import logging, sluice
        from opentelemetry import trace
        sluice.init(endpoint="{sink.endpoint}", runtime_metrics=False, spill_dir="{tmp_path}", sample_ratio=0)
        with trace.get_tracer("t").start_as_current_span("unsampled"):
            logging.getLogger("app").warning("kept")
            sluice.audit("x.y", actor="a", entity_type="t", entity_id=1)
        sluice.shutdown()
    """)
    assert result.returncode == 0, result.stderr
    assert sink.spans() == []
    bodies = [r["body"] for r in sink.log_records()]
    assert "kept" in bodies
    assert any("x.y" in str(b) for b in bodies)


def test_console_option_prints_spans_and_logs_for_development(tmp_path: Path) -> None:
    result = run_script(f"""
        import logging, sluice
        from opentelemetry import trace
        sluice.init(exporter="none", console=True, runtime_metrics=False, spill_dir="{tmp_path}")
        with trace.get_tracer("t").start_as_current_span("dev-span"):
            logging.getLogger("app").warning("dev line")
        sluice.shutdown()
    """)
    assert result.returncode == 0, result.stderr
    assert '"name": "dev-span"' in result.stdout
    assert '"body": "dev line"' in result.stdout


def test_force_flush_on_the_handle_delivers_without_shutdown(sink: Sink, tmp_path: Path) -> None:
    result = run_script(f"""
        import logging, sluice
        handle = sluice.init(endpoint="{sink.endpoint}", runtime_metrics=False, spill_dir="{tmp_path}")
        logging.getLogger("app").warning("flushed")
        print(handle.force_flush(5))
        import os; os._exit(0)   # no atexit: only the explicit flush can have delivered it
    """)
    assert result.stdout.strip() == "True", result.stderr
    assert [r["body"] for r in sink.log_records()] == ["flushed"]


def test_a_shared_http_json_protocol_variable_does_not_stop_the_app_and_logs_still_arrive(
    tmp_path: Path,
) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=http/json (set for a JavaScript SDK beside the app) made
    `sluice.init()` raise and the app die. Now one warning, and the records reach the real
    receiver's OTLP/HTTP door as protobuf."""
    receiver = ReceiverProcess(tmp_path).start()
    try:
        result = run_script(f"""
            import logging, sluice
            sluice.init(service_name="shared-env", runtime_metrics=False, spill_dir="{tmp_path / 'spill'}")
            logging.getLogger("app").warning("still running")
            sluice.shutdown()
            print("app finished")
        """, env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                  "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{receiver.http_endpoint}"})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "app finished"
        assert result.stderr.count("http/json") == 1, result.stderr
        assert receiver.stop(signal.SIGTERM) == 0
    finally:
        receiver.kill()
    assert [r["body"] for r in receiver.read("app")] == ["still running"]
