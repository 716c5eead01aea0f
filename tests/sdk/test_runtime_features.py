"""Runtime metrics, auto-instrumentation and the zero-code bootstrap."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sluice import _autoinstrument
from tests.sdk.otlp_sink import REPO, Sink, run_script, start_sink


def test_runtime_and_sdk_health_metrics_are_exported(tmp_path: Path) -> None:
    sink = start_sink()
    try:
        result = run_script(f"""
            import sluice
            sluice.init(endpoint="{sink.endpoint}", spill_dir="{tmp_path}", metric_interval_s=60)
            sluice.shutdown()
        """)
        assert result.returncode == 0, result.stderr
        names = sink.metric_names()
        assert "sluice.logs.queue_depth" in names
        assert "process.cpu.time" in names
        assert {"process.memory.usage", "process.thread.count"} <= names
    finally:
        sink.stop()


class _Good:
    is_instrumented_by_opentelemetry = False
    calls: ClassVar[list[str]] = []

    def instrument(self, **kwargs: Any) -> None:
        _Good.calls.append("good")


class _Bad:
    is_instrumented_by_opentelemetry = False

    def instrument(self, **kwargs: Any) -> None:
        raise RuntimeError("instrumentor exploded")


class _FakeEntryPoint:
    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self._target = target
        self.dist = None

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [_FakeEntryPoint("good", _Good), _FakeEntryPoint("bad", _Bad),
           _FakeEntryPoint("missing", ModuleNotFoundError("No module named 'flask'")),
           _FakeEntryPoint("denied", _Good)]

    def fake(group: str) -> list[EntryPoint]:
        assert group == "opentelemetry_instrumentor"
        return eps  # type: ignore[return-value]

    monkeypatch.setattr(_autoinstrument, "entry_points", fake)
    _Good.calls = []


@pytest.mark.usefixtures("fake_entry_points")
def test_instrumentors_are_enabled_a_failing_one_is_logged_not_raised_and_deny_list_wins() -> None:
    outcome = _autoinstrument.instrument_all(True, disabled=["denied"])
    assert outcome["good"] == "enabled"
    assert outcome["bad"].startswith("failed: RuntimeError")
    assert outcome["missing"].startswith("skipped")
    assert outcome["denied"] == "skipped: disabled"
    assert _Good.calls == ["good"]


@pytest.mark.usefixtures("fake_entry_points")
def test_allow_list_limits_instrumentation_and_reports_unknown_names() -> None:
    outcome = _autoinstrument.instrument_all(["good", "nosuch"])
    assert outcome == {"good": "enabled", "nosuch": "skipped: not installed"}


def test_installed_urllib_instrumentor_is_discovered_and_enabled(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.instrumentation.urllib")
    result = run_script(f"""
        import sluice
        from opentelemetry.instrumentation.urllib import URLLibInstrumentor
        sluice.init(exporter="none", runtime_metrics=False, spill_dir="{tmp_path}", instrument=["urllib"])
        print(URLLibInstrumentor().is_instrumented_by_opentelemetry)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_sitecustomize_bootstrap_starts_sluice_from_the_environment(tmp_path: Path) -> None:
    sink: Sink = start_sink()
    try:
        bootstrap = REPO / "sdk" / "sluice" / "_bootstrap"
        result = run_script("""
            import logging, sluice._runtime as r
            assert r.current() is not None
            logging.getLogger("app").warning("zero code")
        """, env={"PYTHONPATH": f"{bootstrap}:{REPO / 'sdk'}", "OTEL_SERVICE_NAME": "auto",
                  "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "SLUICE_SPILL_DIR": str(tmp_path),
                  "SLUICE_RUNTIME_METRICS": "false"})
        assert result.returncode == 0, result.stderr
        [record] = [r for r in sink.log_records() if r["body"] == "zero code"]
        assert record["resource"]["service.name"] == "auto"
    finally:
        sink.stop()


def test_bootstrap_with_a_bad_variable_names_it_and_still_runs_the_app() -> None:
    bootstrap = REPO / "sdk" / "sluice" / "_bootstrap"
    result = run_script("print('app ran')", env={"PYTHONPATH": f"{bootstrap}:{REPO / 'sdk'}",
                                                 "SLUICE_SAMPLE_RATIO": "often"})
    assert result.returncode == 0
    assert "app ran" in result.stdout
    assert "SLUICE_SAMPLE_RATIO" in result.stderr


def test_init_imports_no_framework_the_app_does_not_use_and_one_imported_later_is_instrumented(
    tmp_path: Path,
) -> None:
    """`init()` took 3.8 s, 3.4 s of it importing fastapi, django and flask for instrumentors of
    frameworks the app never used. Now an instrumentor waits for its framework's import, and one
    imported after `init()` is still instrumented before the app uses it."""
    pytest.importorskip("opentelemetry.instrumentation.flask")
    result = run_script(f"""
        import json, sys, sluice
        from sluice.testing import capture
        sluice.init(exporter="none", runtime_metrics=False, spill_dir="{tmp_path}")
        unused = sorted(m for m in ("flask", "django", "fastapi", "starlette", "werkzeug") if m in sys.modules)

        import flask
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        app = flask.Flask("late")

        @app.get("/orders/<int:order_id>")
        def order(order_id):
            return "ok"

        with capture() as tel:
            assert app.test_client().get("/orders/7").status_code == 200
        print(json.dumps({{"imported_by_init": unused,
                          "instrumented": FlaskInstrumentor().is_instrumented_by_opentelemetry,
                          "server_spans": [s.name for s in tel.spans if s.kind.name == "SERVER"],
                          "django_after": "django" in sys.modules}}))
    """)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out == {"imported_by_init": [], "instrumented": True, "server_spans": ["GET /orders/<int:order_id>"],
                   "django_after": False}


def test_a_framework_imported_before_init_is_instrumented_by_init(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.instrumentation.flask")
    result = run_script(f"""
        import flask, sluice
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
        sluice.init(exporter="none", runtime_metrics=False, spill_dir="{tmp_path}", instrument=["flask"])
        print(FlaskInstrumentor().is_instrumented_by_opentelemetry)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
