"""Secrets out of `process.command_args` before `sluice run` puts the command on every record.

The command line is attached to the resource of everything a run ships, so it lands in every
category file, the query API and forward targets. Commands routinely carry credentials
(`--password hunter3`, `--token=abc`, `--db-url postgres://app:pw@db/x`). The masking engine
cannot see the first form — `hunter3` alone is an ordinary word — because the secret's key is the
argument before it; so a flag whose name says secret has its value replaced here, with the token
the engine's `kv_secret` detector writes, and every argument then goes through the engine for the
forms it does know (URLs with credentials, `PASSWORD=x`, provider tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["REDACTED", "SECRET_SUFFIXES", "is_secret_flag", "redact_command"]

# What the engine's `kv_secret` detector writes with the default replacement, so a query for
# `[REDACTED:kv_secret]` finds both. Spelt out rather than imported: importing `sluice.masking`
# compiles nothing but still costs `sluice run` ~0.1 s; tests/sdk/test_capture_argv.py keeps the
# two in step.
REDACTED = "[REDACTED:kv_secret]"

# Words that name a secret only as a whole word of the flag (`--key`, `--ssh-key`, `--db-pass`,
# `--api_key`); as a mere suffix they would catch `--monkey` or `--bypass`.
_SECRET_WORDS = frozenset({"pass", "pw", "key", "apikey", "privatekey", "creds"})
# Suffixes of the normalised name that say secret however they are joined (`--dbpassword`,
# `--client-secret`, `--github-token`, `--basic-auth`): the masking engine's sensitive keys that
# name credentials (its personal-data keys, such as `ssn`, are not flags' business).
SECRET_SUFFIXES = (
    "password", "passwd", "pwd", "passphrase", "passcode", "secret", "token", "auth",
    "authorization", "apikey", "accesskey", "secretkey", "privatekey", "credential", "credentials",
    "connectionstring", "connstr", "dsn", "signature", "cookie",
)
_FLAG = re.compile(r"(-{1,2})([A-Za-z][A-Za-z0-9_.-]*)")


def is_secret_flag(name: str) -> bool:
    """Whether a flag name (without its dashes) says its value is a secret, case-insensitively."""
    words = [w for w in re.split(r"[-_.]", name.lower()) if w]
    if not words:
        return False
    if words[-1] in _SECRET_WORDS:
        return True
    return "".join(words).endswith(SECRET_SUFFIXES)


def redact_command(command: Sequence[str], mask: Callable[[str], str] | None = None) -> list[str]:
    """`command` with the value of every secret flag replaced by `REDACTED`.

    Both `--password VALUE` and `--password=VALUE` (one or two dashes) are handled; a flag that is
    followed by another `--flag` is taken as a switch without a value. The program itself
    (`command[0]`) is kept. `mask`, when given (the masking engine's `Masker.mask`), then runs over
    each argument for secrets that carry their own key or shape.
    """
    out: list[str] = []
    expecting_value = False
    for n, arg in enumerate(command):
        if n == 0:
            out.append(arg)
            continue
        if expecting_value:
            expecting_value = False
            if not arg.startswith("--"):
                out.append(REDACTED)
                continue
        match = _FLAG.fullmatch(arg.partition("=")[0])
        if match is not None and is_secret_flag(match.group(2)):
            if "=" in arg:
                out.append(f"{arg.partition('=')[0]}={REDACTED}")
                continue
            expecting_value = True
            out.append(arg)
            continue
        out.append(mask(arg) if mask is not None else arg)
    return out
