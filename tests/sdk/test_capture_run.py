"""sluice._capture.run: the child's environment, the run's settings and resource, exit status."""

from __future__ import annotations

import os
import signal

import pytest

from sluice._capture.channel import ENV_FD
from sluice._capture.run import (
    RunOptions,
    _resource,
    _status,
    child_environment,
    not_instrumented_message,
    parse_level,
    settings_for,
)
from sluice.errors import ConfigError


def test_the_child_gets_the_bootstrap_and_the_standard_variables_so_any_otel_sdk_agrees() -> None:
    options = RunOptions(["node", "server.js"], service_name="mcp-github", endpoint="http://r:4317",
                         resource_attributes={"user.id": "u-7", "note": "a,b=c"})
    env = child_environment({"PATH": "/bin", "OTEL_RESOURCE_ATTRIBUTES": "team=x", ENV_FD: "99"}, options, 7)
    assert env["PYTHONPATH"].endswith(os.path.join("sluice", "_bootstrap"))
    assert env["OTEL_SERVICE_NAME"] == "mcp-github"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://r:4317"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "team=x,user.id=u-7,note=a%2Cb%3Dc"
    assert env[ENV_FD] == "7"
    assert "SLUICE_SERVICE_NAME" not in env


def test_sluice_variables_already_set_are_overridden_too_or_they_would_win_in_the_child() -> None:
    options = RunOptions(["python", "app.py"], service_name="new", resource_attributes={"user.id": "u-7"})
    env = child_environment({"SLUICE_SERVICE_NAME": "old", "SLUICE_RESOURCE_ATTRIBUTES": "a=1"}, options, None)
    assert env["SLUICE_SERVICE_NAME"] == "new"
    assert env["SLUICE_RESOURCE_ATTRIBUTES"] == "a=1,user.id=u-7"
    assert ENV_FD not in env


def test_without_instrumentation_the_child_gets_no_bootstrap() -> None:
    env = child_environment({"PYTHONPATH": "/mine"}, RunOptions(["x"], instrument=False), None)
    assert env["PYTHONPATH"] == "/mine"


def test_command_line_attributes_add_to_the_variables_and_bad_variables_fail_before_anything_runs() -> None:
    settings = settings_for("svc", None, {"user.id": "u-7"}, env={"OTEL_RESOURCE_ATTRIBUTES": "team=x,user.id=u-1"})
    assert dict(settings.resource_attributes) == {"team": "x", "user.id": "u-7"}
    assert settings.service_name == "svc"
    with pytest.raises(ConfigError, match="SLUICE_EXIT_TIMEOUT_S"):
        settings_for(None, None, {}, env={"SLUICE_EXIT_TIMEOUT_S": "soon"})


def test_the_process_facts_of_the_resource_cannot_be_overridden() -> None:
    settings = settings_for("svc", None, {"process.pid": "1", "user.id": "u-7"}, env={})
    resource = _resource(settings, ["node", "server.js"], "/usr/bin/node", 4242)
    assert resource["process.pid"] == 4242
    assert resource["process.command_args"] == ["node", "server.js"]
    assert resource["process.executable.name"] == "node"
    assert resource["process.executable.path"] == "/usr/bin/node"
    assert resource["user.id"] == "u-7"
    assert resource["service.name"] == "svc"


def test_levels_by_name_and_exit_statuses() -> None:
    assert parse_level("WARN") == parse_level("warning") == 30
    with pytest.raises(ValueError, match="expected one of trace, debug"):
        parse_level("loud")
    assert _status(3 << 8) == (3, None)
    assert _status(signal.SIGTERM) == (128 + signal.SIGTERM, signal.SIGTERM)


def test_an_interpreter_without_sluice_is_told_the_real_install_command_for_itself() -> None:
    """A new user pasted `<that python> -m pip install sluice`: a placeholder, and PyPI's `sluice`
    is an unrelated project. The command names the child's interpreter and `sluice-otel`."""
    reason = ("/opt/other env/bin/python3 (Python 3.12.3) cannot import sluice: "
              "No module named 'sluice'")
    message = not_instrumented_message(reason)
    assert "('/opt/other env/bin/python3' -m pip install sluice-otel)" in message
    assert "<that python>" not in message
    assert "pip install sluice)" not in message


def test_secret_flags_of_the_command_do_not_reach_the_resource() -> None:
    settings = settings_for("svc", None, {}, env={})
    resource = _resource(settings, ["prog", "--password", "hunter3", "--token=abc"], "/usr/bin/prog", 42)
    assert resource["process.command_args"] == [
        "prog", "--password", "[REDACTED:kv_secret]", "--token=[REDACTED:kv_secret]"]


def test_with_scrub_on_the_masking_engine_also_runs_over_the_command() -> None:
    settings = settings_for("svc", None, {}, env={"SLUICE_SCRUB": "true"})
    resource = _resource(settings, ["psql", "postgres://app:s3cr3tpw@db/x"], None, 42)
    assert resource["process.command_args"] == ["psql", "postgres://app:[REDACTED:url_credentials]@db/x"]
