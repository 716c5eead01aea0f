"""No credential is ever shown: not on /healthz (unauthenticated), in /metrics labels, in the
receiver's log, in config errors, in `check-config` output or in CLI errors.

Two ways a credential reaches a shown value without the config calling it a secret: a password
inside a URL (a forward endpoint, a syslog target), and a `${VAR}` secret put under a key that
is not a secret key. Each output is checked with a real receiver (or the real CLI) and a real
socket; the secrets are unique strings searched for verbatim.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sluice_collector.errors import ConfigError
from sluice_collector.redact import Redactor, redact_text, redact_url
from sluice_collector.service.config import parse_config
from tests.receiver_process import ReceiverProcess

FORWARD_PASSWORD = "Fwd-Hunter2-p4ss"
SYSLOG_PASSWORD = "Sys-Hunter2-p4ss"
ENV_SECRET = "env-secret-Hunter2-0123456789abcdef"


def sluice(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sluice_collector", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_redact_url_keeps_the_user_and_hides_the_password() -> None:
    assert redact_url("https://bob:s3cret@tempo:4318/otlp") == "https://bob:xxxxx@tempo:4318/otlp"
    assert redact_url("http://tempo:4318") == "http://tempo:4318"
    # A password with characters a URL should have escaped is hidden whole.
    assert redact_url("tcp://u:p@ss/w#rd@host:601") == "tcp://u:xxxxx@host:601"
    assert redact_text("lost 'tls://a:b@h:1' (reset)") == "lost 'tls://a:xxxxx@h:1' (reset)"


def test_redactor_names_the_variable_instead_of_its_value() -> None:
    redact = Redactor([("TOKEN", ENV_SECRET), ("N", "1")])
    assert redact(f"got {ENV_SECRET!r}; expected 1 to 10") == "got '${TOKEN}'; expected 1 to 10"


def test_healthz_metrics_and_log_never_show_a_url_password(tmp_path: Path) -> None:
    """A forward endpoint and a syslog target with passwords, neither reachable: /healthz shows
    both (redacted), /metrics labels the syslog target, the log reports the failures — and no
    output carries either password."""
    receiver = ReceiverProcess(tmp_path, {
        "forward": {"targets": [{"name": "tempo", "endpoint":
                                 f"http://sluice:{FORWARD_PASSWORD}@127.0.0.1:9",
                                 "protocol": "http/protobuf", "signals": ["logs"]}]},
        "syslog": {"enabled": True, "target": [f"tcp://ops:{SYSLOG_PASSWORD}@127.0.0.1:9"]},
    }, extra_args=["--log-level", "DEBUG"]).start()
    try:
        base = receiver.status_url
        deadline = time.monotonic() + 20
        metrics = ""
        while "sluice_syslog_connect_errors_total{" not in metrics:
            assert time.monotonic() < deadline, "the syslog sink never tried its target"
            time.sleep(0.1)
            metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        try:
            health_text = urllib.request.urlopen(f"{base}/healthz", timeout=5).read().decode()
        except urllib.error.HTTPError as exc:  # 503: a sink is down, which is the point here
            health_text = exc.read().decode()
        health = json.loads(health_text)
    finally:
        receiver.stop()
    assert health["sinks"]["forward"]["targets"]["tempo"]["endpoint"] == \
        "http://sluice:xxxxx@127.0.0.1:9"
    assert "ops:xxxxx@127.0.0.1:9" in metrics
    assert "syslog" in receiver.stderr
    assert "127.0.0.1:9" in receiver.stderr
    for output in (health_text, metrics, receiver.stderr):
        assert FORWARD_PASSWORD not in output
        assert SYSLOG_PASSWORD not in output


def test_a_config_error_never_echoes_a_value_from_the_environment() -> None:
    long_secret = "L" * 90 + ENV_SECRET  # longer than a message quotes: cut, not recognisable
    text = (
        "telemetry: {listen: '${LEAK}'}\n"
        "files: {directory: ['${LONG}']}\n"
        "forward: {targets: [{name: t, endpoint: 'ftp://u:" + FORWARD_PASSWORD + "@h:1'}]}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={"LEAK": ENV_SECRET, "LONG": long_secret})
    message = str(info.value)
    assert "telemetry.listen: got '${LEAK}'" in message
    assert "files.directory" in message
    assert "forward.targets[0].endpoint" in message
    assert ENV_SECRET not in message
    assert long_secret[:40] not in message
    assert FORWARD_PASSWORD not in message


def test_check_config_output_never_shows_a_credential(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers: {otlp: {protocols: {grpc: {endpoint: '${LEAK}'}}}}\n")
    result = sluice("receiver", "check-config", str(bad), env={"LEAK": ENV_SECRET})
    assert result.returncode == 3
    assert "${LEAK}" in result.stderr
    assert ENV_SECRET not in result.stdout + result.stderr

    good = tmp_path / "good.yaml"
    good.write_text(
        "forward: {targets: [{name: tempo, endpoint: 'http://u:${PW}@tempo:4317'}]}\n"
        "syslog: {enabled: true, target: ['tls://ops:" + SYSLOG_PASSWORD + "@syslog:6514']}\n"
    )
    result = sluice("receiver", "check-config", str(good), env={"PW": FORWARD_PASSWORD})
    assert result.returncode == 0, result.stderr
    assert "forward tempo: http://u:xxxxx@tempo:4317" in result.stdout
    assert "tls://ops:xxxxx@syslog:6514" in result.stdout
    for secret in (FORWARD_PASSWORD, SYSLOG_PASSWORD):
        assert secret not in result.stdout + result.stderr


def test_cli_errors_never_show_the_api_key_or_a_url_password(tmp_path: Path) -> None:
    result = sluice("logs", "query", "--endpoint", f"dns://u:{FORWARD_PASSWORD}@127.0.0.1:9/x:1",
                    "--api-key", ENV_SECRET)
    assert result.returncode != 0
    assert result.stderr.startswith("sluice logs:")
    assert ENV_SECRET not in result.stdout + result.stderr
    assert FORWARD_PASSWORD not in result.stdout + result.stderr
