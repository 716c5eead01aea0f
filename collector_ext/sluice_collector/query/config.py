"""`query`: the LogQuery read API, its API keys and the SQLite index it reads (docs/query.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sluice_collector.configreader import Section
from sluice_collector.ingest.auth import TENANT_ID_RE, AuthConfig, read_secret
from sluice_collector.processors.routing import CATEGORY_NAME_RE

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
    # How far (MiB of lines) the index may trail the files before acknowledgements wait for it.
    index_lag_limit_mb: int = 64
    # Export and Tail streams at once; beyond this they are refused (RESOURCE_EXHAUSTED).
    max_streams: int = 8
    # One key's share of them: no key can lock the others (an admin) out.
    max_streams_per_key: int = 2
    # Query and Stats calls at once, and one key's share of them.
    max_queries: int = 8
    max_queries_per_key: int = 2

    @classmethod
    def from_section(cls, s: Section, categories: Sequence[str], auth: AuthConfig) -> QueryConfig:
        """API keys and index scope. Messages never quote a key: config errors end up in logs.
        `categories` only names examples in messages; `auth` decides whether user keys need a
        tenant."""
        return _parse_query(s, categories, auth)


def _parse_query(s: Section, categories: Sequence[str], auth: AuthConfig) -> QueryConfig:
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
        if user_id is not None and user_id.startswith("[REDACTED:"):
            k.error("user_id", f"got {user_id!r}: a masked value is the same for every user it "
                               "hid; pseudonymise user ids (masking.pseudonymize.keys) and give "
                               "the user's pseu_ token")
        if role == "user" and not user_id and not tenant:
            k.error("", "a user key needs user_id or tenant (what it may see); "
                        "or give it role: admin")
        elif role == "user" and auth.tenants and not tenant:
            # Without a tenant, user_id "42" would match user 42 of every tenant.
            k.error("tenant", "is required for a user key when auth.tenants is configured: "
                              "user ids are only unique within a tenant")
        key = read_secret(k, "key", what="the API key (e.g. key: ${SLUICE_ADMIN_KEY})",
                          travels_in="an `x-api-key` header")
        if key is None:
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
    max_streams = s.get_int("max_streams", 8, minimum=1, maximum=256)
    max_queries = s.get_int("max_queries", 8, minimum=1, maximum=256)
    return QueryConfig(
        enabled=enabled, api_keys=tuple(keys),
        max_limit=s.get_int("max_limit", DEFAULT_QUERY_MAX_LIMIT, minimum=1, maximum=100_000),
        index_categories=tuple(indexed),
        index_lag_limit_mb=s.get_int("index_lag_limit_mb", 64, minimum=1, maximum=1 << 20),
        max_streams=max_streams,
        max_streams_per_key=s.get_int("max_streams_per_key", fair_share(max_streams),
                                      minimum=1, maximum=max_streams),
        max_queries=max_queries,
        max_queries_per_key=s.get_int("max_queries_per_key", fair_share(max_queries),
                                      minimum=1, maximum=max_queries),
    )


def fair_share(total: int) -> int:
    """One key's default share of `total` places: a quarter, at least one — four keys can be
    busy at once, and one key alone leaves most places to the others."""
    return max(1, total // 4)
