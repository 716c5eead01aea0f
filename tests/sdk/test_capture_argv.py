"""Secret flags of a `sluice run` command are redacted before the command goes on the resource."""

from __future__ import annotations

import pytest

from sluice._capture.argv import REDACTED, SECRET_SUFFIXES, is_secret_flag, redact_command
from sluice.masking import DEFAULT_SENSITIVE_KEYS, Masker


def test_the_value_after_a_secret_flag_and_after_its_equals_sign_is_redacted() -> None:
    command = ["prog", "--password", "hunter3", "--token=abc", "-PWD", "x", "--db-pass", "y",
               "--private-key=/k", "--user", "bob", "input.txt"]
    assert redact_command(command) == [
        "prog", "--password", REDACTED, f"--token={REDACTED}", "-PWD", REDACTED, "--db-pass", REDACTED,
        f"--private-key={REDACTED}", "--user", "bob", "input.txt"]


@pytest.mark.parametrize("flag", [
    "password", "passwd", "pwd", "pass", "token", "secret", "api-key", "apikey", "api_key", "key",
    "auth", "credential", "credentials", "private-key", "PRIVATE_KEY", "Client-Secret",
    "github-token", "ssh-key", "db.password", "basic-auth", "dsn",
])
def test_flag_names_that_say_secret(flag: str) -> None:
    assert is_secret_flag(flag)


@pytest.mark.parametrize("flag", [
    "user", "verbose", "monkey", "bypass", "max-tokens", "token-count", "secret-name", "keys",
    "port", "host",
])
def test_flag_names_that_do_not(flag: str) -> None:
    assert not is_secret_flag(flag)


def test_a_secret_flag_used_as_a_switch_does_not_swallow_the_next_flag() -> None:
    assert redact_command(["prog", "--ask-password", "--verbose", "x"]) == [
        "prog", "--ask-password", "--verbose", "x"]
    assert redact_command(["prog", "--token"]) == ["prog", "--token"]


def test_the_program_itself_is_never_taken_for_a_flag() -> None:
    assert redact_command(["--token", "x"]) == ["--token", "x"]


def test_the_masking_engine_then_sees_the_other_arguments() -> None:
    command = ["psql", "postgres://app:s3cr3tpw@db/x", "--password", "hunter3", "PASSWORD=x"]
    out = redact_command(command, Masker().mask)
    assert out[:4] == ["psql", "postgres://app:[REDACTED:url_credentials]@db/x", "--password", REDACTED]
    assert out[4] == f"PASSWORD={REDACTED}"


def test_the_token_and_the_suffixes_are_the_masking_engines() -> None:
    """Spelt out in the module to keep `sluice run` from importing the engine; kept in step here."""
    assert Masker().token("kv_secret") == REDACTED
    assert set(SECRET_SUFFIXES) <= set(DEFAULT_SENSITIVE_KEYS)
