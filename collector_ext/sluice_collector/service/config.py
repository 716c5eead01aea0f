"""The receiver's configuration root: YAML in, typed frozen objects out, every problem at once.

Load with `load_config(path)` (or `parse_config(text)`); both raise `ConfigError` listing every
problem with its key path, the value found and what would be accepted. `${VAR}` and
`${VAR:-default}` in string values are replaced from the environment before validation.

This module only assembles: each component parses its own section (`ReceiversConfig` the
front doors, `IngestConfig` request size, queue and auth, `RoutingConfig` the categories' match
rules, `AccessFromSpansConfig` the access records derived from HTTP server spans, `FilesConfig`
the files and the categories' file policy, `AlertsConfig` the alert rules, and so on), and keys
nobody read
are reported as unknown at the end.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sluice_collector import DEFAULT_CONFIG_RESOURCE
from sluice_collector.configreader import Section
from sluice_collector.errors import ConfigError, ConfigProblem
from sluice_collector.ingest.core import IngestConfig
from sluice_collector.processors.access import AccessFromSpansConfig
from sluice_collector.processors.masking import MaskingConfig
from sluice_collector.processors.routing import RoutingConfig
from sluice_collector.query.config import QueryConfig
from sluice_collector.receivers.config import ReceiversConfig, parse_endpoint
from sluice_collector.sinks.alerts.config import AlertsConfig
from sluice_collector.sinks.files.config import FilesConfig
from sluice_collector.sinks.forward.sink import ForwardConfig
from sluice_collector.sinks.syslog.sink import SyslogConfig

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    listen: str = "127.0.0.1:8888"  # "" turns the HTTP endpoint off
    summary_interval_s: float = 60.0  # the periodic INFO activity line; 0 turns it off


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    receivers: ReceiversConfig = field(default_factory=ReceiversConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    shutdown_timeout_s: float = 30.0
    files: FilesConfig = field(default_factory=FilesConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig.default)
    access_from_spans: AccessFromSpansConfig = field(default_factory=AccessFromSpansConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    syslog: SyslogConfig = field(default_factory=SyslogConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    source: str = "<embedded default>"


def with_endpoints(
    config: ReceiverConfig, *, grpc: str | None = None, http: str | None = None,
    telemetry: str | None = None,
) -> ReceiverConfig:
    """`config` with listen addresses replaced (the CLI's --listen flags, tests' free ports);
    None keeps the configured one, "" turns that listener off."""
    receivers = config.receivers
    if grpc is not None:
        receivers = dataclasses.replace(receivers, grpc=dataclasses.replace(receivers.grpc, endpoint=grpc))
    if http is not None:
        receivers = dataclasses.replace(receivers, http=dataclasses.replace(receivers.http, endpoint=http))
    changes: dict[str, Any] = {"receivers": receivers}
    if telemetry is not None:
        changes["telemetry"] = dataclasses.replace(config.telemetry, listen=telemetry)
    return dataclasses.replace(config, **changes)


def load_config(path: str | os.PathLike[str] | None) -> ReceiverConfig:
    """Read and validate a config file; None loads the embedded default."""
    if path is None:
        text = resources.files("sluice_collector").joinpath(DEFAULT_CONFIG_RESOURCE).read_text()
        return parse_config(text, source="<embedded default>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem("", f"cannot read config file: {exc.strerror or exc}")], str(path)
        ) from exc
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<string>", env: dict[str, str] | None = None) -> ReceiverConfig:
    problems: list[ConfigProblem] = []
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem("", f"not valid YAML{where}: {reason}")], source) from exc
    data = _substitute_env(data, "", os.environ if env is None else env, problems)
    root = Section(data, "", problems)
    config = _parse_root(root, source)
    root.check_unknown()
    if problems:
        raise ConfigError(problems, source)
    return config


def _substitute_env(value: Any, path: str, env: Any, problems: list[ConfigProblem]) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return str(env[name])
            if default is not None:
                return default
            problems.append(ConfigProblem(
                path, f"environment variable {name} is not set; set it or write ${{{name}:-default}}"
            ))
            return ""
        return _ENV_RE.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, f"{path}.{k}" if path else str(k), env, problems)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, f"{path}[{i}]", env, problems) for i, v in enumerate(value)]
    return value


def _parse_root(root: Section, source: str) -> ReceiverConfig:
    ingest = IngestConfig.from_root(root)
    routing = RoutingConfig.from_root(root)
    receivers = ReceiversConfig.from_section(root.section("receivers"))
    query = QueryConfig.from_section(root.section("query"), routing.names, ingest.auth)
    if query.enabled and not receivers.grpc.endpoint:
        root.error("query.enabled", "the query API is served on the OTLP/gRPC port; turn on "
                                    "receivers.otlp.protocols.grpc or set query.enabled: false")
    t = root.section("telemetry")
    return ReceiverConfig(
        receivers=receivers,
        ingest=ingest,
        shutdown_timeout_s=root.get_duration("shutdown_timeout_s", 30.0),
        files=FilesConfig.from_root(root),
        routing=routing,
        access_from_spans=AccessFromSpansConfig.from_section(root.section("access_from_spans")),
        masking=MaskingConfig.from_section(root.section("masking")),
        syslog=SyslogConfig.from_section(root.section("syslog")),
        forward=ForwardConfig.from_section(root.section("forward")),
        telemetry=TelemetryConfig(
            listen=parse_endpoint(t, "listen", "127.0.0.1:8888", allow_empty=True),
            summary_interval_s=t.get_duration("summary_interval_s", 60.0),
        ),
        query=query,
        alerts=AlertsConfig.from_section(root.section("alerts")),
        source=source,
    )
