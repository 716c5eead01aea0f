"""`sluice.init(scrub=True)`: secrets are masked in the app before anything leaves it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice._scrub import LogScrubber
from tests.sdk.otlp_sink import Sink, run_script

PW = "hunter2" + "Xyz!"
CARD = "4111 1111 " + "1111 1111"



def test_scrub_masks_bodies_and_attributes_before_they_leave_the_process(sink: Sink, tmp_path: Path) -> None:
    result = run_script(f"""
        import logging, sluice
        sluice.init(service_name="scrub", endpoint="{sink.endpoint}", runtime_metrics=False,
                    spill_dir="{tmp_path}", scrub=True)
        log = logging.getLogger("app")
        log.warning("login with password={PW}", extra={{"card": "{CARD}", "api_key": "k-123", "n": "plain"}})
        log.warning("nothing to hide here")
        sluice.shutdown()
    """)
    assert result.returncode == 0, result.stderr
    records = {r["body"].split(" ")[0]: r for r in sink.log_records() if r["scope"] == "app"}
    login = records["login"]
    assert PW not in login["body"]
    assert "[REDACTED:" in login["body"]
    assert CARD not in str(login["attributes"])
    assert login["attributes"]["api_key"] != "k-123"  # a sensitive key: masked whole
    assert login["attributes"]["n"] == "plain"
    assert login["attributes"]["sluice.masked"] == 3
    assert records["nothing"]["body"] == "nothing to hide here"
    assert "sluice.masked" not in records["nothing"]["attributes"]


def test_without_scrub_the_app_ships_what_it_logged(sink: Sink, tmp_path: Path) -> None:
    result = run_script(f"""
        import logging, sluice
        sluice.init(service_name="scrub", endpoint="{sink.endpoint}", runtime_metrics=False,
                    spill_dir="{tmp_path}")
        logging.getLogger("app").warning("login with password={PW}")
        sluice.shutdown()
    """)
    assert result.returncode == 0, result.stderr
    assert any(PW in r["body"] for r in sink.log_records())


def test_scrubber_leaves_unchanged_batches_identical() -> None:
    item = (0.0, 30, "WARNING", "app", "just text", "f.py", "f", 1, 0, 0, 0, {"k": "v"}, None)
    batch = [item]
    assert LogScrubber()(batch) is batch


def test_scrubber_keeps_the_closing_bracket_after_a_masked_value() -> None:
    item = (0.0, 30, "WARNING", "app", f"retry(password={PW})", "f.py", "f", 1, 0, 0, 0,
            {"cfg": f"{{token={PW}}}"}, None)
    (out,) = LogScrubber()([item])
    assert out[4] == "retry(password=[REDACTED:kv_secret])"
    assert out[11]["cfg"] == "{token=[REDACTED:kv_secret]}"


def test_trace_url_prints_a_link_when_a_root_span_ends(sink: Sink, tmp_path: Path) -> None:
    result = run_script(f"""
        import sluice
        from opentelemetry import trace
        sluice.init(service_name="links", endpoint="{sink.endpoint}", runtime_metrics=False,
                    spill_dir="{tmp_path}", trace_url="http://localhost:16686/trace/{{trace_id}}")
        with trace.get_tracer("t").start_as_current_span("checkout") as span:
            with trace.get_tracer("t").start_as_current_span("child"):
                pass
            print(format(span.get_span_context().trace_id, "032x"))
        sluice.shutdown()
    """)
    assert result.returncode == 0, result.stderr
    trace_id = result.stdout.strip()
    links = [line for line in result.stderr.splitlines() if line.startswith("sluice: trace ")]
    assert links == [f"sluice: trace 'checkout': http://localhost:16686/trace/{trace_id}"]


def test_a_trace_url_without_the_placeholder_is_refused_naming_the_option() -> None:
    import sluice
    from sluice._config import resolve

    with pytest.raises(sluice.ConfigError) as info:
        resolve({"trace_url": "http://jaeger/trace/"}, env={})
    assert "trace_url" in str(info.value)
