"""Config loading: typed defaults, every problem reported at once with key, value and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sluice_collector.errors import ConfigError
from sluice_collector.service.config import load_config, parse_config


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return [str(p) for p in info.value.problems]


def test_embedded_default_matches_the_documented_contract() -> None:
    config = load_config(None)
    assert config.receivers.grpc.endpoint == "127.0.0.1:4317"
    assert config.receivers.http.endpoint == "127.0.0.1:4318"
    assert config.files.directory == Path("logs")
    assert config.masking.enabled is True
    assert config.syslog.enabled is False
    assert config.ingest.max_request_bytes == 64 * 1024 * 1024
    retention = {name: c.retention_days for name, c in config.files.categories.items()}
    assert retention["app"] == 30
    assert retention["error"] == 30
    assert retention["access"] == 90
    assert retention["security"] == 365
    assert retention["audit"] is None  # forever


def test_audit_retention_must_be_a_number_or_forever() -> None:
    assert problems_of("categories:\n  audit:\n    retention_days: ten\n") == [
        "categories.audit.retention_days: got 'ten'; expected a whole number of days ≥ 1, "
        'or "forever"'
    ]


def test_forever_and_numbers_are_accepted_for_retention() -> None:
    config = parse_config("categories:\n  audit: {retention_days: 400}\n  app: {retention_days: forever}\n")
    assert config.files.categories["audit"].retention_days == 400
    assert config.files.categories["app"].retention_days is None


def test_all_problems_are_reported_together() -> None:
    found = problems_of(
        "receivers: {otlp: {protocols: {grpc: {endpoint: nowhere, threads: 0}}}}\n"
        "files:\n  format: xml\n  rotation: {interval: weekly}\n"
    )
    assert found == [
        "receivers.otlp.protocols.grpc.endpoint: got 'nowhere'; expected HOST:PORT such as "
        "127.0.0.1:4317 or [::]:4317 (port 0-65535)",
        "receivers.otlp.protocols.grpc.threads: got 0; expected a whole number from 1 to 1024",
        "files.format: got 'xml'; expected one of: json, text",
        "files.rotation.interval: got 'weekly'; expected one of: none, hourly, daily",
    ]


def test_unknown_keys_are_errors_with_a_did_you_mean_hint() -> None:
    found = problems_of("files:\n  directroy: /tmp/x\n")
    assert len(found) == 1
    assert found[0].startswith("files.directroy: unknown key; did you mean 'directory'?")


def test_unknown_top_level_key_is_reported() -> None:
    found = problems_of("reciever: {}\n")
    assert found[0].startswith("reciever: unknown key; did you mean 'receivers'?")


def test_environment_variables_are_substituted_with_defaults() -> None:
    config = parse_config(
        "receivers: {otlp: {protocols: {grpc: {endpoint: '${HOST:-127.0.0.1}:${PORT}'}}}}\n"
        "files: {directory: '${LOGS}'}\n",
        env={"PORT": "5555", "LOGS": "/var/log/sluice"},
    )
    assert config.receivers.grpc.endpoint == "127.0.0.1:5555"
    assert config.receivers.http.endpoint == ""  # only the listed protocols run
    assert config.files.directory == Path("/var/log/sluice")


def test_missing_environment_variable_names_the_key() -> None:
    assert problems_of("files: {directory: '${NOPE}'}\n") == [
        "files.directory: environment variable NOPE is not set; set it or write ${NOPE:-default}",
        "files.directory: must not be empty",
    ]


def test_match_rules_are_validated() -> None:
    found = problems_of(
        "categories:\n  payments:\n    match:\n      - {severity_at_least: LOUD}\n"
        "      - {equals: x}\n      - {attribute: a, matches: '(unclosed'}\n      - {}\n"
    )
    assert found[0].startswith("categories.payments.match[0].severity_at_least: got 'LOUD'")
    assert found[1] == (
        "categories.payments.match[1].attribute: equals/matches need the attribute they test: "
        "add attribute: KEY"
    )
    assert found[2].startswith(
        "categories.payments.match[2].matches: got '(unclosed'; not a valid regular expression"
    )
    assert found[3].startswith("categories.payments.match[3]: an empty rule matches nothing")


def test_user_categories_come_before_builtin_ones_in_rule_order() -> None:
    config = parse_config("categories:\n  payments:\n    match: [{attribute: payment.id}]\n")
    assert config.routing.names[0] == "payments"
    assert "access" in config.routing.names
    assert config.routing.categories[1].builtin


def test_path_templates_cannot_leave_the_directory() -> None:
    found = problems_of(
        "categories:\n  a: {path: ../x.log}\n  b: {path: /etc/passwd}\n  c: {path: 'x/{}.log'}\n"
    )
    assert found == [
        "categories.a.path: got '../x.log'; '..' is not allowed: paths stay under files.directory",
        "categories.b.path: got '/etc/passwd'; expected a path relative to files.directory",
        "categories.c.path: got 'x/{}.log'; empty {} placeholder; name a field such as {category}",
    ]


def test_invalid_category_names_are_refused() -> None:
    found = problems_of("categories:\n  Bad Name: {}\n")
    assert found[0].startswith("categories.Bad Name: category names are lower-case")


def test_sizes_and_durations_accept_units() -> None:
    config = parse_config(
        "max_request_bytes: 8MiB\nshutdown_timeout_s: 2m\nfiles: {rotation: {max_bytes: 10 MB}}\n"
    )
    assert config.ingest.max_request_bytes == 8 * 1024 * 1024
    assert config.shutdown_timeout_s == 120
    assert config.files.rotation.max_bytes == 10_000_000


def test_invalid_yaml_names_the_line() -> None:
    found = problems_of("receivers: [unclosed\n")
    assert found[0].startswith("not valid YAML at line 2")


def test_tls_files_must_exist(tmp_path: Path) -> None:
    found = problems_of(
        f"receivers: {{otlp: {{protocols: {{grpc: {{tls: {{cert_file: {tmp_path}/none.pem}}}}}}}}}}\n")
    assert found == [
        f"receivers.otlp.protocols.grpc.tls.cert_file: got '{tmp_path}/none.pem'; no such file",
        "receivers.otlp.protocols.grpc.tls.key_file: is required when tls is set: a PEM file path",
    ]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice_collector", *args], capture_output=True, text=True, timeout=60
    )


def test_check_config_exits_non_zero_and_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories:\n  audit:\n    retention_days: lots\n")
    result = run_cli("receiver", "check-config", str(bad))
    assert result.returncode == 3
    assert "categories.audit.retention_days: got 'lots'" in result.stderr
    assert '"forever"' in result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:4317'}}}}\n"
                    "files: {directory: ./x}\n")
    result = run_cli("receiver", "check-config", str(good))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_takes_the_file_as_receiver_run_does(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories:\n  audit:\n    retention_days: lots\n")
    for flag in ("-c", "--config"):
        result = run_cli("receiver", "check-config", flag, str(bad))
        assert result.returncode == 3
        assert "categories.audit.retention_days: got 'lots'" in result.stderr
    nothing = run_cli("receiver", "check-config")
    assert nothing.returncode == 2
    assert "check-config: which file? give FILE (or --config FILE)" in nothing.stderr


def test_check_config_on_a_missing_file_says_so(tmp_path: Path) -> None:
    result = run_cli("receiver", "check-config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 3
    assert "cannot read config file: No such file or directory" in result.stderr


def test_trace_url_must_be_a_url_with_the_trace_id_placeholder() -> None:
    assert problems_of("files: {trace_url: 'http://jaeger/trace/'}\n") == [
        "files.trace_url: got 'http://jaeger/trace/'; expected an http(s) URL containing {trace_id}, "
        "e.g. http://localhost:16686/trace/{trace_id}"
    ]
    config = parse_config("files: {trace_url: 'http://localhost:16686/trace/{trace_id}'}\n")
    assert config.files.trace_url.endswith("{trace_id}")
