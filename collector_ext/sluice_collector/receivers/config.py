"""`receivers.otlp.protocols.{grpc,http}`: where each front door listens, and how.

The shape is the OpenTelemetry Collector's otlpreceiver's, so a Collector config's receiver
block reads the same here. Without a `receivers` section both protocols run on their defaults
(gRPC 127.0.0.1:4317, HTTP 127.0.0.1:4318); with one, only the protocols it lists run, as in the
Collector. `endpoint: ""` also turns a protocol off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sluice_collector.configreader import Section

DEFAULT_GRPC_ENDPOINT = "127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT = "127.0.0.1:4318"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server TLS; with `client_ca_file`, clients must present a certificate it signed (mTLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @classmethod
    def from_section(cls, s: Section) -> TlsConfig | None:
        if not s.present:
            return None
        cert = s.get_optional_str("cert_file")
        key = s.get_optional_str("key_file")
        ca = s.get_optional_str("client_ca_file")
        ok = True
        for name, value in (("cert_file", cert), ("key_file", key)):
            if not value:
                s.error(name, "is required when tls is set: a PEM file path")
                ok = False
            elif not Path(value).is_file():
                s.error(name, f"got {value!r}; no such file")
                ok = False
        if ca and not Path(ca).is_file():
            s.error("client_ca_file", f"got {ca!r}; no such file")
            ok = False
        if not ok or cert is None or key is None:
            return None
        return cls(Path(cert), Path(key), Path(ca) if ca else None)


def parse_endpoint(section: Section, name: str, default: str, *, allow_empty: bool = False) -> str:
    """A HOST:PORT (port 0 = any free port); `allow_empty` lets "" mean "off"."""
    value = section.get_str(name, default)
    if allow_empty and value == "":
        return value
    problem = endpoint_problem(value)
    if problem:
        section.error(name, problem)
        return default
    return value


def endpoint_problem(value: str) -> str:
    """Why `value` is not a HOST:PORT we can listen on ("" when it is one)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"got {value!r}; expected HOST:PORT such as 127.0.0.1:4317 or [::]:4317 (port 0-65535)"
    return ""


@dataclass(frozen=True, slots=True)
class GrpcConfig:
    """`receivers.otlp.protocols.grpc`: where OTLP/gRPC listens and how it treats slow clients.

    A request holds no thread while its message is on the way (see receivers/otlp_grpc.py);
    what it does hold is bounded here: HTTP/2 streams per connection, streams still waiting
    for their message over all connections, and how long that wait may last.
    """

    endpoint: str = DEFAULT_GRPC_ENDPOINT  # "" = off
    tls: TlsConfig | None = None
    threads: int = 16  # ingest threads (at least queue.max_requests run)
    max_concurrent_streams: int = 1000  # per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)
    max_pending_streams: int = 256  # Export streams waiting for their message, in total
    # Calls whose message is read at the same time (0 = no limit), and one connection's share:
    # the transport then buffers at most max_receiving messages (each ≤ max_request_bytes).
    max_receiving: int = 0
    max_receiving_per_connection: int = 1
    receive_timeout_s: float = 30.0  # a message not in by then: DEADLINE_EXCEEDED


_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.*-]+(:[0-9]{1,5})?$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True, slots=True)
class CorsConfig:
    """CORS for browser OTLP exporters: off unless origins are listed.

    An origin is `*` (any), an exact `https://app.example.com[:port]`, or one with a single `*`
    standing for one or more DNS labels, as in the Collector: `https://*.example.com`.
    """

    allowed_origins: tuple[str, ...] = ()
    allowed_headers: tuple[str, ...] = ()
    max_age_s: int = 7200

    @property
    def enabled(self) -> bool:
        return bool(self.allowed_origins)

    @classmethod
    def from_section(cls, c: Section) -> CorsConfig:
        origins = c.get_str_list("allowed_origins", [])
        for i, origin in enumerate(origins):
            if origin != "*" and (not _ORIGIN_RE.match(origin) or origin.count("*") > 1):
                c.error(f"allowed_origins[{i}]", f"got {origin!r}; expected \"*\" or an origin "
                        "such as https://app.example.com, http://localhost:3000 or "
                        "https://*.example.com (scheme://host[:port], at most one *)")
        headers = c.get_str_list("allowed_headers", [])
        for i, name in enumerate(headers):
            if not _HEADER_NAME_RE.match(name):
                c.error(f"allowed_headers[{i}]", f"got {name!r}; expected a header name such as "
                        "authorization or x-tenant, or \"*\"")
        return cls(
            allowed_origins=tuple(origins),
            allowed_headers=tuple(h.lower() for h in headers),
            max_age_s=c.get_int("max_age", 7200, minimum=0),
        )


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """`receivers.otlp.protocols.http`: the OTLP/HTTP front door and its guards against slow,
    idle and oversized clients (each refusal is counted in `sluice_http_refused_total`)."""

    endpoint: str = DEFAULT_HTTP_ENDPOINT  # "" = off
    tls: TlsConfig | None = None
    cors: CorsConfig = field(default_factory=CorsConfig)
    max_connections: int = 1000  # open connections; past it a new one is answered 503 and closed
    max_pending_bytes: int = 256 * 1024 * 1024  # body bytes of requests still arriving; past it → 429
    max_header_bytes: int = 64 * 1024  # request line + headers; past it → 431
    header_timeout_s: float = 10.0  # a new connection or a started request must finish its headers
    body_timeout_s: float = 30.0  # the whole body must arrive within this after the headers → 408
    idle_timeout_s: float = 60.0  # a keep-alive connection with no request is closed after this


@dataclass(frozen=True, slots=True)
class ReceiversConfig:
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

    @classmethod
    def from_section(cls, receivers: Section) -> ReceiversConfig:
        if not receivers.present:
            return cls()
        otlp = receivers.section("otlp")
        protocols = otlp.section("protocols")
        if not protocols.present:
            protocols.error("", "list the protocols to run: grpc and/or http "
                                "(e.g. protocols: {grpc: {}, http: {}})")
            return cls()
        g = protocols.section("grpc")
        grpc = GrpcConfig(endpoint="")
        if g.present or protocols.has("grpc"):
            grpc = GrpcConfig(
                endpoint=parse_endpoint(g, "endpoint", DEFAULT_GRPC_ENDPOINT, allow_empty=True),
                tls=TlsConfig.from_section(g.section("tls")),
                threads=g.get_int("threads", 16, minimum=1, maximum=1024),
                max_concurrent_streams=g.get_int("max_concurrent_streams", 1000, minimum=1,
                                                 maximum=1_000_000),
                max_pending_streams=g.get_int("max_pending_streams", 256, minimum=1,
                                              maximum=1_000_000),
                max_receiving=(receiving := g.get_int("max_receiving", 0, minimum=0,
                                                      maximum=100_000)),
                max_receiving_per_connection=g.get_int(
                    "max_receiving_per_connection", max(1, receiving // 4), minimum=1,
                    maximum=max(1, receiving)),
                receive_timeout_s=g.get_duration("receive_timeout", 30.0, minimum=0.1),
            )
        h = protocols.section("http")
        http = HttpConfig(endpoint="")
        if h.present or protocols.has("http"):
            http = HttpConfig(
                endpoint=parse_endpoint(h, "endpoint", DEFAULT_HTTP_ENDPOINT, allow_empty=True),
                tls=TlsConfig.from_section(h.section("tls")),
                cors=CorsConfig.from_section(h.section("cors")),
                max_connections=h.get_int("max_connections", 1000, minimum=1),
                max_pending_bytes=h.get_size("max_pending_bytes", 256 * 1024 * 1024, minimum=1024),
                max_header_bytes=h.get_size("max_header_bytes", 64 * 1024, minimum=1024),
                header_timeout_s=h.get_duration("header_timeout_s", 10.0, minimum=0.1),
                body_timeout_s=h.get_duration("body_timeout_s", 30.0, minimum=0.1),
                idle_timeout_s=h.get_duration("idle_timeout_s", 60.0, minimum=0.1),
            )
        if not grpc.endpoint and not http.endpoint:
            protocols.error("", "no protocol is on: give grpc or http an endpoint")
        return cls(grpc=grpc, http=http)
