"""The receiver's Prometheus alert rules (`deploy/prometheus/rules/`), checked with real tools:
promtool checks and unit-tests them, every rule and every series its tests feed it must match
what a real receiver exports, and a real Prometheus scraping a real receiver fires the shipped
rules into a real Alertmanager started from the deploy stack's own config.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from sluice_collector.service.receiver import Receiver
from sluice_collector.testing import start_receiver
from tests.otlp_builders import log_record, logs_request
from tests.prometheus_process import (
    ALERTMANAGER,
    AMTOOL,
    PROMETHEUS,
    PROMTOOL,
    AlertmanagerProcess,
    PrometheusProcess,
    free_port,
    wait_for,
)
from tests.receiver_process import ReceiverProcess

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "rules" / "sluice.rules.yml"
RULE_TESTS = PROM_DIR / "tests" / "sluice.rules.test.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
# Labels Prometheus adds to every scraped series; `up` is Prometheus' own.
TARGET_LABELS = {"job", "instance"}

needs_promtool = pytest.mark.skipif(not Path(PROMTOOL).exists(), reason=f"{PROMTOOL} is not installed")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# -- promtool ------------------------------------------------------------------------------------
@needs_promtool
def test_promtool_check_rules_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The unit tests pin thresholds: the same tests over rules with one threshold changed fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    text = RULES.read_text()
    assert text.count("> 0.05") == 1
    (tmp_path / "rules" / RULES.name).write_text(text.replace("> 0.05", "> 0.03"))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    result = promtool("test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
    assert result.returncode != 0
    assert "alertname: SluiceRequestsRefused" in result.stdout + result.stderr


def test_every_rule_has_unit_tests_that_fire_it_and_that_do_not() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == ["../rules/sluice.rules.yml"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert len(names) == len(alert_rules()), "alert names must be unique"
    assert fired == names
    assert quiet == names


def test_rules_are_labelled_and_documented() -> None:
    docs = (ROOT / "docs" / "alerting.md").read_text()
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert f"`{rule['alert']}`" in docs, f"{rule['alert']} is not in docs/alerting.md"


# -- names: rules and test series against what a receiver exports ------------------------------
@pytest.fixture(scope="module")
def full_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """An in-process receiver with every metric-bearing part on: files, syslog, forward, auth,
    the query index.
    Its syslog and forward targets are closed ports: they cost retries, nothing else."""
    workdir = tmp_path_factory.mktemp("full-receiver")
    receiver = start_receiver({
        "files": {"directory": str(workdir / "logs")},
        "syslog": {"enabled": True, "target": f"tcp://127.0.0.1:{free_port()}"},
        "forward": {"targets": [{"name": "nowhere", "endpoint": f"http://127.0.0.1:{free_port()}"}]},
        "auth": {"tenants": {"acme": {"token": "acme-token-0123456789abcdef"}}},
        "query": {"api_keys": {"ops": {"key": "ops-key-0123456789abcdef", "role": "admin",
                                       "tenant": "acme"}}},
    })
    try:
        yield receiver
    finally:
        receiver.stop(5)


@pytest.fixture(scope="module")
def exported(full_receiver: Receiver) -> dict[str, set[str]]:
    """Every sample name on the receiver's /metrics with the label names it can carry.

    Names come from the HTTP exposition's TYPE lines. A labelled counter has no sample before
    its first event, so its label names come from the registry's collectors (private
    attributes of prometheus_client: a test may look, the receiver never does)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{full_receiver.status_port}/metrics",
                                timeout=5) as response:
        text = response.read().decode()
    names: dict[str, set[str]] = {}
    registry = full_receiver.telemetry.registry
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        family = family.removesuffix("_total") if kind == "counter" else family
        collector = registry._names_to_collectors[family + "_total" if kind == "counter" else family]
        labels = set(getattr(collector, "_labelnames", ()))
        if kind == "counter":
            names[family + "_total"] = labels
        elif kind == "histogram":
            names |= {family + "_bucket": labels | {"le"}, family + "_sum": labels,
                      family + "_count": labels}
        else:
            names[family] = labels
    return names


def expr_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\b(sluice_[a-z0-9_]+|up)\b(?!\s*\()", expr))


def expr_labels(expr: str, annotations: dict[str, str]) -> set[str]:
    """Label names a rule groups by, matches on, selects with or prints."""
    found: set[str] = set()
    for group in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        found |= {name.strip() for name in group.split(",") if name.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        found |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    for text in annotations.values():
        found |= set(re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", text))
    return found


def test_rules_use_only_metrics_and_labels_the_receiver_exports(exported: dict[str, set[str]]) -> None:
    assert {"sluice_requests_total", "sluice_forward_retried_requests_total",
            "sluice_syslog_connect_errors_total", "sluice_files_disk_used_percent"} <= set(exported)
    exported = {**exported, "up": set()}
    used: set[str] = set()
    for rule in alert_rules():
        metrics = expr_metrics(rule["expr"])
        assert metrics, rule["alert"]
        unknown = metrics - set(exported)
        assert not unknown, f"{rule['alert']}: {sorted(unknown)} are not on /metrics"
        allowed = TARGET_LABELS.union(*(exported[m] for m in metrics))
        labels = expr_labels(rule["expr"], rule["annotations"])
        assert labels <= allowed, f"{rule['alert']}: labels {sorted(labels - allowed)} do not exist"
        used |= metrics
    # What the rules watch: refusals, sinks, syslog, forward, disk, masking, intake, liveness,
    # the audit chain.
    for needed in ("sluice_requests_total", "sluice_records_rejected_total", "sluice_sink_errors_total",
                   "sluice_syslog_spool_bytes", "sluice_forward_spool_bytes",
                   "sluice_files_disk_used_percent", "sluice_masked_values_total",
                   "sluice_records_received_total", "sluice_audit_chain_intact", "up"):
        assert needed in used, needed


def test_rule_unit_tests_feed_series_shaped_like_the_receivers(exported: dict[str, set[str]]) -> None:
    """A unit test proves a rule only if its input looks like what Prometheus will scrape."""
    exported = {**exported, "up": set()}
    tests = yaml.safe_load(RULE_TESTS.read_text())
    seen = 0
    for case in tests["tests"]:
        for series in case["input_series"]:
            match = re.fullmatch(r"(\w+)\{(.*)\}", series["series"])
            assert match, series["series"]
            name, body = match.groups()
            labels = set(re.findall(r"(\w+)=\"", body))
            assert name in exported, name
            assert labels >= TARGET_LABELS, series["series"]
            assert labels <= exported[name] | TARGET_LABELS, series["series"]
            seen += 1
    assert seen >= 30


# -- Alertmanager config ---------------------------------------------------------------------------
@pytest.mark.skipif(not Path(AMTOOL).exists(), reason=f"{AMTOOL} is not installed")
def test_amtool_check_config_accepts_the_alertmanager_config() -> None:
    result = subprocess.run([AMTOOL, "check-config", str(ALERTMANAGER_CONFIG)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# -- a real Prometheus, a real receiver, a real Alertmanager -------------------------------------
def firing(prometheus: PrometheusProcess) -> dict[str, list[dict[str, str]]]:
    by_name: dict[str, list[dict[str, str]]] = {}
    for alert in prometheus.alerts():
        if alert["state"] == "firing":
            by_name.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
    return by_name


@pytest.mark.skipif(not (Path(PROMETHEUS).exists() and Path(ALERTMANAGER).exists()),
                    reason="prometheus and prometheus-alertmanager are not installed")
def test_real_prometheus_fires_the_shipped_rules_into_a_real_alertmanager(tmp_path: Path) -> None:
    """The shipped rules, word for word except `for:` (0s, so the test takes seconds, not
    minutes), evaluated every second by Prometheus over a real receiver that keeps getting logs
    and forwards them to a closed port: exactly the rules for those conditions fire — and reach
    Alertmanager, started from the deploy stack's config — and killing the receiver fires
    SluiceReceiverDown."""
    used = shutil.disk_usage(tmp_path)
    # A 1% guard is exceeded on any real file system; on a near-empty one use 100%, never passed.
    over_guard = 100 * used.used / used.total > 1.5
    (tmp_path / "receiver").mkdir()
    receiver = ReceiverProcess(tmp_path / "receiver", {
        "files": {"disk": {"max_used_percent": 1 if over_guard else 100}},
        "forward": {"targets": [{
            "name": "nowhere", "endpoint": f"http://127.0.0.1:{free_port()}", "signals": ["logs"],
            "backoff_initial_s": 0.2, "backoff_max_s": 1,
        }]},
    }).start()

    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))

    alertmanager = AlertmanagerProcess(tmp_path / "alertmanager", ALERTMANAGER_CONFIG)
    prometheus = PrometheusProcess(tmp_path / "prometheus", {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]},
        "scrape_configs": [{"job_name": "sluice", "static_configs": [
            {"targets": [receiver.status_url.removeprefix("http://")]}]}],
    })
    channel = grpc.insecure_channel(receiver.endpoint)
    logs = LogsServiceStub(channel)  # type: ignore[no-untyped-call]
    try:
        alertmanager.start()
        prometheus.start()
        expected = {"SluiceForwardTargetFailing"} | ({"SluiceDiskAboveGuard"} if over_guard else set())
        seen: list[dict[str, list[dict[str, str]]]] = [{}]

        def settled() -> dict[str, list[dict[str, str]]] | None:
            # Records keep arriving, so SluiceNoData (firing at the very first evaluation, before
            # a second sample of the counter exists) clears, while the forward target fails.
            logs.Export(logs_request(log_record("to nowhere")), timeout=10)
            seen[0] = firing(prometheus)
            return seen[0] if expected <= set(seen[0]) and "SluiceNoData" not in seen[0] else None

        now = wait_for(settled, f"{sorted(expected)} to fire", alive=prometheus.check_alive,
                       show=lambda: (sorted(seen[0]), prometheus.log()[-2000:]))
        assert set(now) == expected
        assert [(a["target"], a["signal"], a["severity"]) for a in now["SluiceForwardTargetFailing"]] == [
            ("nowhere", "logs", "warning")]

        def in_alertmanager() -> list[dict[str, Any]] | None:
            hits = [a for a in alertmanager.alerts()
                    if a["labels"].get("alertname") == "SluiceForwardTargetFailing"
                    and a["labels"].get("target") == "nowhere"]
            return hits or None

        delivered = wait_for(in_alertmanager, "the alert in Alertmanager", alive=alertmanager.check_alive)
        assert delivered[0]["status"]["state"] == "active"
        assert delivered[0]["annotations"]["summary"].startswith("sluice 127.0.0.1:")

        receiver.kill()
        down = wait_for(lambda: firing(prometheus).get("SluiceReceiverDown"),
                        "SluiceReceiverDown after the receiver was killed", alive=prometheus.check_alive)
        assert [(a["job"], a["severity"]) for a in down] == [("sluice", "critical")]
    finally:
        channel.close()
        prometheus.stop()
        alertmanager.stop()
        receiver.kill()
