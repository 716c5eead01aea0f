"""Config pieces every delivering sink reads the same way (forward targets, Alertmanager)."""

from __future__ import annotations

from urllib.parse import urlsplit

from sluice_collector.configreader import Section


def valid_http_url(url: str) -> bool:
    """`http(s)://HOST[:PORT][/PATH]`: no query or fragment, a port from 1 to 65535."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return False
    return port is None or 0 < port <= 65535


def parse_headers(s: Section) -> tuple[tuple[str, str], ...]:
    """`headers`: a mapping of names to strings (numbers taken as text), names lower-cased —
    HTTP compares them without case, and gRPC metadata must be lower-case."""
    raw = s.raw("headers")
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool)
        for k, v in raw.items()
    ):
        # Never echo the value: headers carry credentials (authorization: Bearer ...).
        s.error("headers", f"got a {type(raw).__name__}; expected a mapping of header names to "
                           "strings")
        return ()
    return tuple((k.lower(), str(v)) for k, v in raw.items())
