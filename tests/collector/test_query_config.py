"""`query` config: API keys, roles, limits — every problem at once, never quoting a key."""

from __future__ import annotations

import pytest

from sluice_collector.errors import ConfigError
from sluice_collector.service.config import parse_config

KEY = "k" * 20


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return [str(p) for p in info.value.problems]


def test_query_is_off_without_keys_and_on_with_them() -> None:
    assert parse_config("{}", env={}).query.enabled is False
    config = parse_config(
        "query:\n  max_limit: 50\n  api_keys:\n    ops: {key: '${OPS_KEY}', role: admin}\n"
        "    alice: {key: " + "a" * 20 + ", user_id: alice, tenant: acme}\n",
        env={"OPS_KEY": KEY},
    )
    assert config.query.enabled is True
    assert config.query.max_limit == 50
    ops, alice = config.query.api_keys
    assert (ops.name, ops.key, ops.role) == ("ops", KEY, "admin")
    assert (alice.role, alice.user_id, alice.tenant) == ("user", "alice", "acme")
    assert KEY not in repr(config)  # keys never reach a log line through a repr


def test_every_key_problem_is_reported_at_once_without_quoting_keys() -> None:
    problems = problems_of(
        "query:\n  api_keys:\n"
        "    short: {key: abc, role: admin}\n"
        "    nobody: {key: " + "b" * 20 + "}\n"
        "    boss: {key: " + KEY + ", role: root}\n"
        "    twin: {key: " + KEY + ", role: admin}\n"
        "    nokey: {role: admin}\n"
        "    masked: {key: " + "c" * 20 + ", user_id: '[REDACTED:email]'}\n"
        "  max_limit: 0\n  index_categories: [metrics]\n  colour: blue\n"
    )
    text = "\n".join(problems)
    assert "query.api_keys.short.key: got a key of 3 characters; expected at least 16" in text
    assert "query.api_keys.nobody: a user key needs user_id or tenant" in text
    assert "query.api_keys.boss.role: got 'root'; expected one of: admin, user" in text
    assert "query.api_keys.twin.key: the same key as api_keys.boss" in text
    assert "query.api_keys.nokey.key: is required" in text
    assert ("query.api_keys.masked.user_id: got '[REDACTED:email]': a masked value is the same "
            "for every user it hid") in text
    assert "query.max_limit" in text
    assert "query.index_categories: got 'metrics'" in text
    assert "query.colour" in text  # unknown keys are errors
    assert KEY not in text
    assert "abc" not in text


def test_enabled_without_keys_is_an_error() -> None:
    assert problems_of("query: {enabled: true}\n") == [
        "query.enabled: the query API is enabled but has no key; add "
        "query.api_keys.<name>.key and .role"
    ]


def test_unset_environment_variable_in_a_key_is_reported() -> None:
    problems = problems_of("query:\n  api_keys:\n    ops: {key: '${NOPE}', role: admin}\n")
    assert any("NOPE is not set" in p for p in problems)

