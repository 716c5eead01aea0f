"""The deploy stack (`deploy/`, `otel-collector.yaml`) checked without Docker: every file parses,
every name, port and path points at something that exists, the receiver config loads, the
dashboard asks only for metrics that really exist — and a real Prometheus scrapes a real receiver.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from sluice_collector.config import load_config
from tests.otlp_builders import log_record, logs_request
from tests.receiver_process import ReceiverProcess

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
# Ports each service's image listens on inside the network (not configured by our files).
IMAGE_PORTS = {"jaeger": {4317, 4318, 16686}, "prometheus": {9090}, "grafana": {3000},
               "alertmanager": {9093}}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DEPLOY / "docker-compose.yml")
    return data


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(ROOT / "otel-collector.yaml")
    return data


def host_port(endpoint: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    assert parts.hostname is not None, endpoint
    assert parts.port is not None, endpoint
    return parts.hostname, parts.port


def container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}


def collector_ports(collector: dict[str, Any]) -> set[int]:
    """Every port the collector config listens on."""
    ports = set()
    for receiver in collector["receivers"].values():
        for protocol in receiver["protocols"].values():
            ports.add(host_port(protocol["endpoint"])[1])
    ports.add(host_port(collector["exporters"]["prometheus"]["endpoint"])[1])
    return ports


def listening_ports(compose: dict[str, Any], collector: dict[str, Any]) -> dict[str, set[int]]:
    """What each compose service listens on inside the network, from its own config."""
    sluice = load_config(DEPLOY / "sluice.yaml")
    return {
        "sluice": {host_port(sluice.listen)[1], host_port(sluice.telemetry.listen)[1]},
        "otel-collector": collector_ports(collector),
        **IMAGE_PORTS,
    }


def test_every_deploy_file_parses() -> None:
    files = [*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml"), ROOT / "otel-collector.yaml"]
    assert len(files) >= 6
    for path in files:
        assert isinstance(load_yaml(path), dict), path
    for path in DEPLOY.rglob("*.json"):
        assert isinstance(json.loads(path.read_text()), dict), path


def test_compose_mounts_and_build_inputs_exist(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"sluice", "otel-collector", "jaeger", "prometheus", "grafana",
                                        "alertmanager"}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).resolve().exists(), f"{name}: {source}"
        for dependency in service.get("depends_on", []):
            assert dependency in compose["services"]
    build = compose["services"]["sluice"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    dockerfile = (context / build["dockerfile"]).read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (context / source).exists(), line
    assert "FROM python:3.11-slim" in dockerfile
    assert 'CMD ["sluice", "receiver", "run", "--config", "/etc/sluice/sluice.yaml"]' in dockerfile
    exposed = {int(p) for line in dockerfile.splitlines() if line.startswith("EXPOSE")
               for p in line.split()[1:]}
    assert exposed == {4317, 8888}
    mounted = [v for v in compose["services"]["sluice"]["volumes"] if v.startswith("./sluice.yaml")]
    assert mounted == ["./sluice.yaml:/etc/sluice/sluice.yaml:ro"]


def test_sluice_config_loads_and_its_ports_and_targets_match_the_stack(
    compose: dict[str, Any], collector: dict[str, Any],
) -> None:
    config = load_config(DEPLOY / "sluice.yaml")
    assert config.listen == "0.0.0.0:4317"
    assert config.telemetry.listen == "0.0.0.0:8888"
    assert container_ports(compose["services"]["sluice"]) == {4317, 8888}
    ports = listening_ports(compose, collector)
    by_signal: dict[str, list[str]] = {}
    for target in config.forward.targets:
        host, port = host_port(target.endpoint)
        assert host in compose["services"], target.endpoint
        assert port in ports[host], target.endpoint
        for signal in target.signals:
            by_signal.setdefault(signal.value, []).append(host)
    assert by_signal == {"traces": ["jaeger"], "logs": ["otel-collector"], "metrics": ["otel-collector"]}


def test_collector_pipelines_reference_defined_components_and_never_loop(
    compose: dict[str, Any], collector: dict[str, Any],
) -> None:
    """What apps send goes to sluice only; what sluice forwards back comes in on another receiver
    and goes to backends only — so nothing circles between the two."""
    pipelines = collector["service"]["pipelines"]
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        assert name.split("/")[0] in ("logs", "traces", "metrics")
        assert pipeline["processors"][0] == "memory_limiter", name
        for kind, seen in used.items():
            for component in pipeline[kind]:
                assert component in collector[kind], f"{name}: {component}"
                seen.add(component)
    for kind, names in used.items():
        assert names == set(collector[kind]), kind
    ports = listening_ports(compose, collector)
    for exporter in ("otlp/sluice", "otlp/jaeger"):
        host, port = host_port(collector["exporters"][exporter]["endpoint"])
        assert port in ports[host], exporter
    assert collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    assert container_ports(compose["services"]["otel-collector"]) == {4317, 4318, 8889}

    sluice_port = {host_port(t.endpoint)[1] for t in load_config(DEPLOY / "sluice.yaml").forward.targets
                   if host_port(t.endpoint)[0] == "otel-collector"}
    from_sluice = {name for name, r in collector["receivers"].items()
                   if any(host_port(p["endpoint"])[1] in sluice_port for p in r["protocols"].values())}
    assert from_sluice == {"otlp/masked"}
    for name, pipeline in pipelines.items():
        if set(pipeline["receivers"]) & from_sluice:
            assert "otlp/sluice" not in pipeline["exporters"], name
    text = (ROOT / "otel-collector.yaml").read_text()
    for needle in ("# loadbalancing:", "routing_key: traceID", "hostnames:"):
        assert needle in text


def test_prometheus_scrapes_services_on_ports_they_listen_on(
    compose: dict[str, Any], collector: dict[str, Any],
) -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    ports = listening_ports(compose, collector)
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"sluice:8888", "otel-collector:8889"}
    alertmanagers = {t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"]
                     for t in sc["targets"]}
    assert alertmanagers == {"alertmanager:9093"}
    for target in targets | alertmanagers:
        host, port = host_port(target)
        assert port in ports[host], target
    # The rules are mounted beside the config, so its relative rule_files path means the same
    # file in the container as here.
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["services"]["prometheus"]["volumes"])
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./prometheus/rules"] == "/etc/prometheus/rules"
    assert config["rule_files"] == ["rules/*.yml"]
    if Path(PROMTOOL).exists():
        result = subprocess.run([PROMTOOL, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 1 rule files found" in result.stdout


def test_grafana_provisioning_points_at_services_and_mounted_dashboards(
    compose: dict[str, Any], collector: dict[str, Any],
) -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = load_yaml(provisioning / "datasources" / "datasources.yaml")["datasources"]
    ports = listening_ports(compose, collector)
    assert {s["type"] for s in sources} == {"prometheus", "jaeger"}
    for source in sources:
        host, port = host_port(source["url"])
        assert port in ports[host], source["url"]
    providers = load_yaml(provisioning / "dashboards" / "dashboards.yaml")["providers"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["services"]["grafana"]["volumes"])
    for provider in providers:
        source = next(src for src, dst in mounts.items() if dst == provider["options"]["path"])
        assert list((DEPLOY / source).glob("*.json")) == [DEPLOY / "grafana/dashboards/sluice.json"]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sluice.json").read_text())
    uids = {s["uid"] for s in sources}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids


# -- metric names: the dashboard against what really exists --------------------------------------
def otel_to_prometheus(name: str, unit: str, kind: str) -> set[str]:
    """The collector prometheus exporter's naming (add_metric_suffixes on): dots to
    underscores, unit suffix (`s` → `_seconds`, `{...}` units dropped), `_total` on counters."""
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    units = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}
    suffix = "" if unit.startswith("{") else units.get(unit, unit)
    if suffix and not base.endswith(suffix):
        base = f"{base}_{suffix}"
    if kind == "histogram":
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return {f"{base}_total"} if kind == "counter" else {base}


def sdk_metric_names() -> set[str]:
    source = (ROOT / "sdk" / "sluice" / "middleware.py").read_text()
    found = set()
    for kind, name, unit in re.findall(
        r'create_(histogram|counter|up_down_counter|gauge)\(\s*"([^"]+)",\s*unit="([^"]*)"', source
    ):
        found |= otel_to_prometheus(name, unit, kind)
    return found


def exposition_names(text: str) -> set[str]:
    """Sample names a Prometheus text exposition can carry, from its TYPE lines."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                    "gauge": [""], "summary": ["_sum", "_count", ""]}.get(kind, [""])
        names |= {name.removesuffix("_total") + s if kind == "counter" else name + s for s in suffixes}
    return names


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    """A real receiver with a forward target (so the forward metrics exist); nothing listens
    on the target, which costs nothing but retries."""
    workdir = tmp_path_factory.mktemp("receiver")
    proc = ReceiverProcess(workdir, {"forward": {"targets": [
        {"name": "nowhere", "endpoint": f"http://127.0.0.1:{free_port()}", "backoff_initial_s": 1,
         "backoff_max_s": 5},
    ]}}).start()
    try:
        yield proc
    finally:
        proc.kill()


def test_dashboard_queries_only_metrics_sluice_and_the_sdk_export(receiver: ReceiverProcess) -> None:
    with urllib.request.urlopen(f"{receiver.status_url}/metrics", timeout=5) as response:
        exported = exposition_names(response.read().decode())
    sdk = sdk_metric_names()
    assert {"http_server_request_duration_seconds_bucket", "http_server_requests_total"} <= sdk
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sluice.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # Label names live in `by (...)` and `{...}`: strip those, what is left are metric names.
    bare = [re.sub(r"\{[^}]*\}|\bby \([^)]*\)", " ", e) for e in exprs]
    used = {m for e in bare for m in re.findall(r"\b((?:sluice|http)_[a-z0-9_]+)\b", e)}
    assert {"sluice_records_written_total", "sluice_masked_values_total",
            "http_server_request_duration_seconds_bucket"} <= used
    unknown = sorted(used - exported - sdk)
    assert unknown == []
    # The http_* label names are the middleware's attributes, dots turned into underscores.
    middleware = (ROOT / "sdk" / "sluice" / "middleware.py").read_text()
    labels = {m for e in exprs for m in re.findall(r"\b(http_[a-z_]+)\b\s*(?:=|,|\))", e)}
    assert labels == {"http_route", "http_response_status_code"}
    for label in labels:
        assert f'"{label.replace("_", ".", 1).replace("_", ".", 1)}"' in middleware, label


# -- a real Prometheus ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_prometheus_scrapes_a_real_receiver(tmp_path: Path, receiver: ReceiverProcess) -> None:
    if not Path(PROMETHEUS).exists():
        pytest.skip(f"{PROMETHEUS} is not installed")
    with grpc.insecure_channel(receiver.endpoint) as channel:
        LogsServiceStub(channel).Export(  # type: ignore[no-untyped-call]
            logs_request(log_record("one"), log_record("two"), log_record("three")), timeout=10)
    target = receiver.status_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "sluice", "static_configs": [{"targets": [target]}]}],
    }))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    query = urllib.parse.quote('sluice_records_received_total{job="sluice",signal="logs"}')
    value = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and value != "3":
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={query}",
                                            timeout=2) as response:
                    result = json.load(response)["data"]["result"]
                value = result[0]["value"][1] if result else None
            except OSError:
                pass
            time.sleep(0.25)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    assert value == "3"
