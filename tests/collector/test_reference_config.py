"""The configuration example in docs/receiver.md is a config the receiver accepts, key for key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice_collector.service.config import parse_config

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "receiver.md"


def test_reference_config_example_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = REFERENCE.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if b.startswith("receivers:"))
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_text("placeholder")
    (tmp_path / "globex.token").write_text("globex-token-0123456789abcdef\n")
    example = example.replace("/etc/sluice/", f"{tmp_path}/")
    # Keys are read from the process environment.
    monkeypatch.setenv("SLUICE_MASKING_KEY", "k" * 32)
    monkeypatch.setenv("SLUICE_AUDIT_KEY", "a" * 32)
    config = parse_config(example, env={"SLUICE_TOKEN_ACME": "acme-token-0123456789abcdef"})
    assert config.receivers.grpc.endpoint == "127.0.0.1:4317"
    assert config.receivers.grpc.tls is not None
    assert config.receivers.http.endpoint == "127.0.0.1:4318"
    assert config.receivers.http.tls is not None
    assert config.receivers.http.cors.allowed_origins == ("https://app.example.com", "https://*.example.com")
    assert config.receivers.http.max_pending_bytes == 256 * 1024 * 1024
    assert config.files.categories["payments"].retention_days == 400
    assert config.routing.names[0] == "payments"
    assert not config.syslog.enabled  # `enabled: false` wins over a target
    assert [t.url for t in config.syslog.targets] == ["unix:///dev/log", "udp://127.0.0.1:514"]
    assert config.files.rotation.compress_level == 3
    assert config.ingest.auth.enabled
    assert sorted(t.name for t in config.ingest.auth.tenants) == ["acme", "globex"]
