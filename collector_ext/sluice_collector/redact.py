"""Credentials are never shown: not on /healthz, in metric labels, log lines, config errors,
`check-config` output or CLI errors.

Two kinds of configured value can carry one without the config saying so:

- a URL with a password in it (``https://user:s3cret@tempo:4318``, ``tcp://u:p@syslog:601``):
  wherever the receiver shows a configured URL it shows `redact_url(url)` instead, which keeps
  the user name and replaces the password, as Go's ``url.URL.Redacted`` does;
- a value that came from the environment (``${VAR}``) — the way secrets are meant to be given —
  put under a key that is not a secret key (a token pasted into `telemetry.listen`, say). Config
  errors are built from the values they complain about, so `Redactor` replaces every value the
  environment supplied with the ``${VAR}`` it came from before a message leaves the config
  reader.

Secret keys proper (`auth.tenants.*.token`, `query.api_keys.*.key`, `forward.targets[].headers`,
the audit chain key) are never quoted by their parsers in the first place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MIN_REDACTED_CHARS", "Redactor", "redact_text", "redact_url", "url_password"]

# `scheme://user:password@`: the password runs to the last `@` before the end of the token, so
# one with `/`, `#` or `@` in it (invalid, but people write them) is hidden whole.
_USERINFO_RE = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*):[^\s'\"]*@")
PASSWORD_SHOWN_AS = "xxxxx"  # noqa: S105 - what is shown instead of a password
# Environment values shorter than this are left alone: replacing "1" or "on" everywhere would
# garble messages ("from ${N} to ${N}024"), and no credential is that short.
MIN_REDACTED_CHARS = 4


def redact_url(url: str) -> str:
    """`url` with the password of its user info replaced (``http://u:xxxxx@h:1``)."""
    return redact_text(url)


def url_password(url: str) -> str:
    """The password in `url`'s user info ("" when there is none): for hiding it in text that
    quotes the address without its scheme (gRPC's "authority: u:p@host")."""
    authority = url.partition("://")[2] if "://" in url else url
    userinfo, at, _host = authority.rpartition("@")
    return userinfo.partition(":")[2] if at else ""


def redact_text(text: str) -> str:
    """`text` with the password of every URL in it replaced."""
    if "@" not in text:
        return text
    return _USERINFO_RE.sub(lambda m: f"{m.group('head')}:{PASSWORD_SHOWN_AS}@", text)


class Redactor:
    """Replaces values taken from the environment with the ``${VAR}`` they came from, and URL
    passwords with ``xxxxx``, in text about to be shown (config errors)."""

    def __init__(self, substitutions: Iterable[tuple[str, str]] = ()) -> None:
        self._values: dict[str, str] = {}
        for name, value in substitutions:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Remember that `${name}` was replaced by `value`."""
        if len(value) >= MIN_REDACTED_CHARS:
            self._values.setdefault(value, name)

    def __call__(self, text: str) -> str:
        # Longest first, so a value that contains another is replaced whole.
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, f"${{{self._values[value]}}}")
        return redact_text(text)
