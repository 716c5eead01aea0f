"""`SyslogSink`: routed log records to syslog (RFC 5424/3164) over unix, UDP, TCP or TLS.

`consume` never touches the network: it formats the records of the chosen categories and
appends them to a bounded on-disk spool (`DiskSpool`) — that append is the durability point the
receiver's acknowledgement relies on. One background sender thread reads the spool in order,
sends, and acknowledges; a dead or slow syslog therefore costs spool space, never ingest time.

Plain TCP cannot tell a sender what the peer really read: bytes written just before the peer
closes are lost without an error. The sender therefore acknowledges a record only after the
connection is seen alive `confirm_delay_s` after the record went out; a connection found closed
makes it resend everything not yet confirmed. Delivery is at-least-once: a few duplicates
around an outage are possible, losses are not (UDP excepted, which cannot know).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter, Gauge

from sluice_collector.batch import Batch, Signal
from sluice_collector.configreader import Section
from sluice_collector.errors import SinkError, SluiceReceiverError
from sluice_collector.redact import redact_url
from sluice_collector.sinks._delivery.sender import Backoff
from sluice_collector.sinks._delivery.spool import DiskSpool, SpoolFull
from sluice_collector.sinks.syslog.format import (
    FACILITY_CODES,
    MIN_MESSAGE_BYTES,
    Framing,
    SyslogFormat,
    SyslogFormatter,
    frame,
    parse_facility,
)
from sluice_collector.telemetry import ReceiverTelemetry

log = logging.getLogger("sluice.syslog")

MiB = 1024 * 1024
DEFAULT_TARGETS = ("unix:///dev/log", "udp://127.0.0.1:514")
# `alerts`: what the alert rules fired and resolved (sinks/alerts) is what a syslog reader wants.
DEFAULT_CATEGORIES = ("security", "audit", "error", "alerts")
_TARGET_FORMS = "unix:///path/to/socket, udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT"


# -- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SyslogTarget:
    """One parsed `syslog.target` entry."""

    url: str  # as shown (health, metric labels, logs): a password in it is replaced
    scheme: str  # unix | udp | tcp | tls
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, url: str) -> SyslogTarget | None:
        """The target for `url`, or None when it is not one of the accepted forms."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            return None
        scheme = parts.scheme.lower()
        if scheme == "unix":
            path = (parts.netloc + parts.path) if parts.netloc else parts.path
            if not path.startswith("/") or parts.query or parts.fragment:
                return None
            return cls(redact_url(url), scheme, path=path)
        if scheme in ("udp", "tcp", "tls"):
            if not parts.hostname or port is None or not 0 < port <= 65535 or parts.path not in ("", "/"):
                return None
            return cls(redact_url(url), scheme, host=parts.hostname, port=port)
        return None


@dataclass(frozen=True, slots=True)
class SyslogTlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class SyslogConfig:
    """`syslog:` of the receiver config; every key is documented in docs/syslog.md."""

    enabled: bool = False
    targets: tuple[SyslogTarget, ...] = ()
    format: SyslogFormat = SyslogFormat.RFC5424
    framing: Framing | None = None  # None: octet-counting on TCP/TLS, LF on unix stream sockets
    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    facilities: dict[str, int] = field(default_factory=dict)
    sd_attributes: tuple[str, ...] = ()
    max_message_bytes: int = 8192
    tls: SyslogTlsConfig = field(default_factory=SyslogTlsConfig)
    spool_directory: Path | None = None
    spool_max_bytes: int = 64 * MiB
    spool_protected: tuple[str, ...] = ("audit",)
    connect_timeout_s: float = 5.0
    send_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    confirm_delay_s: float = 0.2
    hostname: str | None = None

    @classmethod
    def from_section(cls, section: Section) -> SyslogConfig:
        targets = _parse_targets(section)
        if section.has("enabled"):
            enabled = section.get_bool("enabled", False)
        else:
            enabled = section.has("target") and bool(targets)
        if not targets:
            targets = tuple(t for t in map(SyslogTarget.parse, DEFAULT_TARGETS) if t is not None)
        fmt = section.get_str("format", "rfc5424", choices=[f.value for f in SyslogFormat])
        framing_text = section.get_str("framing", "", choices=["", *(f.value for f in Framing)])
        facilities: dict[str, int] = {}
        fac = section.section("facilities")
        names = fac.keys()
        for name in names:
            value = fac.raw(name)
            code = parse_facility(value) if isinstance(value, str | int) else None
            if code is None:
                fac.error(
                    name,
                    f"got {value!r}; expected a facility name ({', '.join(FACILITY_CODES)}) "
                    "or a number from 0 to 23",
                )
            else:
                facilities[name] = code
        tls_section = section.section("tls")
        tls = SyslogTlsConfig(
            ca_file=_existing_file(tls_section, "ca_file"),
            cert_file=_existing_file(tls_section, "cert_file"),
            key_file=_existing_file(tls_section, "key_file"),
            server_name=tls_section.get_optional_str("server_name"),
            verify=tls_section.get_bool("verify", True),
        )
        if bool(tls.cert_file) != bool(tls.key_file):
            tls_section.error(
                "cert_file" if tls.key_file else "key_file",
                "a client certificate needs both cert_file and key_file",
            )
        spool = section.section("spool")
        directory = spool.get_optional_str("directory")
        backoff_initial_s = section.get_duration("backoff_initial_s", 0.5, minimum=0.01)
        backoff_max_s = section.get_duration("backoff_max_s", 30.0, minimum=0.01)
        if backoff_max_s < backoff_initial_s:
            section.error(
                "backoff_max_s",
                f"got {backoff_max_s:g}s; expected at least backoff_initial_s ({backoff_initial_s:g}s)",
            )
            backoff_max_s = backoff_initial_s
        hostname = section.get_optional_str("hostname")
        return cls(
            enabled=enabled,
            targets=targets,
            format=SyslogFormat(fmt),
            framing=Framing(framing_text) if framing_text else None,
            categories=tuple(section.get_str_list("categories", list(DEFAULT_CATEGORIES))),
            facilities=facilities,
            sd_attributes=tuple(section.get_str_list("sd_attributes", [])),
            max_message_bytes=section.get_int(
                "max_message_bytes", 8192, minimum=MIN_MESSAGE_BYTES, maximum=64 * MiB
            ),
            tls=tls,
            spool_directory=Path(directory) if directory else None,
            spool_max_bytes=spool.get_size("max_bytes", 64 * MiB, minimum=64 * 1024),
            spool_protected=tuple(spool.get_str_list("protected", ["audit"])),
            connect_timeout_s=section.get_duration("connect_timeout_s", 5.0, minimum=0.01),
            send_timeout_s=section.get_duration("send_timeout_s", 10.0, minimum=0.01),
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            hostname=hostname or None,
        )


def _parse_targets(section: Section) -> tuple[SyslogTarget, ...]:
    raw = section.raw("target")
    if raw is None:
        return ()
    items: list[tuple[str, Any]]
    if isinstance(raw, str):
        items = [("target", raw)]
    elif isinstance(raw, list) and raw:
        items = [(f"target[{i}]", v) for i, v in enumerate(raw)]
    else:
        section.error("target", f"got {raw!r}; expected one of {_TARGET_FORMS}, or a list of them")
        return ()
    out: list[SyslogTarget] = []
    for key, value in items:
        target = SyslogTarget.parse(value) if isinstance(value, str) else None
        if target is None:
            section.error(key, f"got {value!r}; expected {_TARGET_FORMS} (PORT from 1 to 65535)")
        else:
            out.append(target)
    return tuple(out)


def _existing_file(section: Section, name: str) -> str | None:
    value = section.get_optional_str(name)
    if value and not Path(value).is_file():
        section.error(name, f"got {value!r}; expected the path of a readable file")
        return None
    return value or None


# -- connections --------------------------------------------------------------------------------
class _Connection:
    """One open socket to a target; stream transports get framed bytes, datagrams one message."""

    def __init__(self, target: SyslogTarget, sock: socket.socket, *, datagram: bool,
                 framing: Framing, send_timeout_s: float) -> None:
        sock.settimeout(send_timeout_s)
        self.send_timeout_s = send_timeout_s
        self.target = target
        self.sock = sock
        self.datagram = datagram
        self.framing = framing

    def send(self, messages: list[bytes]) -> list[bool]:
        """Send in order; per message False when it can never fit (datagram too large)."""
        if not self.datagram:
            self.sock.sendall(b"".join(frame(m, self.framing) for m in messages))
            return [True] * len(messages)
        sent = []
        for message in messages:
            try:
                self.sock.send(message)
                sent.append(True)
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    raise
                sent.append(False)
        return sent

    def alive(self) -> bool:
        """Whether the peer still has the connection; syslog servers never send, so anything
        readable is a close, a reset, or (TLS) protocol housekeeping such as session tickets."""
        if self.datagram:
            # UDP learns of a closed port from ICMP, reported as a pending socket error.
            return self.target.scheme != "udp" or self.sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ERROR
            ) == 0
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable and not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
                return True
            self.sock.setblocking(False)
            try:
                while True:
                    if not self.sock.recv(4096):
                        return False
            finally:
                self.sock.settimeout(self.send_timeout_s)
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        except OSError:
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _connect(
    target: SyslogTarget, config: SyslogConfig, tls_context: ssl.SSLContext | None
) -> _Connection:
    timeout = config.connect_timeout_s
    stream_framing = config.framing or Framing.OCTET_COUNTING
    conn: _Connection
    if target.scheme == "unix":
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.settimeout(timeout)
            try:
                sock.connect(target.path)
            except OSError:
                sock.close()
                raise
            conn = _Connection(target, sock, datagram=True, framing=stream_framing,
                               send_timeout_s=config.send_timeout_s)
        except OSError as exc:
            if exc.errno != errno.EPROTOTYPE:
                raise
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(target.path)
            except OSError:
                sock.close()
                raise
            conn = _Connection(target, sock, datagram=False, framing=config.framing or Framing.LF,
                               send_timeout_s=config.send_timeout_s)
    elif target.scheme == "udp":
        family, kind, proto, _, address = socket.getaddrinfo(
            target.host, target.port, type=socket.SOCK_DGRAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.connect(address)
        conn = _Connection(target, sock, datagram=True, framing=stream_framing,
                           send_timeout_s=config.send_timeout_s)
    else:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if target.scheme == "tls":
            assert tls_context is not None
            try:
                sock = tls_context.wrap_socket(
                    sock, server_hostname=config.tls.server_name or target.host
                )
            except (OSError, ssl.SSLError):
                sock.close()
                raise
        conn = _Connection(target, sock, datagram=False, framing=stream_framing,
                           send_timeout_s=config.send_timeout_s)
    return conn


def _tls_context(tls: SyslogTlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


# -- the sink -----------------------------------------------------------------------------------
class SyslogSink:
    """Spools the records of `config.categories` and sends them to the first reachable target."""

    name = "syslog"

    def __init__(self, config: SyslogConfig, telemetry: ReceiverTelemetry, spool_dir: Path) -> None:
        self.config = config
        self.telemetry = telemetry
        self.spool_dir = config.spool_directory or spool_dir
        self.formatter = SyslogFormatter(
            syslog_format=config.format, facilities=config.facilities,
            sd_attributes=config.sd_attributes, max_message_bytes=config.max_message_bytes,
            hostname=config.hostname,
        )
        self._categories = frozenset(config.categories)
        self._protected = frozenset(config.spool_protected)
        self._spool: DiskSpool | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # cuts a backoff short: set by force_flush and shutdown
        self._backoff_policy = Backoff(config.backoff_initial_s, config.backoff_max_s)
        self._failed_rounds = 0  # rounds in which no target could be reached
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._down_since: float | None = None
        self._last_error = ""
        r = telemetry.registry
        self.m_sent = Counter("sluice_syslog_sent", "Records delivered to a syslog target.",
                              ["target"], registry=r)
        self.m_spooled = Counter("sluice_syslog_spooled", "Records taken into the syslog spool.",
                                 ["category"], registry=r)
        self.m_dropped = Counter("sluice_syslog_dropped",
                                 "Records lost: spool_full (oldest ordinary records over "
                                 "spool.max_bytes) or too_large (a datagram the target refuses).",
                                 ["reason"], registry=r)
        self.m_truncated = Counter("sluice_syslog_truncated",
                                   "Records cut to max_message_bytes.", ["category"], registry=r)
        self.m_reconnects = Counter("sluice_syslog_reconnects",
                                    "Connections opened to a target after the first.", ["target"],
                                    registry=r)
        self.m_connect_errors = Counter("sluice_syslog_connect_errors",
                                        "Failed connection attempts.", ["target"], registry=r)
        self.m_send_errors = Counter("sluice_syslog_send_errors",
                                     "Connections lost while sending (records are resent).",
                                     ["target"], registry=r)
        self.m_spool_records = Gauge("sluice_syslog_spool_records",
                                     "Records waiting in the syslog spool.", registry=r)
        self.m_spool_bytes = Gauge("sluice_syslog_spool_bytes",
                                   "Bytes of syslog spool segments on disk.", registry=r)
        self.m_spool_records.set_function(lambda: self._spool.pending if self._spool else 0)
        self.m_spool_bytes.set_function(lambda: self._spool.size_bytes if self._spool else 0)
        self._connected_once: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        if any(t.scheme == "tls" for t in self.config.targets) and self._tls_context is None:
            # Unreadable keys or CA files fail the start, not every connection attempt after it.
            try:
                self._tls_context = _tls_context(self.config.tls)
            except (OSError, ssl.SSLError) as exc:
                raise SinkError(f"syslog.tls: cannot load the certificates: {exc}") from exc
        try:
            self._spool = DiskSpool(self.spool_dir, self.config.spool_max_bytes)
        except OSError as exc:
            raise SinkError(f"syslog spool {self.spool_dir} cannot be opened: {exc}") from exc
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sluice-syslog-sender", daemon=True)
        self._thread.start()

    def consume(self, batch: Batch) -> None:
        members = [m for m in batch.family() if m.signal is Signal.LOGS]
        if not members:
            return
        spool = self._spool
        if spool is None:
            raise SinkError("the syslog sink is not started")
        messages: list[bytes] = []
        protected: list[bool] = []
        counts: dict[str, int] = {}
        routes = [item for member in members for item in member.routes.items()]
        for category, refs in routes:
            if category not in self._categories or not refs:
                continue
            is_protected = category in self._protected
            truncated = 0
            size = 0
            for resource_logs, _scope, record in refs:
                formatted = self.formatter(category, resource_logs.resource, record)
                messages.append(formatted.data)
                protected.append(is_protected)
                truncated += formatted.truncated
                size += len(formatted.data)
            counts[category] = counts.get(category, 0) + len(refs)
            if truncated:
                self.m_truncated.labels(category).inc(truncated)
            self.telemetry.bytes_written.labels("syslog", category).inc(size)
        if not messages:
            return
        try:
            result = spool.append(messages, protected)
        except SpoolFull as exc:
            raise SinkError(str(exc), retry_after_s=self.config.backoff_max_s) from exc
        except (OSError, SluiceReceiverError) as exc:  # disk trouble, or consume after shutdown
            raise SinkError(f"syslog spool {self.spool_dir} write failed: {exc}") from exc
        if result.dropped:
            self.m_dropped.labels("spool_full").inc(result.dropped)
        for category, n in counts.items():
            self.m_spooled.labels(category).inc(n)
            self.telemetry.written.labels(Signal.LOGS.value, category, "syslog").inc(n)

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Wait for the spool to empty. A sender waiting out a backoff retries at once; if that
        round of connection attempts fails too, give up: the records are durable in the spool,
        and waiting for a dead target would only hold up a shutdown."""
        spool = self._spool
        if spool is None:
            return True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            failed_rounds = self._failed_rounds
        self._wake.set()
        while True:
            if spool.wait_until_empty(0.05):
                with self._lock:  # the sender counts what it acknowledged under this lock
                    return True
            with self._lock:
                gave_up = self._failed_rounds > failed_rounds
            if gave_up or (deadline is not None and time.monotonic() >= deadline):
                return False
            if self._thread is None or not self._thread.is_alive():
                return False

    def shutdown(self) -> None:
        """Stop the sender; unsent records stay in the spool for the next start. Idempotent."""
        self._stop.set()
        self._wake.set()
        if self._spool is not None:
            self._spool.close()
        if self._thread is not None:
            self._thread.join(self.config.send_timeout_s + self.config.connect_timeout_s + 1.0)
            self._thread = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def health(self) -> dict[str, Any]:
        spool = self._spool
        with self._lock:
            conn = self._conn
            pending = spool.pending if spool is not None else 0
            state = "ok" if conn is not None and pending < 10_000 else "degraded"
            if self._thread is None:
                state = "degraded"
            return {
                "state": state,
                "target": conn.target.url if conn is not None else None,
                "spool_records": pending,
                "spool_bytes": spool.size_bytes if spool is not None else 0,
                "dropped": spool.dropped_total if spool is not None else 0,
                "last_error": self._last_error,
            }

    # -- the sender thread ----------------------------------------------------------------------
    def _run(self) -> None:
        spool = self._spool
        assert spool is not None
        confirmed = 0  # everything up to here is acknowledged in the spool
        sent_through = 0  # everything up to here went out on the current connection
        checkpoints: deque[tuple[int, float]] = deque()  # (last seq of one send, when)
        attempt = 0
        connected_at = 0.0
        delay_s = self.config.confirm_delay_s
        while not self._stop.is_set():
            conn = self._conn
            if conn is None:
                conn = self._connect_any(self.config.targets)
                if conn is None:
                    self._backoff(attempt)
                    attempt += 1
                    continue
                connected_at = time.monotonic()
                sent_through = confirmed
                checkpoints.clear()
            try:
                now = time.monotonic()
                if checkpoints and now - checkpoints[0][1] >= delay_s:
                    through = 0
                    while checkpoints and now - checkpoints[0][1] >= delay_s:
                        through = checkpoints.popleft()[0]
                    if not conn.alive():
                        raise ConnectionResetError("the peer closed the connection")
                    # Under the lock, so that force_flush, which returns once the spool is
                    # empty, also finds these records counted as sent.
                    with self._lock:
                        freed = spool.ack(through)
                        if freed:
                            self.m_sent.labels(conn.target.url).inc(freed)
                    confirmed = through
                    attempt = 0  # only a confirmed delivery proves the target works again
                if not checkpoints and now - connected_at >= self.config.backoff_max_s:
                    # On a fallback target: look for a preferred one again, between sends.
                    connected_at = now
                    if self._switch_to_preferred(conn):
                        continue
                records = spool.peek(max_records=256, max_bytes=256 * 1024, after_seq=sent_through)
                if not records:
                    spool.wait_for_records(delay_s if checkpoints else 1.0, after_seq=sent_through)
                    continue
                results = conn.send([r.data for r in records])
                too_large = results.count(False)
                if too_large:
                    self.m_dropped.labels("too_large").inc(too_large)
                sent_through = records[-1].seq
                checkpoints.append((sent_through, time.monotonic()))
            except OSError as exc:
                self.m_send_errors.labels(conn.target.url).inc()
                self._lose(conn, f"{type(exc).__name__}: {exc}")
                sent_through = confirmed
                checkpoints.clear()
                # UDP "connects" to a closed port just fine: without a wait here a dead UDP
                # target would be a busy loop of connect, send, refused.
                self._backoff(attempt)
                attempt += 1
            except Exception as exc:  # a bug must not silently end delivery: log, back off, retry
                log.exception("syslog: sender failed; retrying")
                self._lose(conn, f"{type(exc).__name__}: {exc}")
                sent_through = confirmed
                checkpoints.clear()
                self._backoff(attempt)
                attempt += 1
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _backoff(self, attempt: int) -> None:
        """Capped exponential backoff with jitter (`attempt` counts from 0), cut short by
        force_flush or shutdown."""
        self._wake.wait(self._backoff_policy.delay_s(attempt + 1))
        self._wake.clear()

    def _switch_to_preferred(self, current: _Connection) -> bool:
        index = self.config.targets.index(current.target)
        if index == 0:
            return False
        conn = self._connect_any(self.config.targets[:index], quiet=True)
        if conn is None:
            return False
        current.close()
        return True

    def _connect_any(
        self, targets: tuple[SyslogTarget, ...], *, quiet: bool = False
    ) -> _Connection | None:
        """The first target of `targets` that accepts a connection (it becomes current)."""
        errors = []
        for target in targets:
            if self._stop.is_set():
                return None
            try:
                conn = _connect(target, self.config, self._tls_context)
            except (OSError, ssl.SSLError) as exc:
                self.m_connect_errors.labels(target.url).inc()
                errors.append(f"{target.url}: {exc}")
                continue
            if target.url in self._connected_once:
                self.m_reconnects.labels(target.url).inc()
            self._connected_once.add(target.url)
            with self._lock:
                was_down = self._down_since
                self._conn = conn
                self._down_since = None
            if was_down is not None:
                log.warning("syslog: connected to %s after %.1fs down", target.url,
                            time.monotonic() - was_down)
            else:
                log.info("syslog: connected to %s", target.url)
            return conn
        if quiet:
            return None
        message = "; ".join(errors)
        with self._lock:
            self._failed_rounds += 1
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
            self._last_error = message
        if first:
            log.warning("syslog: no target reachable, spooling (%s)", message)
        return None

    def _lose(self, conn: _Connection, reason: str) -> None:
        conn.close()
        with self._lock:
            self._conn = None
            self._last_error = f"{conn.target.url}: {reason}"
        log.warning("syslog: lost %s (%s); resending what was not confirmed", conn.target.url, reason)
