"""Decisions made from an attribute's key alone, before its value is looked at.

A value under `password` or `http.request.header.authorization` is a secret whatever it looks
like, so it is masked whole; a value under `trace_id` or `http.route` is an identifier that
must stay greppable, so it is never scanned. Keys are compared after normalisation (lower case,
without `-`, `_`, `.` and spaces) so `X-Api-Key`, `x_api_key` and `x.api.key` are one key.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = ["DEFAULT_ALLOW_KEYS", "DEFAULT_SENSITIVE_KEYS", "KeyRule", "KeyRules", "normalize_key"]

# A key is sensitive when its normalised form ENDS with one of these: `db.password`,
# `http.request.header.x-api-key` and `user_session` are; `token_count` and `secret_name` are not.
DEFAULT_SENSITIVE_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "passphrase", "secret", "token", "authorization", "auth",
    "cookie", "setcookie", "apikey", "accesskey", "secretkey", "privatekey", "session",
    "sessionid", "credential", "credentials", "connectionstring", "connstr", "dsn", "signature",
    "passcode", "ssn", "socialsecuritynumber", "cvv", "cvc", "cvv2", "cvc2",
)
# Keys never masked: ids and names that correlation and routing depend on (exact match).
DEFAULT_ALLOW_KEYS: tuple[str, ...] = (
    "trace_id", "span_id", "parent_span_id", "trace.id", "span.id", "request.id", "request_id",
    "correlation_id", "http.route", "url.template", "http.request.method", "http.method",
    "http.response.status_code", "http.status_code", "log.category", "service.name",
    "service.version", "service.namespace", "service.instance.id", "deployment.environment",
    "telemetry.sdk.name", "telemetry.sdk.version", "telemetry.sdk.language", "event.name",
    "code.function", "code.namespace", "code.lineno", "otel.scope.name", "sluice.masked",
)


def normalize_key(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "").replace(".", "").replace(" ", "")


class KeyRule(enum.Enum):
    """What to do with a value, judged by its key."""

    SCAN = "scan"  # run the detectors over the value
    ALLOW = "allow"  # leave it alone
    SENSITIVE = "sensitive"  # mask the whole value
    PSEUDONYMIZE = "pseudonymize"  # replace it with a stable keyed-hash token


class KeyRules:
    """Key → `KeyRule`, memoised: a batch repeats the same few dozen keys thousands of times."""

    def __init__(
        self, sensitive: Iterable[str], allow: Iterable[str], pseudonymize: Iterable[str],
    ) -> None:
        self._sensitive = tuple(sorted({normalize_key(k) for k in sensitive if k}))
        self._allow = frozenset(normalize_key(k) for k in allow if k)
        self._pseudonymize = frozenset(normalize_key(k) for k in pseudonymize if k)
        self._cache: dict[str, KeyRule] = {}

    def watched(self) -> tuple[str, ...]:
        """Normalised keys whose mere presence makes a value change (sensitive stems and
        pseudonymised keys): what a scan of encoded bytes must look for besides the detectors."""
        return (*self._sensitive, *sorted(self._pseudonymize))

    def rule(self, key: str) -> KeyRule:
        found = self._cache.get(key)
        if found is not None:
            return found
        norm = normalize_key(key)
        if norm in self._pseudonymize:
            found = KeyRule.PSEUDONYMIZE
        elif norm in self._allow:
            found = KeyRule.ALLOW
        elif norm.endswith(self._sensitive):
            found = KeyRule.SENSITIVE
        else:
            found = KeyRule.SCAN
        if len(self._cache) < 8192:  # attacker-chosen keys must not grow memory without bound
            self._cache[key] = found
        return found
