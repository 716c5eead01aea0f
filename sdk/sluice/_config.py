"""Resolve `init()` arguments, `SLUICE_*` and `OTEL_*` variables into one frozen `Settings`.

Precedence is arguments > `SLUICE_*` > standard `OTEL_*` > defaults, so an app can hard-code what
must not change, operators can override the rest per deployment, and stock OpenTelemetry
configuration keeps working. Every problem is collected and reported at once, naming the argument
or variable, because setup is the only time we are allowed to raise.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from sluice import _health
from sluice.errors import ConfigError

__all__ = ["OPTIONS", "Settings", "resolve"]

T = TypeVar("T")

DEFAULT_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
PROTOCOLS = ("grpc", "http/protobuf")
# A standard OTLP protocol that the OpenTelemetry Python exporters sluice uses cannot speak.
HTTP_JSON = "http/json"
_NO_JSON = ("sluice sends OTLP with the OpenTelemetry Python exporters, which have no JSON encoding; "
            "use 'http/protobuf' (same port 4318 and /v1/* paths) or 'grpc'")
EXPORTERS = ("otlp", "none")


@dataclass(frozen=True)
class Settings:
    """Everything `init()` needs, validated; built once, never mutated."""

    service_name: str = "unknown_service"
    endpoint: str = DEFAULT_ENDPOINT
    protocol: str = "grpc"
    service_version: str | None = None
    environment: str = "development"
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    insecure: bool = True
    exporter: str = "otlp"
    console: bool = False
    sample_ratio: float = 1.0
    capture_logs: bool = True
    # INFO, not the root logger's WARNING: what `log.info()` says is shipped, as the README's first
    # example implies, while the console keeps printing what the app's own levels let through.
    log_level: int = logging.INFO
    metric_interval_s: float = 60.0
    export_timeout_s: float = 10.0
    exit_timeout_s: float = 3.0
    schedule_delay_s: float = 1.0
    max_queue_size: int = 8192
    max_batch_size: int = 512
    spill_dir: Path | None = None
    spill_max_bytes: int = 64 * 1024 * 1024
    runtime_metrics: bool = True
    # On by default, as the issue and Sentry-style "integrations" promise: an installed
    # instrumentor whose library is present is enabled unless denied.
    instrument: tuple[str, ...] | bool = True
    disabled_instrumentations: tuple[str, ...] = ()
    scrub: bool = False
    trace_url: str | None = None


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError
    return value.strip()


def _trace_url(value: Any) -> str:
    text = _str(value)
    if "{trace_id}" not in text or not text.startswith(("http://", "https://")):
        raise ValueError(text)
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise TypeError


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise TypeError
    return number


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise TypeError
    number = int(value)
    if number <= 0:
        raise TypeError
    return number


def _ratio(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise TypeError
    return number


def _mapping(value: Any) -> dict[str, str]:
    """Accept a dict or the W3C `key=value,key2=value2` form the OTEL_* variables use."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if not isinstance(value, str):
        raise TypeError
    out: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise TypeError
        out[unquote(key.strip())] = unquote(val.strip())
    return out


def _log_level(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        level = logging.getLevelName(value.strip().upper())
        if isinstance(level, int):
            return level
    raise TypeError


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    if isinstance(value, Sequence | Set) and all(isinstance(n, str) for n in value):
        return tuple(sorted(value))
    raise TypeError


def _instrument(value: Any) -> tuple[str, ...] | bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "all", "1", "false", "none", "0", ""):
        return value.strip().lower() in ("true", "all", "1")
    return _names(value)


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise TypeError

    return parse


def _endpoint(value: Any) -> str:
    text = _str(value)
    parsed = urlparse(text if "://" in text else f"http://{text}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise TypeError
    return text if "://" in text else f"http://{text}"


def _path(value: Any) -> Path:
    if isinstance(value, os.PathLike):
        return Path(value)
    return Path(_str(value))


# option name -> (parser, accepted description, SLUICE_* variable, OTEL_* variable or None)
OPTIONS: dict[str, tuple[Callable[[Any], Any], str, str, str | None]] = {
    "service_name": (_str, "a non-empty string", "SLUICE_SERVICE_NAME", "OTEL_SERVICE_NAME"),
    "endpoint": (_endpoint, "an http(s)://host:port URL", "SLUICE_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    "protocol": (_choice(PROTOCOLS), "'grpc' or 'http/protobuf'", "SLUICE_PROTOCOL",
                 "OTEL_EXPORTER_OTLP_PROTOCOL"),
    "service_version": (_str, "a non-empty string", "SLUICE_SERVICE_VERSION", None),
    "environment": (_str, "a non-empty string", "SLUICE_ENVIRONMENT", None),
    "resource_attributes": (_mapping, "a dict or 'k=v,k2=v2'", "SLUICE_RESOURCE_ATTRIBUTES",
                            "OTEL_RESOURCE_ATTRIBUTES"),
    "headers": (_mapping, "a dict or 'k=v,k2=v2'", "SLUICE_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
    "insecure": (_bool, "a bool", "SLUICE_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"),
    "exporter": (_choice(EXPORTERS), "'otlp' or 'none'", "SLUICE_EXPORTER", None),
    "console": (_bool, "a bool", "SLUICE_CONSOLE", None),
    "sample_ratio": (_ratio, "a number between 0.0 and 1.0", "SLUICE_SAMPLE_RATIO", None),
    "capture_logs": (_bool, "a bool", "SLUICE_CAPTURE_LOGS", None),
    "log_level": (_log_level, "a logging level (int or name such as 'INFO')", "SLUICE_LOG_LEVEL", None),
    "metric_interval_s": (_positive_float, "a number of seconds > 0", "SLUICE_METRIC_INTERVAL_S", None),
    "export_timeout_s": (_positive_float, "a number of seconds > 0", "SLUICE_EXPORT_TIMEOUT_S", None),
    "exit_timeout_s": (_positive_float, "a number of seconds > 0", "SLUICE_EXIT_TIMEOUT_S", None),
    "schedule_delay_s": (_positive_float, "a number of seconds > 0", "SLUICE_SCHEDULE_DELAY_S", None),
    "max_queue_size": (_positive_int, "an integer > 0", "SLUICE_MAX_QUEUE_SIZE", None),
    "max_batch_size": (_positive_int, "an integer > 0, at most max_queue_size", "SLUICE_MAX_BATCH_SIZE",
                       None),
    "spill_dir": (_path, "a directory path", "SLUICE_SPILL_DIR", None),
    "spill_max_bytes": (_positive_int, "an integer > 0", "SLUICE_SPILL_MAX_BYTES", None),
    "runtime_metrics": (_bool, "a bool", "SLUICE_RUNTIME_METRICS", None),
    "instrument": (_instrument, "a bool or a list of instrumentor names", "SLUICE_INSTRUMENT", None),
    "disabled_instrumentations": (_names, "a list of instrumentor names", "SLUICE_DISABLED_INSTRUMENTATIONS",
                                  "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"),
    "scrub": (_bool, "a bool", "SLUICE_SCRUB", None),
    "trace_url": (_trace_url, "an http(s) URL containing {trace_id}", "SLUICE_TRACE_URL", None),
}


def _otel_fallbacks(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Standard variables that need translation rather than a 1:1 copy: (variable, raw value)."""
    out: dict[str, tuple[str, str]] = {}
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler in ("traceidratio", "parentbased_traceidratio") and "OTEL_TRACES_SAMPLER_ARG" in env:
        out["sample_ratio"] = ("OTEL_TRACES_SAMPLER_ARG", env["OTEL_TRACES_SAMPLER_ARG"])
    elif sampler in ("always_off", "parentbased_always_off"):
        out["sample_ratio"] = ("OTEL_TRACES_SAMPLER", "0")
    if "OTEL_METRIC_EXPORT_INTERVAL" in env:
        raw = env["OTEL_METRIC_EXPORT_INTERVAL"]
        try:
            out["metric_interval_s"] = ("OTEL_METRIC_EXPORT_INTERVAL", str(float(raw) / 1000.0))
        except ValueError:
            out["metric_interval_s"] = ("OTEL_METRIC_EXPORT_INTERVAL", raw)
    if "OTEL_BLRP_SCHEDULE_DELAY" in env:
        raw = env["OTEL_BLRP_SCHEDULE_DELAY"]
        try:
            out["schedule_delay_s"] = ("OTEL_BLRP_SCHEDULE_DELAY", str(float(raw) / 1000.0))
        except ValueError:
            out["schedule_delay_s"] = ("OTEL_BLRP_SCHEDULE_DELAY", raw)
    return out


def resolve(arguments: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Merge the sources by precedence and validate every value, reporting all problems at once."""
    env = os.environ if env is None else env
    fallbacks = _otel_fallbacks(env)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    errors = [_unknown(name, arguments[name]) for name in arguments if name not in OPTIONS]
    for name, (parse, accepted, sluice_var, otel_var) in OPTIONS.items():
        source: str | None = None
        raw: Any = None
        if arguments.get(name) is not None:
            source, raw = name, arguments[name]
        elif sluice_var in env:
            source, raw = sluice_var, env[sluice_var]
        elif otel_var is not None and otel_var in env:
            source, raw = otel_var, env[otel_var]
        elif name in fallbacks:
            source, raw = fallbacks[name]
        if source is None:
            continue
        if name == "protocol" and isinstance(raw, str) and raw.strip().lower() == HTTP_JSON:
            if source != otel_var:
                message = f"sluice.init: {source}={raw!r} is not supported: {_NO_JSON}"
                errors.append(ConfigError(source, raw, "'grpc' or 'http/protobuf'", message=message))
                continue
            raw = _json_fallback(source)
        try:
            values[name] = parse(raw)
            sources[name] = source
        except (TypeError, ValueError, OverflowError):
            errors.append(ConfigError(source, raw, accepted))
    errors += _cross_check(values, sources)
    if errors:
        if len(errors) == 1:
            raise errors[0]
        first = errors[0]
        combined = ConfigError(first.name, first.value, first.accepted)
        combined.args = ("; ".join(str(e) for e in errors),)
        raise combined
    return _finish(values)


def _json_fallback(variable: str) -> str:
    """`http/json` in the standard variable: another SDK on the machine (JavaScript, ...) may have
    set it for itself, and a shared setting must not stop this app, so sluice warns once and
    sends `http/protobuf` to the same OTLP/HTTP endpoint instead."""
    _health.report_once(
        "protocol_http_json",
        f"{variable}=http/json is not supported by the OpenTelemetry Python exporters; sending "
        "http/protobuf instead (set SLUICE_PROTOCOL to choose explicitly)")
    return "http/protobuf"


def _unknown(name: str, value: Any) -> ConfigError:
    """An argument `init()` does not know, with the nearest option name when there is one."""
    close = difflib.get_close_matches(name, OPTIONS, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else f"the options are {', '.join(OPTIONS)}"
    return ConfigError(name, value, f"one of {', '.join(OPTIONS)}",
                       message=f"sluice.init: unknown option {name}={value!r}; {hint}")


def _cross_check(values: Mapping[str, Any], sources: Mapping[str, str]) -> list[ConfigError]:
    """Rules between options, checked here so the OpenTelemetry SDK never raises its own ValueError."""
    queue = values.get("max_queue_size", Settings.max_queue_size)
    batch = values.get("max_batch_size", Settings.max_batch_size)
    if batch <= queue:
        return []
    queue_from = sources.get("max_queue_size", "the default")
    if "max_batch_size" in sources:
        return [ConfigError(sources["max_batch_size"], batch,
                            f"an integer > 0, at most max_queue_size ({queue}, from {queue_from})")]
    return [ConfigError(queue_from, queue, f"an integer >= max_batch_size ({batch}, the default)")]


def _finish(values: dict[str, Any]) -> Settings:
    """Fill the values that depend on others: service name from resource attributes, endpoint per protocol."""
    resource = dict(values.get("resource_attributes", {}))
    if "service_name" not in values and resource.get("service.name"):
        values["service_name"] = resource["service.name"]
    if "service_version" not in values and resource.get("service.version"):
        values["service_version"] = resource["service.version"]
    if "environment" not in values:
        env_name = resource.get("deployment.environment.name") or resource.get("deployment.environment")
        if env_name:
            values["environment"] = env_name
    protocol = values.get("protocol", "grpc")
    if "endpoint" not in values:
        values["endpoint"] = DEFAULT_ENDPOINT if protocol == "grpc" else DEFAULT_HTTP_ENDPOINT
    if "insecure" not in values:
        values["insecure"] = urlparse(values["endpoint"]).scheme != "https"
    if "spill_dir" not in values:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in values.get("service_name", "unknown"))
        values["spill_dir"] = Path(tempfile.gettempdir()) / f"sluice-spill-{safe}"
    return Settings(**values)
