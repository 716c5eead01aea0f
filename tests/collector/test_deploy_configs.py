"""The deploy stack (`deploy/`, `otel-collector.yaml`) checked without Docker, which cannot run
in CI here: every file parses; every image is pinned; every mounted file exists; host ports do
not clash; every name, port and path points at something that exists; the receiver config
loads; the Collector config uses only components of the pinned image (from its build manifest);
the Grafana provisioning files use only keys Grafana's provisioning reads and only data-source
uids that are provisioned; the dashboards ask only for metrics and labels that exist — and a
real Prometheus scrapes a real receiver and runs every dashboard query.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.semconv.attributes import http_attributes
from opentelemetry.semconv.metrics import MetricInstruments
from opentelemetry.semconv.metrics.http_metrics import HTTP_SERVER_REQUEST_DURATION
from opentelemetry.semconv.trace import SpanAttributes

from sluice_collector.service.config import load_config
from tests.otlp_builders import log_record, logs_request
from tests.prometheus_process import PROMETHEUS, PROMTOOL, PrometheusProcess, free_port, wait_for
from tests.receiver_process import ReceiverProcess

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
COLLECTOR_MANIFEST = Path(__file__).with_name("data") / "otelcol-contrib-0.111.0.txt"
SERVICES = {"sluice", "otel-collector", "jaeger", "loki", "prometheus", "alertmanager", "grafana"}
# Ports each service's image listens on inside the network (not configured by our files).
IMAGE_PORTS = {"jaeger": {4317, 4318, 16686}, "loki": {3100}, "prometheus": {9090}, "grafana": {3000},
               "alertmanager": {9093}}

# -- what Grafana's provisioning reads (grafana/grafana, pkg/services/provisioning/) -------------
# datasources/types.go, configsV1 + upsertDataSourceFromConfigV1 (yaml tags). Go's YAML decoder
# ignores unknown keys, so a misspelt key is silently dropped: this is the only check it gets.
GRAFANA_DATASOURCES_TOP = {"apiVersion", "datasources", "deleteDatasources"}
GRAFANA_DATASOURCE_KEYS = {"orgId", "orgName", "version", "name", "type", "access", "url", "user",
                           "database", "basicAuth", "basicAuthUser", "withCredentials", "isDefault",
                           "correlations", "jsonData", "secureJsonData", "editable", "uid"}
# dashboards/types.go, configV1 + configs; the file provider's options (path, foldersFromFilesStructure).
GRAFANA_DASHBOARDS_TOP = {"apiVersion", "providers"}
GRAFANA_PROVIDER_KEYS = {"name", "type", "orgId", "folder", "folderUid", "editable", "options",
                         "disableDeletion", "updateIntervalSeconds", "allowUiUpdates"}
GRAFANA_FILE_PROVIDER_OPTIONS = {"path", "foldersFromFilesStructure"}
# public/app/plugins/datasource/loki/types.ts DerivedFieldConfig; and TraceToLogsOptionsV2 of
# the trace-to-logs settings (datasourceUid, tags, time shifts, filters, query, customQuery).
GRAFANA_DERIVED_FIELD_KEYS = {"name", "matcherRegex", "matcherType", "url", "urlDisplayLabel",
                              "datasourceUid"}
GRAFANA_TRACES_TO_LOGS_KEYS = {"datasourceUid", "tags", "spanStartTimeShift", "spanEndTimeShift",
                               "filterByTraceID", "filterBySpanID", "query", "customQuery"}

# -- what Loki 3.2.1 makes of OTLP logs (grafana/loki v3.2.1, pkg/loghttp/push/) ----------------
# otlp_config.go: resource attributes that become index (stream) labels, dots as underscores.
LOKI_INDEX_LABELS = {a.replace(".", "_") for a in (
    "service.name", "service.namespace", "service.instance.id", "deployment.environment",
    "cloud.region", "cloud.availability_zone", "k8s.cluster.name", "k8s.namespace.name",
    "k8s.pod.name", "k8s.container.name", "container.name", "k8s.replicaset.name",
    "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name", "k8s.cronjob.name",
    "k8s.job.name")}
# otlp.go otlpLogToPushEntry: fields of the log record kept as structured metadata.
LOKI_RECORD_METADATA = {"trace_id", "span_id", "severity_text", "severity_number",
                        "observed_timestamp", "flags", "dropped_attributes_count"}

# -- Collector component types used, and the module each comes from (the `type:` of each
# module's metadata.yaml at v0.111.0: opentelemetry-collector for the core ones,
# opentelemetry-collector-contrib for prometheusexporter).
COLLECTOR_TYPES = {
    "receivers": {"otlp": "go.opentelemetry.io/collector/receiver/otlpreceiver"},
    "processors": {"memory_limiter": "go.opentelemetry.io/collector/processor/memorylimiterprocessor",
                   "batch": "go.opentelemetry.io/collector/processor/batchprocessor"},
    "exporters": {
        "otlp": "go.opentelemetry.io/collector/exporter/otlpexporter",
        "otlphttp": "go.opentelemetry.io/collector/exporter/otlphttpexporter",
        "debug": "go.opentelemetry.io/collector/exporter/debugexporter",
        "prometheus": "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/prometheusexporter",
        "loadbalancing":
            "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/loadbalancingexporter",
    },
}


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


@pytest.fixture(scope="module")
def datasources() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = load_yaml(PROVISIONING / "datasources" / "datasources.yaml")["datasources"]
    return data


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


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
        "sluice": {host_port(sluice.receivers.grpc.endpoint)[1], host_port(sluice.telemetry.listen)[1]},
        "otel-collector": collector_ports(collector),
        **IMAGE_PORTS,
    }


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """source → target of a service's volumes."""
    return dict(v.rsplit(":", 2)[:2] for v in service.get("volumes", []))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside a collapsed row


def targets(dashboard: dict[str, Any], ds_type: str) -> list[dict[str, Any]]:
    return [t for p in panels(dashboard) for t in p.get("targets", []) if t["datasource"]["type"] == ds_type]


def go_expand_env(text: str, env: dict[str, str]) -> str:
    """Go's os.ExpandEnv: `${name}` and `$name` are replaced (by "" when unset)."""
    return re.sub(r"\$(\{([^}]*)\}|([A-Za-z0-9_]+))",
                  lambda m: env.get(m.group(2) if m.group(2) is not None else m.group(3), ""), text)


def grafana_interpolate(text: str, env: dict[str, str]) -> str:
    """What Grafana's provisioning does to every string (values.go interpolateValue): split on
    `$$`, expand environment variables in each part, join with a literal `$`."""
    return "$".join(go_expand_env(part, env) for part in text.split("$$"))


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


# -- files and compose ---------------------------------------------------------------------------
def test_every_deploy_file_parses() -> None:
    files = [*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml"), ROOT / "otel-collector.yaml"]
    assert len(files) >= 9
    for path in files:
        assert isinstance(load_yaml(path), dict), path
    assert len(list(DEPLOY.rglob("*.json"))) == 2
    for path in DEPLOY.rglob("*.json"):
        assert isinstance(json.loads(path.read_text()), dict), path


def test_compose_mounts_and_build_inputs_exist(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    named = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for source in mounts(service):
            if source.startswith("."):
                assert (DEPLOY / source).resolve().exists(), f"{name}: {source}"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        for dependency in service.get("depends_on", []):
            assert dependency in compose["services"]
    used_volumes = {s for svc in compose["services"].values() for s in mounts(svc) if not s.startswith(".")}
    assert used_volumes == named
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


def test_compose_images_are_pinned_and_host_ports_do_not_clash(compose: dict[str, Any]) -> None:
    host_ports: dict[int, str] = {}
    for name, service in compose["services"].items():
        if "build" in service:
            assert "image" not in service, name
        else:
            image = service["image"]
            assert re.fullmatch(r"[a-z0-9./-]+:v?\d+\.\d+\.\d+", image), f"{name}: {image} is not pinned"
        for mapping in service.get("ports", []):
            host, _, container = str(mapping).rpartition(":")
            assert host, f"{name}: {mapping} must name its host port"
            assert int(host) not in host_ports, f"{name} and {host_ports.get(int(host))} both publish {host}"
            host_ports[int(host)] = name
            assert int(container) in (IMAGE_PORTS.get(name) or {4317, 4318, 8888, 8889}), mapping
    assert set(host_ports) == {4317, 8888, 14317, 14318, 8889, 16686, 3100, 9090, 9093, 3000}


# -- the receiver --------------------------------------------------------------------------------
def test_sluice_config_loads_and_its_ports_and_targets_match_the_stack(
    compose: dict[str, Any], collector: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SLUICE_QUERY_KEY", raising=False)
    config = load_config(DEPLOY / "sluice.yaml")
    assert config.receivers.grpc.endpoint == "0.0.0.0:4317"
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
    # The query API is on, with the documented dev key unless SLUICE_QUERY_KEY says otherwise.
    assert config.query.enabled
    assert [(k.name, k.role, k.key) for k in config.query.api_keys] == [
        ("dev-admin", "admin", "sluice-dev-admin-key-change-me")]
    assert "SLUICE_QUERY_KEY" in compose["services"]["sluice"]["environment"]
    monkeypatch.setenv("SLUICE_QUERY_KEY", "my-own-secret-0123456789")
    assert load_config(DEPLOY / "sluice.yaml").query.api_keys[0].key == "my-own-secret-0123456789"
    assert "sluice-dev-admin-key-change-me" in (ROOT / "docs" / "deploy.md").read_text()
    # Lines link to the trace in the stack's Jaeger UI (published on the host's 16686).
    assert config.files.trace_url == "http://localhost:16686/trace/{trace_id}"
    # Log alert rules post to the stack's Alertmanager: the embedded default's, plus an error rate.
    assert config.alerts.alertmanager is not None
    host, port = host_port(config.alerts.alertmanager.url)
    assert port in ports[host]
    shipped = [r.name for r in load_config(None).alerts.rules]
    assert [r.name for r in config.alerts.rules] == [*shipped, "ServiceErrorRate"]
    assert [r for r in config.alerts.rules if r.name in shipped] == list(load_config(None).alerts.rules)
    assert "16686:16686" in compose["services"]["jaeger"]["ports"]


# -- the Collector -------------------------------------------------------------------------------
def manifest_modules() -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {}
    kind = ""
    for line in COLLECTOR_MANIFEST.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("["):
            kind = line.strip("[]")
            kinds[kind] = set()
        else:
            kinds[kind].add(line)
    return kinds


def test_collector_components_exist_in_the_pinned_contrib_image(
    compose: dict[str, Any], collector: dict[str, Any],
) -> None:
    """Every component otel-collector.yaml configures — and the commented loadbalancing
    example — is in the build manifest of the image the stack runs."""
    image = compose["services"]["otel-collector"]["image"]
    assert image == "otel/opentelemetry-collector-contrib:0.111.0"
    assert "0.111.0" in COLLECTOR_MANIFEST.name
    modules = manifest_modules()
    assert len(modules["exporters"]) > 40
    assert {"extensions", "exporters", "processors", "receivers", "connectors"} == set(modules)
    for kind, types in COLLECTOR_TYPES.items():
        for module in types.values():
            assert module in modules[kind], module
    for kind in ("receivers", "processors", "exporters"):
        for component_id in collector[kind]:
            component_type = component_id.split("/")[0]
            assert component_type in COLLECTOR_TYPES[kind], f"{kind}: {component_id}"
    assert "loadbalancing" in (ROOT / "otel-collector.yaml").read_text()
    # The deprecated `loki` exporter is not used: Loki takes OTLP itself.
    assert not any(c.split("/")[0] == "loki" for c in collector["exporters"])


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
    for exporter in ("otlp/sluice", "otlp/jaeger", "otlphttp/loki"):
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
    # Masked logs go to Loki's native OTLP endpoint (the exporter appends /v1/logs).
    assert pipelines["logs/masked"]["exporters"] == ["otlphttp/loki"]
    assert urllib.parse.urlsplit(collector["exporters"]["otlphttp/loki"]["endpoint"]).path == "/otlp"
    text = (ROOT / "otel-collector.yaml").read_text()
    for needle in ("# loadbalancing:", "routing_key: traceID", "hostnames:"):
        assert needle in text


# -- Prometheus ----------------------------------------------------------------------------------
def test_prometheus_scrapes_services_on_ports_they_listen_on(
    compose: dict[str, Any], collector: dict[str, Any],
) -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    ports = listening_ports(compose, collector)
    scraped = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert scraped == {"sluice:8888", "otel-collector:8889"}
    alertmanagers = {t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"]
                     for t in sc["targets"]}
    assert alertmanagers == {"alertmanager:9093"}
    for target in scraped | alertmanagers:
        host, port = host_port(target)
        assert port in ports[host], target
    # The rules are mounted beside the config, so its relative rule_files path means the same
    # file in the container as here.
    mounted = mounts(compose["services"]["prometheus"])
    assert mounted["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounted["./prometheus/rules"] == "/etc/prometheus/rules"
    assert config["rule_files"] == ["rules/*.yml"]
    if Path(PROMTOOL).exists():
        result = subprocess.run([PROMTOOL, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 1 rule files found" in result.stdout


# -- Grafana provisioning ------------------------------------------------------------------------
def test_grafana_provisioning_uses_only_keys_grafana_reads(datasources: list[dict[str, Any]]) -> None:
    top = load_yaml(PROVISIONING / "datasources" / "datasources.yaml")
    assert set(top) <= GRAFANA_DATASOURCES_TOP
    assert top["apiVersion"] == 1
    for source in datasources:
        assert set(source) <= GRAFANA_DATASOURCE_KEYS, source["name"]
        assert {"name", "uid", "type", "url", "access"} <= set(source), source["name"]
    providers_file = load_yaml(PROVISIONING / "dashboards" / "dashboards.yaml")
    assert set(providers_file) <= GRAFANA_DASHBOARDS_TOP
    assert providers_file["apiVersion"] == 1
    for provider in providers_file["providers"]:
        assert set(provider) <= GRAFANA_PROVIDER_KEYS, provider["name"]
        assert provider["type"] == "file"
        assert set(provider["options"]) <= GRAFANA_FILE_PROVIDER_OPTIONS


def test_grafana_provisioning_survives_its_environment_interpolation() -> None:
    """Grafana expands $VAR and ${VAR} in provisioning files: Grafana's own link variables
    must be written `$$`, or they silently become empty strings."""
    hostile_env = dict.fromkeys(("__value", "__value.raw", "__trace.traceId", "__tags"), "EXPANDED")
    for path in PROVISIONING.rglob("*.yaml"):
        for text in strings(load_yaml(path)):
            expanded = grafana_interpolate(text, hostile_env)
            assert "EXPANDED" not in expanded, f"{path.name}: {text!r} loses a $ variable"
            assert expanded == text.replace("$$", "$"), f"{path.name}: {text!r}"
    # The escape is really there (an unescaped file would pass the loop above only if empty).
    assert "$${__value.raw}" in (PROVISIONING / "datasources" / "datasources.yaml").read_text()


def test_grafana_data_sources_point_at_services_and_link_logs_and_traces(
    compose: dict[str, Any], collector: dict[str, Any], datasources: list[dict[str, Any]],
) -> None:
    ports = listening_ports(compose, collector)
    by_uid = {s["uid"]: s for s in datasources}
    assert {uid: s["type"] for uid, s in by_uid.items()} == {
        "prometheus": "prometheus", "jaeger": "jaeger", "loki": "loki"}
    for source in datasources:
        host, port = host_port(source["url"])
        assert port in ports[host], source["url"]
    # Log → trace: Loki's structured metadata trace_id becomes a link to the Jaeger data source.
    (derived,) = by_uid["loki"]["jsonData"]["derivedFields"]
    assert set(derived) <= GRAFANA_DERIVED_FIELD_KEYS
    assert derived["matcherType"] == "label"
    assert derived["matcherRegex"] in LOKI_RECORD_METADATA
    assert derived["matcherRegex"] == "trace_id"
    assert derived["datasourceUid"] == "jaeger"
    assert grafana_interpolate(derived["url"], {}) == "${__value.raw}"
    # Trace → logs: from a span to the trace's records in Loki.
    to_logs = by_uid["jaeger"]["jsonData"]["tracesToLogsV2"]
    assert set(to_logs) <= GRAFANA_TRACES_TO_LOGS_KEYS
    assert to_logs["datasourceUid"] == "loki"
    assert to_logs["customQuery"] is True
    query = grafana_interpolate(to_logs["query"], {})
    assert query == '{service_name=~".+"} | trace_id=~"0*${__trace.traceId}"'
    assert set(re.findall(r"\{(\w+)=", query)) <= LOKI_INDEX_LABELS


def test_grafana_dashboards_are_mounted_and_use_only_provisioned_data_sources(
    compose: dict[str, Any], datasources: list[dict[str, Any]], dashboards: dict[str, dict[str, Any]],
) -> None:
    providers = load_yaml(PROVISIONING / "dashboards" / "dashboards.yaml")["providers"]
    grafana = mounts(compose["services"]["grafana"])
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    for provider in providers:
        source = next(src for src, dst in grafana.items() if dst == provider["options"]["path"])
        assert sorted(p.name for p in (DEPLOY / source).glob("*.json")) == ["sluice-receiver.json", "sluice.json"]
    uids = {s["uid"]: s["type"] for s in datasources}
    seen_types: set[str] = set()
    for name, dashboard in dashboards.items():
        assert dashboard["title"], name
        ids = [p["id"] for p in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        for panel in panels(dashboard):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, f"{name}: {panel['title']}"
            if panel["type"] == "row":
                continue
            ds = panel["datasource"]
            assert uids.get(ds["uid"]) == ds["type"], f"{name}: {panel['title']}: {ds}"
            assert panel["targets"], f"{name}: {panel['title']}"
            for target in panel["targets"]:
                assert target["datasource"] == ds, f"{name}: {panel['title']}"
                seen_types.add(ds["type"])
        for variable in dashboard["templating"]["list"]:
            if "datasource" in variable:
                assert uids.get(variable["datasource"]["uid"]) == variable["datasource"]["type"], variable
        for link in dashboard.get("links", []):
            match = re.match(r"/d/([\w-]+)", link["url"])
            if match:
                assert match.group(1) in {d["uid"] for d in dashboards.values()}, link
    # Every data source is shown somewhere: metrics, logs and traces.
    assert seen_types == {"prometheus", "loki", "jaeger"}
    uids_seen = [d["uid"] for d in dashboards.values()]
    assert len(uids_seen) == len(set(uids_seen))


# -- dashboard queries against what exists ------------------------------------------------------
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


def semconv_http_names() -> set[str]:
    """The HTTP server duration histograms of the semantic conventions, stable (seconds) and
    the older one (milliseconds) that many instrumentations still export."""
    assert HTTP_SERVER_REQUEST_DURATION == "http.server.request.duration"
    assert MetricInstruments.HTTP_SERVER_DURATION == "http.server.duration"
    return (otel_to_prometheus(HTTP_SERVER_REQUEST_DURATION, "s", "histogram")
            | otel_to_prometheus(MetricInstruments.HTTP_SERVER_DURATION, "ms", "histogram"))


def exposition_names(text: str) -> set[str]:
    """Sample names a Prometheus text exposition can carry, from its TYPE lines."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                    "gauge": [""], "summary": ["_sum", "_count", ""]}.get(kind, [""])
        names |= {name.removesuffix("_total") + s if kind == "counter" else name + s for s in suffixes}
    return names


AUTH_TOKEN = "acme-token-0123456789abcdef"


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    """A real receiver with every part that has metrics: a forward target and a syslog target
    (closed ports: they cost retries, nothing else) and ingest auth."""
    workdir = tmp_path_factory.mktemp("receiver")
    proc = ReceiverProcess(workdir, {
        "forward": {"targets": [{"name": "nowhere", "endpoint": f"http://127.0.0.1:{free_port()}",
                                 "backoff_initial_s": 1, "backoff_max_s": 5}]},
        "syslog": {"enabled": True, "target": f"tcp://127.0.0.1:{free_port()}"},
        "auth": {"tenants": {"acme": {"token": AUTH_TOKEN}}},
    }).start()
    try:
        yield proc
    finally:
        proc.kill()


def promql_metrics(expr: str) -> set[str]:
    bare = re.sub(r"\{[^}]*\}|\b(?:by|on|without|ignoring) \([^)]*\)", " ", expr)
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare)) - {
        "or", "and", "unless", "by", "on", "le"} - set(re.findall(r"\$\w+", expr))


def test_dashboard_queries_only_metrics_sluice_the_sdk_and_the_conventions_export(
    receiver: ReceiverProcess, dashboards: dict[str, dict[str, Any]],
) -> None:
    with urllib.request.urlopen(f"{receiver.status_url}/metrics", timeout=5) as response:
        exported = exposition_names(response.read().decode())
    sdk = sdk_metric_names()
    semconv = semconv_http_names()
    assert {"http_server_request_duration_seconds_bucket", "http_server_requests_total"} <= sdk
    assert "http_server_duration_milliseconds_bucket" in semconv
    exprs = [re.sub(r"\$\{?\w+(?::\w+)?\}?", "x", t["expr"])
             for d in dashboards.values() for t in targets(d, "prometheus")]
    used = set().union(*(promql_metrics(e) for e in exprs)) - {"x"}
    # The RED panels cover all three namings; the health dashboard the receiver's own metrics.
    assert {"http_server_request_duration_seconds_bucket", "http_server_duration_milliseconds_bucket",
            "http_server_requests_total", "sluice_records_written_total", "sluice_masked_values_total",
            "sluice_forward_spool_bytes", "sluice_syslog_spool_bytes", "sluice_files_disk_used_percent",
            "sluice_sink_errors_total", "sluice_requests_total", "sluice_auth_failures_total"} <= used
    prometheus_own = {"up", "ALERTS", "vector"}
    unknown = sorted(used - exported - sdk - semconv - prometheus_own)
    assert unknown == []
    # http_* label names: the middleware's attributes (stable conventions) and the older
    # conventions' status code, dots turned into underscores.
    middleware = (ROOT / "sdk" / "sluice" / "middleware.py").read_text()
    labels = {m for e in exprs for m in re.findall(r"\b(http_[a-z_]+)\b\s*(?:=~|=|,|\))", e)}
    assert labels == {"http_route", "http_response_status_code", "http_status_code"}
    stable = {http_attributes.HTTP_ROUTE, http_attributes.HTTP_RESPONSE_STATUS_CODE}
    assert {a.replace(".", "_") for a in stable} == {"http_route", "http_response_status_code"}
    for attribute in stable:
        assert f'"{attribute}"' in middleware, attribute
    assert SpanAttributes.HTTP_STATUS_CODE.replace(".", "_") == "http_status_code"


def test_dashboard_log_and_trace_queries_use_what_loki_and_jaeger_have(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    apps = dashboards["sluice.json"]
    logql = [t["expr"] for t in targets(apps, "loki")]
    assert logql
    for expr in logql:
        selectors = re.findall(r"\{([^}]*)\}", expr)
        assert selectors, expr
        for selector in selectors:
            assert set(re.findall(r"(\w+)\s*=~?", selector)) <= LOKI_INDEX_LABELS, expr
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            assert {g.strip() for g in group.split(",")} <= LOKI_INDEX_LABELS | LOKI_RECORD_METADATA, expr
    variables = {v["name"]: v for v in apps["templating"]["list"]}
    assert variables["service"]["query"] == "label_values(service_name)"
    assert variables["service"]["datasource"]["uid"] == "loki"
    jaeger = targets(apps, "jaeger")
    assert {t.get("queryType", "traceId") for t in jaeger} == {"search", "traceId"}
    assert any(t.get("query") == "$trace_id" for t in jaeger)
    assert any(t.get("service") == "$service" for t in jaeger)
    assert {p["type"] for p in panels(apps)} >= {"logs", "traces", "table", "timeseries"}


# -- a real Prometheus ----------------------------------------------------------------------------
def grafana_to_promql(expr: str) -> str:
    """A dashboard expression as Grafana sends it, with its variables filled in."""
    return (expr.replace("$__rate_interval", "1m").replace("${service:regex}", "billing")
            .replace("$service", "billing"))


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason=f"{PROMETHEUS} is not installed")
def test_real_prometheus_scrapes_a_real_receiver_and_runs_every_dashboard_query(
    tmp_path: Path, receiver: ReceiverProcess, dashboards: dict[str, dict[str, Any]],
) -> None:
    with grpc.insecure_channel(receiver.endpoint) as channel:
        LogsServiceStub(channel).Export(  # type: ignore[no-untyped-call]
            logs_request(log_record("one"), log_record("two"), log_record("three")), timeout=10,
            metadata=[("authorization", f"Bearer {AUTH_TOKEN}")])
    prometheus = PrometheusProcess(tmp_path, {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "sluice", "static_configs": [
            {"targets": [receiver.status_url.removeprefix("http://")]}]}],
    })
    try:
        prometheus.start()
        query = 'sluice_records_received_total{job="sluice",signal="logs"}'
        values = wait_for(lambda: [r["value"][1] for r in prometheus.query(query)],
                          "the receiver's counter in Prometheus", alive=prometheus.check_alive)
        assert values == ["3"]
        # Every dashboard query parses and runs (Prometheus answers 400 to a bad one).
        for dashboard in dashboards.values():
            for target in targets(dashboard, "prometheus"):
                expr = grafana_to_promql(target["expr"])
                assert "$" not in expr, expr
                try:
                    prometheus.query(expr)
                except urllib.error.HTTPError as exc:
                    pytest.fail(f"{dashboard['title']}: {expr}\n{exc.read().decode()}")
        # The health dashboard's instant panels show the receiver.
        assert prometheus.query("max by (instance) (sluice_files_disk_used_percent)")
        assert [r["value"][1] for r in prometheus.query('sum(up{job="sluice"})')] == ["1"]
    finally:
        prometheus.stop()
