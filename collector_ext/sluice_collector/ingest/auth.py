"""Ingest authentication: a bearer token decides the tenant of a request.

`auth.tenants.<tenant>.token` (or `token_file`) configures one token per tenant. The front doors
call `TokenAuthenticator` with the request's `authorization` header as soon as the headers have
arrived, before reading the body, so an unauthenticated client costs neither a queue place nor
the work of reading its message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path

from sluice_collector.configreader import Section
from sluice_collector.errors import Unauthenticated

TENANT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_TOKEN_CHARS = 16
TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: what an HTTP header value can carry


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

    @classmethod
    def from_section(cls, s: Section) -> AuthConfig:
        """Tenants and their tokens. Messages never quote a token: config errors end up in logs."""
        tenants: list[TenantConfig] = []
        owner_of: dict[str, str] = {}  # token → tenant that has it, to refuse a shared token
        configured = s.sections("tenants")
        for name, t in configured.items():
            if not TENANT_ID_RE.match(name):
                t.error("", f"got tenant id {name!r}; expected 1–64 characters of A–Z, a–z, 0–9, "
                            "'_' and '-' (it names the directory tenants/<tenant>/)")
                continue
            token = read_secret(t, "token", what="the tenant's bearer token",
                                travels_in="an `authorization: Bearer` header")
            if token is None:
                continue
            if token in owner_of:
                t.error("token", f"the same token as tenant {owner_of[token]!r}; every tenant "
                                 "needs its own token (the token decides the tenant)")
                continue
            owner_of[token] = name
            tenants.append(TenantConfig(name=name, token=token))
        enabled = s.get_bool("enabled", bool(configured))
        if enabled and not configured:
            s.error("enabled", "auth is enabled but no tenant is configured; add "
                               "auth.tenants.<tenant>.token (or token_file)")
        return cls(enabled=enabled, tenants=tuple(tenants))


def read_secret(t: Section, key: str, *, what: str, travels_in: str) -> str | None:
    """A token or key given inline (`key`) or in a file (`key_file`), checked for length and
    for characters a header can carry. Messages never quote the secret."""
    value = t.get_optional_str(key)
    file = t.get_optional_str(f"{key}_file")
    where = key
    if value is not None and file is not None:
        t.error(f"{key}_file", f"give {key} or {key}_file, not both")
        return None
    if file is not None:
        where = f"{key}_file"
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            t.error(where, f"got {file!r}; cannot read it: {reason or exc}")
            return None
    if value is None:
        t.error(key, f"is required: {what} (or give {key}_file)")
        return None
    if len(value) < MIN_TOKEN_CHARS:
        t.error(where, f"got a {key} of {len(value)} characters; expected at least "
                       f"{MIN_TOKEN_CHARS} (use e.g. `openssl rand -hex 32`)")
        return None
    if not TOKEN_RE.match(value):
        t.error(where, f"the {key} has spaces, control or non-ASCII characters; expected "
                       f"visible ASCII only (it travels in {travels_in})")
        return None
    return value


class TokenAuthenticator:
    """Maps an `authorization: Bearer <token>` header value to the tenant that owns the token.

    Tokens are compared as SHA-256 digests with `hmac.compare_digest`, against every configured
    token without stopping at a match, so neither the position of the right token nor the
    length of a guess shows in the response time. The tenant comes only from here — never from
    anything inside the request — so a client cannot write as another tenant.
    """

    def __init__(self, auth: AuthConfig) -> None:
        self._tokens = [
            (hashlib.sha256(t.token.encode("utf-8")).digest(), t.name) for t in auth.tenants
        ]

    def __call__(self, header: str | bytes | None) -> str:
        """The tenant; raises `Unauthenticated` (reason "missing" or "invalid")."""
        if header is None:
            raise Unauthenticated("missing")
        text = header.decode("latin-1") if isinstance(header, bytes) else header
        scheme, _, credential = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthenticated("invalid")
        presented = hashlib.sha256(credential.strip().encode("utf-8", "surrogateescape")).digest()
        tenant: str | None = None
        for digest, name in self._tokens:
            if hmac.compare_digest(presented, digest):
                tenant = name
        if tenant is None:
            raise Unauthenticated("invalid")
        return tenant
