"""The receiver's configuration: YAML in, typed frozen objects out, every problem at once.

Load with `load_config(path)` (or `parse_config(text)`); both raise `ConfigError` listing every
problem with its key path, the value found and what would be accepted. `${VAR}` and
`${VAR:-default}` in string values are replaced from the environment before validation.

Categories: the user's `categories` come first, in the order of the file, then the built-in
ones the user did not mention (access, error, security, audit, system, app, traces, metrics).
Their `match` rules are tried in that order; the `log.category` attribute of a record wins over
all rules; `app` takes what nothing else matched.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sluice_collector.configreader import Section
from sluice_collector.errors import ConfigError, ConfigProblem
from sluice_collector.otlpvalues import SEVERITY_LEVELS
from sluice_collector.processors.masking import MaskingConfig
from sluice_collector.sinks.files.config import (
    FilesConfig,
    RotationConfig,
    parse_path_template,
    parse_rotation,
)
from sluice_collector.sinks.forward.sink import ForwardConfig
from sluice_collector.sinks.syslog.sink import SyslogConfig

MiB = 1024 * 1024
TENANT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_TOKEN_CHARS = 16
_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: what an HTTP/2 header value can carry
CATEGORY_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
DEFAULT_CONFIG_RESOURCE = "default.yaml"


@dataclass(frozen=True, slots=True)
class MatchRule:
    """One item of `categories.<name>.match`: every condition that is set must hold."""

    attribute: str | None = None  # the attribute is present (on the record, else the resource)
    equals: str | None = None  # ... and its value, as text, equals this
    matches: str | None = None  # ... or its value, as text, matches this regex (search)
    attribute_prefix: str | None = None  # some attribute key starts with this (e.g. "exception.")
    severity_at_least: int | None = None  # SeverityNumber lower bound
    scope: str | None = None  # glob on the instrumentation scope (logger) name
    body_matches: str | None = None  # regex searched in the body text


@dataclass(frozen=True, slots=True)
class CategoryConfig:
    name: str
    match: tuple[MatchRule, ...] = ()
    path: str = "{category}.log"  # template, relative to files.directory
    rotation: RotationConfig = field(default_factory=RotationConfig)
    retention_days: int | None = 30  # None = keep forever
    builtin: bool = False


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class QueueConfig:
    max_requests: int = 64
    max_bytes: int = 256 * MiB
    retry_after_s: float = 1.0


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    listen: str = "127.0.0.1:8888"  # "" turns the HTTP endpoint off


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """One `auth.tenants.<name>`: the bearer token that identifies this tenant's clients."""

    name: str
    token: str = field(repr=False)  # never in a repr, hence never in a log line or traceback


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """`auth`: bearer-token ingest authentication; the token decides the tenant of a request."""

    enabled: bool = False
    tenants: tuple[TenantConfig, ...] = ()


QUERY_ROLES = ("admin", "user")
DEFAULT_QUERY_MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class ApiKeyConfig:
    """One `query.api_keys.<name>`: who a read API key belongs to and what it may see."""

    name: str
    key: str = field(repr=False)  # never in a repr, hence never in a log line or traceback
    role: str = "user"  # admin | user
    user_id: str | None = None
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class QueryConfig:
    """`query`: the LogQuery read API and the SQLite index it reads (docs/query.md)."""

    enabled: bool = False
    api_keys: tuple[ApiKeyConfig, ...] = ()
    max_limit: int = DEFAULT_QUERY_MAX_LIMIT
    # Categories written to the index; empty = every log and span category.
    index_categories: tuple[str, ...] = ()
    # Export and Tail hold a gRPC thread each for their whole run; beyond this they are refused.
    max_streams: int = 8


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    listen: str = "127.0.0.1:4317"
    tls: TlsConfig | None = None
    max_request_bytes: int = 64 * MiB
    threads: int = 16
    shutdown_timeout_s: float = 30.0
    queue: QueueConfig = field(default_factory=QueueConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    categories: dict[str, CategoryConfig] = field(default_factory=dict)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    syslog: SyslogConfig = field(default_factory=SyslogConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    source: str = "<embedded default>"


# Built-in categories, in rule order. `match` of access/error are the defaults the seeds ask for.
BUILTIN_CATEGORIES: dict[str, dict[str, Any]] = {
    "access": {
        "retention_days": 90,
        "match": [
            {"attribute": "http.request.method"}, {"attribute": "http.method"},
            {"attribute": "url.path"}, {"attribute": "http.route"},
        ],
    },
    "error": {
        "retention_days": 30,
        "match": [{"severity_at_least": "ERROR"}, {"attribute_prefix": "exception."}],
    },
    "security": {"retention_days": 365},
    "audit": {"retention_days": "forever"},
    "system": {"retention_days": 30},
    "app": {"retention_days": 30},
    "traces": {"retention_days": 30},
    "metrics": {"retention_days": 30},
}


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


def _parse_listen(section: Section, name: str, default: str, *, allow_empty: bool = False) -> str:
    value = section.get_str(name, default)
    if allow_empty and value == "":
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        section.error(name, f"got {value!r}; expected HOST:PORT such as 127.0.0.1:4317 or [::]:4317")
        return default
    return value


def _parse_root(root: Section, source: str) -> ReceiverConfig:
    listen = _parse_listen(root, "listen", "127.0.0.1:4317")
    tls = _parse_tls(root.section("tls"))
    max_request_bytes = root.get_size("max_request_bytes", 64 * MiB, minimum=1024)
    threads = root.get_int("threads", 16, minimum=1, maximum=1024)
    shutdown_timeout_s = root.get_duration("shutdown_timeout_s", 30.0)
    q = root.section("queue")
    queue = QueueConfig(
        max_requests=q.get_int("max_requests", 64, minimum=1),
        max_bytes=q.get_size("max_bytes", 256 * MiB, minimum=1024),
        retry_after_s=q.get_duration("retry_after_s", 1.0),
    )
    files = FilesConfig.from_section(root.section("files"))
    categories = _parse_categories(root, files)
    masking = MaskingConfig.from_section(root.section("masking"))
    syslog = SyslogConfig.from_section(root.section("syslog"))
    forward = ForwardConfig.from_section(root.section("forward"))
    t = root.section("telemetry")
    telemetry = TelemetryConfig(listen=_parse_listen(t, "listen", "127.0.0.1:8888", allow_empty=True))
    auth = _parse_auth(root.section("auth"))
    query = _parse_query(root.section("query"), categories, auth)
    return ReceiverConfig(
        listen=listen, tls=tls, max_request_bytes=max_request_bytes, threads=threads,
        shutdown_timeout_s=shutdown_timeout_s, queue=queue, files=files, categories=categories,
        masking=masking, syslog=syslog, forward=forward, telemetry=telemetry, auth=auth,
        query=query, source=source,
    )


def _parse_tls(s: Section) -> TlsConfig | None:
    if not s.present:
        return None
    cert = s.get_optional_str("cert_file")
    key = s.get_optional_str("key_file")
    ca = s.get_optional_str("client_ca_file")
    ok = True
    for name, value in (("cert_file", cert), ("key_file", key)):
        if not value:
            s.error(name, "is required when tls is set: a PEM file path")
            ok = False
        elif not Path(value).is_file():
            s.error(name, f"got {value!r}; no such file")
            ok = False
    if ca and not Path(ca).is_file():
        s.error("client_ca_file", f"got {ca!r}; no such file")
        ok = False
    if not ok or cert is None or key is None:
        return None
    return TlsConfig(Path(cert), Path(key), Path(ca) if ca else None)


def _parse_auth(s: Section) -> AuthConfig:
    """Tenants and their tokens. Messages never quote a token: config errors end up in logs."""
    tenants: list[TenantConfig] = []
    owner_of: dict[str, str] = {}  # token → tenant that has it, to refuse a shared token
    configured = s.sections("tenants")
    for name, t in configured.items():
        if not TENANT_ID_RE.match(name):
            t.error("", f"got tenant id {name!r}; expected 1–64 characters of A–Z, a–z, 0–9, "
                        "'_' and '-' (it names the directory tenants/<tenant>/)")
            continue
        token = _read_token(t)
        if token is None:
            continue
        if token in owner_of:
            t.error("token", f"the same token as tenant {owner_of[token]!r}; every tenant needs "
                             "its own token (the token decides the tenant)")
            continue
        owner_of[token] = name
        tenants.append(TenantConfig(name=name, token=token))
    enabled = s.get_bool("enabled", bool(configured))
    if enabled and not configured:
        s.error("enabled", "auth is enabled but no tenant is configured; add "
                           "auth.tenants.<tenant>.token (or token_file)")
    return AuthConfig(enabled=enabled, tenants=tuple(tenants))


def _parse_query(s: Section, categories: dict[str, CategoryConfig], auth: AuthConfig) -> QueryConfig:
    """API keys and index scope. Messages never quote a key: config errors end up in logs."""
    keys: list[ApiKeyConfig] = []
    owner_of: dict[str, str] = {}
    configured = s.sections("api_keys")
    for name, k in configured.items():
        role = k.get_str("role", "user", choices=QUERY_ROLES)
        user_id = k.get_optional_str("user_id")
        tenant = k.get_optional_str("tenant")
        if tenant is not None and not TENANT_ID_RE.match(tenant):
            k.error("tenant", f"got {tenant!r}; expected a tenant id (1–64 of A–Z, a–z, 0–9, _, -)")
        if role == "user" and not user_id and not tenant:
            k.error("", "a user key needs user_id or tenant (what it may see); "
                        "or give it role: admin")
        elif role == "user" and auth.tenants and not tenant:
            # Without a tenant, user_id "42" would match user 42 of every tenant.
            k.error("tenant", "is required for a user key when auth.tenants is configured: "
                              "user ids are only unique within a tenant")
        key = k.get_optional_str("key")
        if key is None:
            k.error("key", "is required: the API key (e.g. key: ${SLUICE_ADMIN_KEY})")
            continue
        if len(key) < MIN_TOKEN_CHARS:
            k.error("key", f"got a key of {len(key)} characters; expected at least "
                           f"{MIN_TOKEN_CHARS} (use e.g. `openssl rand -hex 32`)")
            continue
        if not _TOKEN_RE.match(key):
            k.error("key", "the key has spaces, control or non-ASCII characters; expected "
                           "visible ASCII only (it travels in an `x-api-key` header)")
            continue
        if key in owner_of:
            k.error("key", f"the same key as api_keys.{owner_of[key]}; every key needs its own "
                           "value (the key decides who is reading)")
            continue
        owner_of[key] = name
        keys.append(ApiKeyConfig(name=name, key=key, role=role, user_id=user_id or None,
                                 tenant=tenant or None))
    enabled = s.get_bool("enabled", bool(configured))
    if enabled and not configured:
        s.error("enabled", "the query API is enabled but has no key; add "
                           "query.api_keys.<name>.key and .role")
    indexed = s.get_str_list("index_categories", [])
    for name in indexed:
        # Not checked against `categories`: records may bring their own (`log.category`).
        if not CATEGORY_NAME_RE.match(name) or name == "metrics":
            s.error("index_categories", f"got {name!r}; expected log or span category names "
                                        f"such as {', '.join(c for c in categories if c != 'metrics')}")
    return QueryConfig(
        enabled=enabled, api_keys=tuple(keys),
        max_limit=s.get_int("max_limit", DEFAULT_QUERY_MAX_LIMIT, minimum=1, maximum=100_000),
        index_categories=tuple(indexed),
        max_streams=s.get_int("max_streams", 8, minimum=1, maximum=256),
    )


def _read_token(t: Section) -> str | None:
    token = t.get_optional_str("token")
    token_file = t.get_optional_str("token_file")
    key = "token"
    if token is not None and token_file is not None:
        t.error("token_file", "give token or token_file, not both")
        return None
    if token_file is not None:
        key = "token_file"
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            t.error("token_file", f"got {token_file!r}; cannot read it: {reason or exc}")
            return None
    if token is None:
        t.error("token", "is required: the tenant's bearer token (or give token_file)")
        return None
    if len(token) < MIN_TOKEN_CHARS:
        t.error(key, f"got a token of {len(token)} characters; expected at least "
                     f"{MIN_TOKEN_CHARS} (use e.g. `openssl rand -hex 32`)")
        return None
    if not _TOKEN_RE.match(token):
        t.error(key, "the token has spaces, control or non-ASCII characters; expected visible "
                     "ASCII only (it travels in an `authorization: Bearer` header)")
        return None
    return token


def _parse_retention(s: Section, default: int | None) -> int | None:
    if not s.has("retention_days"):
        return default
    value = s.raw("retention_days")
    if value == "forever":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    s.error("retention_days", f"got {value!r}; expected a whole number of days ≥ 1, or \"forever\"")
    return default


def _parse_categories(root: Section, files: FilesConfig) -> dict[str, CategoryConfig]:
    user = root.sections("categories")
    ordered: list[tuple[str, Section | None]] = [(n, s) for n, s in user.items()]
    ordered += [(n, None) for n in BUILTIN_CATEGORIES if n not in user]
    problems = root.problems
    out: dict[str, CategoryConfig] = {}
    for name, section in ordered:
        builtin_data = BUILTIN_CATEGORIES.get(name)
        if section is not None and not CATEGORY_NAME_RE.match(name):
            problems.append(ConfigProblem(
                section.path,
                "category names are lower-case letters, digits, '_' and '-', starting with a "
                "letter, at most 63 characters",
            ))
            continue
        builtin_section = Section(builtin_data or {}, f"(built-in {name})", problems)
        default_retention = _parse_retention(builtin_section, 30)
        default_match = _parse_match(builtin_section)
        if section is None:
            out[name] = CategoryConfig(
                name=name, match=default_match, rotation=files.rotation,
                retention_days=default_retention, builtin=True,
            )
            continue
        match = _parse_match(section) if section.has("match") else default_match
        out[name] = CategoryConfig(
            name=name,
            match=match,
            path=parse_path_template(section, "path", "{category}.log"),
            rotation=parse_rotation(section.section("rotation"), files.rotation),
            retention_days=_parse_retention(section, default_retention),
            builtin=builtin_data is not None,
        )
    return out


_RULE_KEYS = ("attribute", "equals", "matches", "attribute_prefix", "severity_at_least", "scope",
              "body_matches")


def _parse_match(section: Section) -> tuple[MatchRule, ...]:
    rules: list[MatchRule] = []
    for item in section.section_list("match"):
        values = {k: item.get_optional_str(k) for k in _RULE_KEYS if k != "severity_at_least"}
        severity: int | None = None
        if item.has("severity_at_least"):
            raw = item.raw("severity_at_least")
            if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= 24:
                severity = raw
            elif isinstance(raw, str) and raw.upper() in SEVERITY_LEVELS:
                severity = SEVERITY_LEVELS[raw.upper()]
            else:
                item.error("severity_at_least", f"got {raw!r}; expected one of "
                           f"{', '.join(SEVERITY_LEVELS)} or a SeverityNumber from 1 to 24")
        for regex_key in ("matches", "body_matches"):
            pattern = values[regex_key]
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    item.error(regex_key, f"got {pattern!r}; not a valid regular expression: {exc}")
        if (values["equals"] is not None or values["matches"] is not None) and not values["attribute"]:
            item.error("attribute", "equals/matches need the attribute they test: add attribute: KEY")
        if not any(item.has(k) for k in _RULE_KEYS):
            item.error("", f"an empty rule matches nothing; use any of: {', '.join(_RULE_KEYS)}")
        rules.append(MatchRule(severity_at_least=severity, **values))
    return tuple(rules)
