"""`ForwardSink`: the masked stream on to other OTLP backends (Jaeger, Tempo, Loki, a collector).

`consume` never touches the network. It serialises the batch's request once — after masking and
validation, so what leaves is exactly what the files got — and appends the bytes to one bounded
on-disk spool (`DiskSpool`) per target and signal; that append is the durability point the
receiver's acknowledgement relies on. One sender thread per target and signal reads its spool in
order and exports through OTLP/gRPC or OTLP/HTTP (protobuf). A spool per signal keeps a target
that refuses one signal (say, metrics) from holding up the others.

The sender sends several spooled requests as one: serialised protobuf messages of one type
concatenate into a valid message whose repeated fields are the union, so no re-encoding happens.

Outcomes, as the OTLP specification asks:

    success                      acknowledged; `partial_success` rejections are counted
    retryable (gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, ...; HTTP 429/502/503/504; no connection)
                                 kept; retried with capped exponential backoff and jitter, or
                                 after the server's `google.rpc.RetryInfo` / `Retry-After`
    anything else (INVALID_ARGUMENT, HTTP 400, ...)
                                 dropped and counted: sending the same bytes again cannot help

Delivery is at-least-once: a request whose answer was lost is sent again.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import gzip
import http.client
import logging
import re
import ssl
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import Counter, Gauge

from sluice_collector.batch import Batch, Signal
from sluice_collector.configreader import Section
from sluice_collector.errors import SinkError, SluiceReceiverError
from sluice_collector.redact import redact_text, redact_url
from sluice_collector.sinks._delivery.sender import Backoff, SpoolSender, flush_senders
from sluice_collector.sinks._delivery.settings import parse_headers, valid_http_url
from sluice_collector.sinks._delivery.spool import DiskSpool
from sluice_collector.telemetry import ReceiverTelemetry

log = logging.getLogger("sluice.forward")

MiB = 1024 * 1024
PROTOCOLS = ("grpc", "http/protobuf")
COMPRESSIONS = ("gzip", "none")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENDPOINT_FORMS = (
    "http://HOST:PORT, https://HOST:PORT (TLS) or, for grpc, dns:///HOST:PORT or "
    "ipv4:HOST:PORT,HOST:PORT,... (client-side round-robin)"
)
# gRPC name schemes that list several receivers: the channel balances across them.
_BALANCED_PREFIXES = ("dns:", "ipv4:", "ipv6:")
# Each spooled request is prefixed with its record count, for the sent/rejected counters.
_COUNT = struct.Struct("<I")
# One export carries at most this much, well under the 4 MiB gRPC default of most receivers.
MAX_EXPORT_BYTES = 3 * MiB
MAX_EXPORT_REQUESTS = 64

_GRPC_METHODS: dict[Signal, tuple[str, Any]] = {
    Signal.LOGS: ("/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                  ExportLogsServiceResponse),
    Signal.TRACES: ("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    ExportTraceServiceResponse),
    Signal.METRICS: ("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                     ExportMetricsServiceResponse),
}
_REJECTED_FIELD = {
    Signal.LOGS: "rejected_log_records",
    Signal.TRACES: "rejected_spans",
    Signal.METRICS: "rejected_data_points",
}
# The OTLP specification's retryable gRPC codes (RESOURCE_EXHAUSTED only with RetryInfo), plus
# answers that say the *target* is wrong, not the data (bad credentials, not an OTLP endpoint,
# a proxy without its backend): the data is kept and retried, never thrown away.
_RETRYABLE_GRPC = frozenset({
    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND,
})
_RETRYABLE_HTTP = frozenset({
    300, 301, 302, 303, 307, 308, 401, 403, 404, 405, 407, 408, 421, 429, 500, 502, 503, 504,
})


# -- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ForwardTlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    """One `forward.targets[]` entry; every key is documented in docs/forwarding.md."""

    name: str
    endpoint: str
    signals: tuple[Signal, ...] = (Signal.LOGS, Signal.TRACES, Signal.METRICS)
    protocol: str = "grpc"
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold credentials
    compression: str = "gzip"
    timeout_s: float = 10.0
    tls: ForwardTlsConfig = field(default_factory=ForwardTlsConfig)
    spool_max_bytes: int = 64 * MiB
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    @property
    def secure(self) -> bool:
        return self.endpoint.startswith("https://")

    def grpc_target(self) -> str:
        """The channel target: `host:port`, or a `dns:///` name / `ipv4:` list for client-side
        balancing."""
        if self.endpoint.startswith(_BALANCED_PREFIXES):
            return self.endpoint
        parts = urlsplit(self.endpoint)
        host = parts.hostname or ""
        return f"[{host}]:{parts.port or 4317}" if ":" in host else f"{host}:{parts.port or 4317}"

    def http_url(self, signal: Signal) -> tuple[str, int, str]:
        """(host, port, path) of the OTLP/HTTP endpoint for `signal`."""
        parts = urlsplit(self.endpoint)
        port = parts.port or (443 if self.secure else 4318)
        return parts.hostname or "", port, f"{parts.path.rstrip('/')}/v1/{signal.value}"


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """`forward:` of the receiver config: where the masked stream goes next."""

    targets: tuple[ForwardTarget, ...] = ()

    @classmethod
    def from_section(cls, section: Section) -> ForwardConfig:
        targets: list[ForwardTarget] = []
        names: set[str] = set()
        for index, item in enumerate(section.section_list("targets")):
            target = _parse_target(item, index)
            if target is None:
                continue
            if target.name in names:
                item.error("name", f"got {target.name!r}; another target already has this name")
                continue
            names.add(target.name)
            targets.append(target)
        return cls(targets=tuple(targets))


def _parse_target(s: Section, index: int) -> ForwardTarget | None:
    ok = True
    name = s.get_str("name", str(index))
    if not _NAME_RE.match(name):
        s.error("name", f"got {name!r}; expected letters, digits, '.', '_' or '-' (at most 64), "
                        "it names the spool directory and the metrics label")
        ok = False
    protocol = s.get_str("protocol", "grpc", choices=PROTOCOLS)
    endpoint = s.get_str("endpoint", "")
    if not endpoint:
        s.error("endpoint", f"is required: {_ENDPOINT_FORMS}, e.g. http://jaeger:4317")
        ok = False
    elif not _valid_endpoint(endpoint, protocol):
        forms = _ENDPOINT_FORMS if protocol == "grpc" else "http://HOST:PORT[/PATH] or https://..."
        s.error("endpoint", f"got {endpoint!r}; expected {forms} (PORT from 1 to 65535)")
        ok = False
    signal_names = s.get_str_list("signals", [sig.value for sig in Signal])
    signals: list[Signal] = []
    for sig_name in signal_names:
        if sig_name not in {sig.value for sig in Signal}:
            s.error("signals", f"got {sig_name!r}; expected any of: logs, traces, metrics")
            ok = False
        elif Signal(sig_name) not in signals:
            signals.append(Signal(sig_name))
    if not signals and ok:
        s.error("signals", "must name at least one of: logs, traces, metrics")
        ok = False
    headers = parse_headers(s)
    basic = _basic_auth(endpoint) if ok else None
    if basic is not None:
        if any(name == "authorization" for name, _ in headers):
            s.error("headers", "has an Authorization header and the endpoint has user:password@ "
                               "too; give the credentials once")
            ok = False
        headers = (*headers, ("authorization", basic))
    compression = s.get_str("compression", "gzip", choices=COMPRESSIONS)
    timeout_s = s.get_duration("timeout_s", 10.0, minimum=0.01)
    t = s.section("tls")
    tls = ForwardTlsConfig(
        ca_file=_existing_file(t, "ca_file"),
        cert_file=_existing_file(t, "cert_file"),
        key_file=_existing_file(t, "key_file"),
        insecure_skip_verify=t.get_bool("insecure_skip_verify", False),
    )
    if bool(tls.cert_file) != bool(tls.key_file):
        t.error("cert_file" if tls.key_file else "key_file",
                "a client certificate needs both cert_file and key_file")
        ok = False
    if tls.insecure_skip_verify and protocol == "grpc":
        t.error("insecure_skip_verify", "got true; gRPC in Python cannot skip verification: "
                                        "give tls.ca_file with the server's CA instead")
        ok = False
    if t.present and endpoint and not endpoint.startswith("https://"):
        t.error("", f"is set but endpoint {endpoint!r} is not https://; use https:// for TLS")
        ok = False
    spool = s.section("spool")
    spool_max_bytes = spool.get_size("max_bytes", 64 * MiB, minimum=64 * 1024)
    backoff_initial_s = s.get_duration("backoff_initial_s", 0.5, minimum=0.01)
    backoff_max_s = s.get_duration("backoff_max_s", 30.0, minimum=0.01)
    if backoff_max_s < backoff_initial_s:
        s.error("backoff_max_s",
                f"got {backoff_max_s:g}s; expected at least backoff_initial_s ({backoff_initial_s:g}s)")
        ok = False
    if not ok:
        return None
    return ForwardTarget(
        name=name, endpoint=endpoint, signals=tuple(signals), protocol=protocol,
        headers=headers, compression=compression, timeout_s=timeout_s, tls=tls,
        spool_max_bytes=spool_max_bytes, backoff_initial_s=backoff_initial_s,
        backoff_max_s=backoff_max_s,
    )


def _basic_auth(endpoint: str) -> str | None:
    """`Basic …` from an endpoint's `user:password@` (Grafana Cloud's OTLP gateway, a collector
    behind basicauth), as curl and browsers do; None when it has none. Percent-escapes in the
    user and password are decoded, so a password may hold `@`, `:` or `/`."""
    if endpoint.startswith(_BALANCED_PREFIXES):
        return None
    parts = urlsplit(endpoint)
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _valid_endpoint(endpoint: str, protocol: str) -> bool:
    if protocol == "grpc" and endpoint.startswith("dns:///"):
        return bool(endpoint.removeprefix("dns:///").strip())
    if protocol == "grpc" and endpoint.startswith(("ipv4:", "ipv6:")):
        addresses = endpoint.split(":", 1)[1].split(",")
        return all(a.rpartition(":")[2].isdigit() and a.rpartition(":")[0] for a in addresses)
    if not valid_http_url(endpoint):
        return False
    return protocol != "grpc" or urlsplit(endpoint).path in ("", "/")


def _existing_file(section: Section, name: str) -> str | None:
    value = section.get_optional_str(name)
    if value and not Path(value).is_file():
        section.error(name, f"got {value!r}; expected the path of a readable file")
        return None
    return value or None


# -- exporters ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one export attempt came to."""

    ok: bool
    retryable: bool = False
    retry_after_s: float | None = None
    rejected: int = 0
    error: str = ""


class _GrpcExporter:
    """OTLP/gRPC with pre-serialised request bytes: no re-encoding on the way out."""

    def __init__(self, target: ForwardTarget, signal: Signal) -> None:
        self.target = target
        self.signal = signal
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 0),  # the spool and our backoff do the retrying
            # A channel that failed waits out its own reconnect backoff (up to 120 s by default)
            # before trying again; keep it no longer than ours so a returning target is seen.
            # grpc.min_reconnect_backoff_ms is also the connect timeout: long enough for a busy
            # target to answer, short enough that a dead one fails fast (UNAVAILABLE).
            ("grpc.initial_reconnect_backoff_ms", int(target.backoff_initial_s * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(min(target.timeout_s, 2.0) * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(target.backoff_max_s * 1000)),
            ("grpc.max_send_message_length", 64 * MiB),
        ]
        if target.endpoint.startswith(_BALANCED_PREFIXES):
            options.append(("grpc.lb_policy_name", "round_robin"))
        compression = (grpc.Compression.Gzip if target.compression == "gzip"
                       else grpc.Compression.NoCompression)
        if target.secure:
            tls = target.tls
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(tls.ca_file).read_bytes() if tls.ca_file else None,
                private_key=Path(tls.key_file).read_bytes() if tls.key_file else None,
                certificate_chain=Path(tls.cert_file).read_bytes() if tls.cert_file else None,
            )
            self.channel = grpc.secure_channel(target.grpc_target(), credentials, options,
                                               compression=compression)
        else:
            self.channel = grpc.insecure_channel(target.grpc_target(), options, compression=compression)
        path, response_type = _GRPC_METHODS[signal]
        self.response_type = response_type
        self.call = self.channel.unary_unary(path, request_serializer=None,
                                             response_deserializer=response_type.FromString)

    def export(self, payload: bytes) -> _Outcome:
        try:
            response, _ = self.call.with_call(
                payload, timeout=self.target.timeout_s, metadata=self.target.headers or None,
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            retry_after = _grpc_retry_delay(exc)
            retryable = code in _RETRYABLE_GRPC or (
                code is grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is not None
            )
            name = code.name if code is not None else "UNKNOWN"
            return _Outcome(False, retryable, retry_after, error=f"{name}: {details}")
        return _Outcome(True, rejected=_rejected(response, self.signal),
                        error=response.partial_success.error_message)

    def close(self) -> None:
        self.channel.close()


def _grpc_retry_delay(exc: grpc.RpcError) -> float | None:
    """The server's RetryInfo: our own receiver sends it as a trailer of its own; the Go
    collector puts it in the rich status (`grpc-status-details-bin`)."""
    trailers: Any = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        try:
            if key == "google.rpc.retryinfo-bin" and isinstance(value, bytes):
                return _duration_s(RetryInfo.FromString(value))
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                for detail in Status.FromString(value).details:
                    info = RetryInfo()
                    if detail.Unpack(info):
                        return _duration_s(info)
        except DecodeError:
            continue
    return None


def _duration_s(info: RetryInfo) -> float:
    return max(0.0, float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9))


def _rejected(response: Message, signal: Signal) -> int:
    partial = getattr(response, "partial_success", None)
    return int(getattr(partial, _REJECTED_FIELD[signal], 0) or 0)


class _HttpExporter:
    """OTLP/HTTP with binary protobuf bodies, one kept-alive connection."""

    def __init__(self, target: ForwardTarget, signal: Signal) -> None:
        self.target = target
        self.signal = signal
        self.host, self.port, self.path = target.http_url(signal)
        self.response_type = _GRPC_METHODS[signal][1]
        self.context: ssl.SSLContext | None = None
        if target.secure:
            tls = target.tls
            self.context = ssl.create_default_context(cafile=tls.ca_file)
            if tls.insecure_skip_verify:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
            if tls.cert_file and tls.key_file:
                self.context.load_cert_chain(tls.cert_file, tls.key_file)
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.context is not None:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.target.timeout_s, context=self.context)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.target.timeout_s)
        return self.conn

    def export(self, payload: bytes) -> _Outcome:
        headers = {"Content-Type": "application/x-protobuf", **dict(self.target.headers)}
        body = payload
        if self.target.compression == "gzip":
            body = gzip.compress(payload, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        try:
            conn = self._connection()
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return _Outcome(False, True, error=f"{type(exc).__name__}: {exc}")
        if 200 <= response.status < 300:
            rejected, message = 0, ""
            with contextlib.suppress(DecodeError):
                parsed = self.response_type.FromString(data)
                rejected = _rejected(parsed, self.signal)
                message = parsed.partial_success.error_message
            return _Outcome(True, rejected=rejected, error=message)
        if response.will_close:
            self.close()
        text = _http_error_text(data)
        return _Outcome(
            False, response.status in _RETRYABLE_HTTP,
            _retry_after(response.getheader("Retry-After")),
            error=f"HTTP {response.status}: {text}",
        )

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _http_error_text(data: bytes) -> str:
    """OTLP/HTTP errors carry a google.rpc.Status; plain text from anything else."""
    with contextlib.suppress(DecodeError):
        status = Status.FromString(data)
        if status.message:
            return str(status.message)
    return data[:200].decode("utf-8", "replace")


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds, whether given as a number or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


# -- the sink -----------------------------------------------------------------------------------
class _ForwardMetrics:
    def __init__(self, telemetry: ReceiverTelemetry) -> None:
        r = telemetry.registry
        labels = ["target", "signal"]
        self.sent_records = Counter("sluice_forward_sent_records",
                                    "Records a forward target accepted.", labels, registry=r)
        self.sent_requests = Counter("sluice_forward_sent_requests",
                                     "Export requests a forward target answered with success.",
                                     labels, registry=r)
        self.retried = Counter("sluice_forward_retried_requests",
                               "Export attempts that failed retryably and will be repeated.",
                               labels, registry=r)
        self.rejected = Counter("sluice_forward_rejected_records",
                                "Records a target refused through OTLP partial_success.",
                                labels, registry=r)
        self.dropped = Counter("sluice_forward_dropped_requests",
                               "Spooled requests lost: spool_full (oldest over spool.max_bytes) or "
                               "the status code of a non-retryable answer.",
                               [*labels, "reason"], registry=r)
        self.spooled_bytes = Counter("sluice_forward_spooled_bytes",
                                     "Bytes taken into a forward spool.", labels, registry=r)
        self.spool_bytes = Gauge("sluice_forward_spool_bytes",
                                 "Bytes of forward spool segments on disk.", labels, registry=r)
        self.spool_requests = Gauge("sluice_forward_spool_requests",
                                    "Export requests waiting in a forward spool.", labels, registry=r)


class _Sender(SpoolSender):
    """One target and signal: a spool and the thread that empties it."""

    def __init__(self, target: ForwardTarget, signal: Signal, spool: DiskSpool,
                 metrics: _ForwardMetrics) -> None:
        super().__init__(
            spool, Backoff(target.backoff_initial_s, target.backoff_max_s),
            label=f"forward {target.name}/{signal.value}",
            thread_name=f"sluice-forward-{target.name}-{signal.value}", log=log,
        )
        self.target = target
        self.signal = signal
        self.metrics = metrics
        self.labels = (target.name, signal.value)
        self.exporter: _GrpcExporter | _HttpExporter = (
            _GrpcExporter(target, signal) if target.protocol == "grpc" else _HttpExporter(target, signal)
        )
        self._acked_seq = 0  # the newest spool sequence this sender acknowledged
        self._isolate_through = 0  # send one request at a time until past this sequence
        metrics.spool_bytes.labels(*self.labels).set_function(lambda: spool.size_bytes)
        metrics.spool_requests.labels(*self.labels).set_function(lambda: spool.pending)

    def deliver_once(self) -> None:
        # After a combined export was refused as bad data, send its requests one at a time until
        # past it, so only the request the target refuses is dropped, not its 63 neighbours.
        single = self._isolate_through > self._acked_seq
        records = self.spool.peek(
            max_records=1 if single else MAX_EXPORT_REQUESTS, max_bytes=MAX_EXPORT_BYTES
        )
        if not records:
            self.spool.wait_for_records(1.0)
            return
        count = sum(_COUNT.unpack_from(r.data)[0] for r in records)
        payload = b"".join(memoryview(r.data)[_COUNT.size:] for r in records)
        outcome = self.exporter.export(payload)
        if outcome.retryable:
            self.metrics.retried.labels(*self.labels).inc()
            attempt = self.failed(outcome.error)
            self.wait_backoff(attempt, outcome.retry_after_s)
            return
        if not outcome.ok and len(records) > 1:
            self._isolate_through = records[-1].seq  # find the one bad request, keep the rest
            return
        if outcome.ok:
            # Counted before the ack: a flush that sees the spool empty sees the counts too.
            self.metrics.sent_requests.labels(*self.labels).inc(len(records))
            self.metrics.sent_records.labels(*self.labels).inc(max(0, count - outcome.rejected))
            if outcome.rejected:
                self.metrics.rejected.labels(*self.labels).inc(outcome.rejected)
                log.warning("forward %s/%s: target rejected %d records: %s", *self.labels,
                            outcome.rejected, redact_text(outcome.error))
            self.succeeded()
        self.spool.ack(records[-1].seq)
        self._acked_seq = records[-1].seq
        if outcome.ok:
            return
        reason = outcome.error.split(":", 1)[0]
        self.metrics.dropped.labels(*self.labels, reason).inc(len(records))
        log.warning("forward %s/%s: dropped %d records the target refused (%s)",
                    *self.labels, count, redact_text(outcome.error))
        with self.lock:  # the target is up, it only refused this data
            self.last_error = redact_text(outcome.error)
        self.pause(self.target.backoff_initial_s)  # never drain a spool at line rate


class ForwardSink:
    """Spools every batch for each target that takes its signal; senders deliver in order."""

    name = "forward"

    def __init__(self, config: ForwardConfig, telemetry: ReceiverTelemetry, spool_dir: Path) -> None:
        self.config = config
        self.telemetry = telemetry
        self.spool_dir = Path(spool_dir)
        self.metrics = _ForwardMetrics(telemetry)
        self._senders: list[_Sender] = []
        self._by_signal: dict[Signal, list[_Sender]] = {}
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        senders: list[_Sender] = []
        try:
            for target in self.config.targets:
                for signal in target.signals:
                    directory = self.spool_dir / target.name / signal.value
                    spool = DiskSpool(directory, target.spool_max_bytes)
                    senders.append(_Sender(target, signal, spool, self.metrics))
        except (OSError, ssl.SSLError) as exc:
            for sender in senders:
                sender.spool.close()
            raise SinkError(f"forward: cannot open spools or certificates: {exc}") from exc
        self._senders = senders
        self._by_signal = {}
        for sender in senders:
            self._by_signal.setdefault(sender.signal, []).append(sender)
            sender.start()
        self._started = True

    def consume(self, batch: Batch) -> None:
        if not self._started:
            raise SinkError("the forward sink is not started")
        # Derived batches (access records of HTTP server spans) are part of the stream too: a
        # logs target gets them like any other log record.
        for member in batch.family():
            self._consume_one(member)

    def _consume_one(self, batch: Batch) -> None:
        senders = self._by_signal.get(batch.signal)
        if not senders:
            return
        count = batch.record_count()
        if count == 0:
            return
        # Fields this receiver does not know (a newer OTLP's, or crafted ones) were never
        # masked: they do not leave. The other sinks only ever write the fields they know.
        batch.request.DiscardUnknownFields()
        data = _COUNT.pack(count) + batch.request.SerializeToString()
        for sender in senders:
            try:
                result = sender.spool.append([data])
            except (OSError, SluiceReceiverError) as exc:  # disk trouble, or consume after shutdown
                raise SinkError(f"forward spool {sender.spool.directory} write failed: {exc}") from exc
            if result.dropped:
                self.metrics.dropped.labels(*sender.labels, "spool_full").inc(result.dropped)
            self.metrics.spooled_bytes.labels(*sender.labels).inc(len(data))
        self.telemetry.bytes_written.labels("forward", batch.signal.value).inc(len(data) * len(senders))
        if batch.routes:
            for category, refs in batch.routes.items():
                if refs:
                    self.telemetry.written.labels(batch.signal.value, category, "forward").inc(len(refs))
        else:
            self.telemetry.written.labels(batch.signal.value, batch.signal.value, "forward").inc(count)

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Wait for every spool to empty; gives up on a target that keeps failing (the records
        are durable in its spool): see `flush_senders`."""
        if not self._started:
            return True
        return flush_senders(self._senders, timeout_s)

    def shutdown(self) -> None:
        """Stop the senders; unsent records stay in the spools for the next start. Idempotent."""
        senders, self._senders = self._senders, []
        self._by_signal = {}
        for sender in senders:
            sender.stop.set()
            sender.wake.set()
        for sender in senders:
            sender.close(sender.target.timeout_s + 1.0)
            sender.exporter.close()
        self._started = False

    def health(self) -> dict[str, Any]:
        """Per target: the worst state of its signals, spooled bytes and the last error. A target
        that is down degrades the receiver but does not fail it: its records are spooled."""
        targets: dict[str, dict[str, Any]] = {}
        order = {"ok": 0, "retrying": 1, "down": 2}
        for sender in list(self._senders):
            entry = targets.setdefault(sender.target.name, {
                "state": "ok", "endpoint": redact_url(sender.target.endpoint), "spool_bytes": 0,
                "spool_requests": 0, "dropped": 0, "last_error": "",
            })
            state = sender.state()
            if order[state] > order[entry["state"]]:
                entry["state"] = state
            entry["spool_bytes"] += sender.spool.size_bytes
            entry["spool_requests"] += sender.spool.pending
            entry["dropped"] += sender.spool.dropped_total
            with sender.lock:
                if sender.last_error:
                    entry["last_error"] = f"{sender.signal.value}: {sender.last_error}"
        overall = "ok" if self._started and all(t["state"] == "ok" for t in targets.values()) \
            else "degraded"
        return {"state": overall, "targets": targets}


__all__ = ["ForwardConfig", "ForwardSink", "ForwardTarget", "ForwardTlsConfig"]
