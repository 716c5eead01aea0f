"""Ingest authentication: `auth` config validation, UNAUTHENTICATED at the gRPC edge, the tenant
taken from the token only, and per-tenant directories that retention still understands.

Real receivers on loopback with real files; no mocks.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sluice_collector.errors import ConfigError, Unauthenticated
from sluice_collector.ingest.auth import TokenAuthenticator
from sluice_collector.service.config import parse_config
from sluice_collector.service.receiver import Receiver
from sluice_collector.sinks.files.config import FilePolicy, FilesConfig
from sluice_collector.sinks.files.retention import RetentionSweeper
from sluice_collector.telemetry import ReceiverTelemetry
from sluice_collector.testing import start_receiver
from tests.otlp_builders import log_record, logs_request

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TOKEN_A = "a-token-0123456789abcdef"
TOKEN_B = "b-token-0123456789abcdef"


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return [str(p) for p in info.value.problems]


# -- config -------------------------------------------------------------------------------

def test_tenants_turn_auth_on_by_default_and_enabled_false_turns_it_off() -> None:
    config = parse_config(f"auth: {{tenants: {{a: {{token: {TOKEN_A}}}}}}}")
    assert config.ingest.auth.enabled
    assert [t.name for t in config.ingest.auth.tenants] == ["a"]
    off = parse_config(f"auth: {{enabled: false, tenants: {{a: {{token: {TOKEN_A}}}}}}}")
    assert not off.ingest.auth.enabled
    assert not parse_config("{}").ingest.auth.enabled


def test_token_comes_from_env_substitution_or_a_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "b.token"
    token_file.write_text(TOKEN_B + "\n")
    config = parse_config(
        f"auth: {{tenants: {{a: {{token: '${{TOKEN_A}}'}}, b: {{token_file: {token_file}}}}}}}",
        env={"TOKEN_A": TOKEN_A},
    )
    assert {t.name: t.token for t in config.ingest.auth.tenants} == {"a": TOKEN_A, "b": TOKEN_B}


def test_tokens_never_appear_in_the_config_repr() -> None:
    config = parse_config(f"auth: {{tenants: {{a: {{token: {TOKEN_A}}}}}}}")
    assert TOKEN_A not in repr(config)


@pytest.mark.parametrize("tenant", ["..", ".", "a.b", "a/b", "x" * 65, "é"])
def test_tenant_ids_outside_the_safe_alphabet_are_refused_naming_the_key(tenant: str) -> None:
    found = problems(json.dumps({"auth": {"tenants": {tenant: {"token": TOKEN_A}}}}))
    assert found
    assert found[0].startswith(f"auth.tenants.{tenant}:")
    assert "1–64 characters" in found[0]


def test_short_empty_missing_shared_and_doubly_given_tokens_are_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "t"
    token_file.write_text(TOKEN_A)
    found = problems(json.dumps({"auth": {"tenants": {
        "short": {"token": "tooshort"},
        "empty": {"token": ""},
        "none": {},
        "a": {"token": TOKEN_A},
        "copy": {"token": TOKEN_A},
        "both": {"token": TOKEN_B, "token_file": str(token_file)},
        "gone": {"token_file": str(tmp_path / "missing")},
        "spaces": {"token": "has spaces but is long enough"},
    }}}))
    text = "\n".join(found)
    assert "auth.tenants.short.token: got a token of 8 characters; expected at least 16" in text
    assert "auth.tenants.empty.token: got a token of 0 characters" in text
    assert "auth.tenants.none.token: is required" in text
    assert "auth.tenants.copy.token: the same token as tenant 'a'" in text
    assert "auth.tenants.both.token_file: give token or token_file, not both" in text
    assert "auth.tenants.gone.token_file:" in text
    assert "cannot read it" in text
    assert "auth.tenants.spaces.token:" in text
    assert "tooshort" not in text
    assert TOKEN_A not in text


def test_auth_enabled_without_tenants_and_unknown_keys_are_errors() -> None:
    found = problems("auth: {enabled: true, tenant: {}}")
    assert any(p.startswith("auth.enabled: auth is enabled but no tenant") for p in found)
    assert any(p.startswith("auth.tenant: unknown key; did you mean 'tenants'?") for p in found)


# -- the authenticator ----------------------------------------------------------------------

def reason(auth: TokenAuthenticator, header: str | None) -> str:
    with pytest.raises(Unauthenticated) as info:
        auth(header)
    return info.value.reason


def test_bearer_scheme_is_case_insensitive_and_every_other_form_is_refused() -> None:
    auth = TokenAuthenticator(parse_config(
        f"auth: {{tenants: {{a: {{token: {TOKEN_A}}}, b: {{token: {TOKEN_B}}}}}}}").ingest.auth)
    assert auth(f"Bearer {TOKEN_B}") == "b"
    assert auth(f"bearer {TOKEN_A}".encode()) == "a"
    assert reason(auth, None) == "missing"
    assert reason(auth, TOKEN_A) == "invalid"
    assert reason(auth, f"Basic {TOKEN_A}") == "invalid"
    assert reason(auth, f"Bearer {TOKEN_A}x") == "invalid"
    assert reason(auth, "Bearer ") == "invalid"


# -- the gRPC edge --------------------------------------------------------------------------

@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = start_receiver({
        "files": {"directory": str(tmp_path / "logs"),
                  "rotation": {"interval": "none", "compress": False}},
        "auth": {"tenants": {"a": {"token": TOKEN_A}, "b": {"token": TOKEN_B}}},
        "masking": {"enabled": False},
    })
    yield r
    r.stop(5)


def export(receiver: Receiver, payload: bytes, token: str | None) -> Any:
    metadata = [("authorization", f"Bearer {token}")] if token is not None else None
    with grpc.insecure_channel(receiver.endpoint) as channel:
        return channel.unary_unary(LOGS_EXPORT).with_call(payload, timeout=10, metadata=metadata)


def written(logs: Path) -> dict[str, list[dict[str, Any]]]:
    """Every JSON record on disk by relative path."""
    return {p.relative_to(logs).as_posix(): [json.loads(x) for x in p.read_text().splitlines()]
            for p in sorted(logs.rglob("*.log"))}


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", TOKEN_A[:-1]])
def test_missing_or_wrong_token_is_unauthenticated_counted_and_writes_nothing(
    receiver: Receiver, tmp_path: Path, token: str | None,
) -> None:
    payload = logs_request(log_record("secret stuff")).SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        export(receiver, payload, token)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert written(tmp_path / "logs") == {}
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{receiver.status_port}/metrics").read().decode()
    assert 'sluice_requests_total{outcome="UNAUTHENTICATED",signal="logs"} 1.0' in metrics
    reason = "missing" if token is None else "invalid"
    assert f'sluice_auth_failures_total{{reason="{reason}",signal="logs"}} 1.0' in metrics
    if token:
        assert token not in metrics


def test_tenant_comes_from_the_token_whatever_the_records_claim(
    receiver: Receiver, tmp_path: Path,
) -> None:
    """Tenant A's client cannot put a record under tenant B: not with `tenant.id`/`tenant`
    attributes, not with a `log.category` that looks like a path, not via the resource."""
    tricks = [
        log_record("plain"),
        log_record("attr", attributes={"tenant.id": "b", "tenant": "b"}),
        log_record("cat", attributes={"log.category": "../tenants/b/audit"}),
        log_record("cat2", attributes={"log.category": "audit", "tenant.id": "b"}),
    ]
    payload = logs_request(*tricks, resource={"tenant.id": "b", "tenant": "b"}).SerializeToString()
    export(receiver, payload, TOKEN_A)
    files = written(tmp_path / "logs")
    assert files
    assert all(rel.startswith("tenants/a/") for rel in files), files
    bodies = sorted(r["body"] for records in files.values() for r in records)
    assert bodies == ["attr", "cat", "cat2", "plain"]
    assert not (tmp_path / "logs" / "tenants" / "b").exists()
    export(receiver, logs_request(log_record("from b")).SerializeToString(), TOKEN_B)
    assert [r["body"] for r in written(tmp_path / "logs")["tenants/b/app.log"]] == ["from b"]


def test_path_template_fields_cannot_cross_tenants(tmp_path: Path) -> None:
    """`{tenant}` in a template is the authenticated tenant; record fields such as
    `{tenant.id}` only name files inside that tenant's directory."""
    logs = tmp_path / "logs"
    r = start_receiver({
        "files": {"directory": str(logs), "fallback_path": "{category}.log"},
        "categories": {
            "app": {"path": "{tenant}/{tenant.id}/{category}.log"},
            "audit": {"path": "x/{user.id}.log"},
        },
        "auth": {"tenants": {"a": {"token": TOKEN_A}, "b": {"token": TOKEN_B}}},
        "masking": {"enabled": False},
    })
    try:
        payload = logs_request(
            log_record("t", attributes={"tenant.id": "b", "tenant": "b"}),
            log_record("u", attributes={"log.category": "audit", "user.id": "../../b"}),
        ).SerializeToString()
        export(r, payload, TOKEN_A)
    finally:
        r.stop(5)
    files = written(logs)
    assert len(files) == 2
    assert "tenants/a/a/b/app.log" in files
    assert all(rel.startswith("tenants/a/") for rel in files), files


def test_without_auth_files_stay_where_they_were(tmp_path: Path) -> None:
    """Turning auth off (the default) keeps today's layout: no `tenants/` directory."""
    logs = tmp_path / "logs"
    r = start_receiver({"files": {"directory": str(logs)}, "masking": {"enabled": False}})
    try:
        with grpc.insecure_channel(r.endpoint) as channel:
            channel.unary_unary(LOGS_EXPORT).with_call(
                logs_request(log_record("x")).SerializeToString(), timeout=10)
    finally:
        r.stop(5)
    assert list(written(logs)) == ["app.log"]


# -- retention under tenants/ -----------------------------------------------------------------

NOW = 1_800_000_000.0
DAY = 86400.0


def test_retention_maps_tenant_files_to_their_category_and_keeps_audit(tmp_path: Path) -> None:
    cats = {name: FilePolicy(name=name, retention_days=days)
            for name, days in (("app", 30), ("audit", None))}
    cats["payments"] = FilePolicy(name="payments", path="pay/{service.name}.log",
                                      retention_days=400)
    for rel, age in [("tenants/a/app.log.2026-01-01.1.gz", 31),
                     ("tenants/a/app.log.2026-01-20.1.gz", 29),
                     ("tenants/b/audit.log.2020-01-01.1.gz", 3000),
                     ("tenants/b/pay/shop.log.2026-01-01.1.gz", 100),
                     ("tenants/b/pay/shop.log.2025-01-01.1.gz", 401)]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (NOW - age * DAY, NOW - age * DAY))
    sweeper = RetentionSweeper(FilesConfig(directory=tmp_path), cats, ReceiverTelemetry(),
                               clock=lambda: NOW)
    assert sweeper.category_of("tenants/a/audit.log") == ("audit", None)
    assert sweeper.category_of("tenants/b/pay/shop.log") == ("payments", 400)
    removed = sorted(p.relative_to(tmp_path).as_posix() for p in sweeper.sweep_age())
    assert removed == ["tenants/a/app.log.2026-01-01.1.gz", "tenants/b/pay/shop.log.2025-01-01.1.gz"]
    assert (tmp_path / "tenants/b/audit.log.2020-01-01.1.gz").exists()
