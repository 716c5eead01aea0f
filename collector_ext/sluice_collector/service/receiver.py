"""Assembly and lifecycle of one receiver: sinks start before it listens; it stops listening
before the sinks drain, so an acknowledged record is never left behind.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from prometheus_client import Counter

from sluice_collector import __version__, memory
from sluice_collector.batch import Signal
from sluice_collector.errors import SluiceReceiverError
from sluice_collector.ingest import Caller, Encoding, IngestCore
from sluice_collector.ingest.peers import Peers, PeerServer, socket_path
from sluice_collector.pipeline import Pipeline, Stage
from sluice_collector.processors.access import AccessRecordDeriver
from sluice_collector.processors.masking import SecretMasker
from sluice_collector.processors.routing import CategoryRouter
from sluice_collector.processors.validate import RecordValidator
from sluice_collector.receivers.asgi_server import AsgiServer, ConnectionLimits, HttpMetrics, ServerTls
from sluice_collector.receivers.otlp_grpc import OtlpGrpcReceiver, listen_problem
from sluice_collector.receivers.otlp_http import HttpLimits, OtlpHttpApp
from sluice_collector.service.config import ReceiverConfig
from sluice_collector.service.dirlock import DirectoryInUse, DirectoryLock
from sluice_collector.service.status import StatusServer
from sluice_collector.service.summary import ActivityReporter
from sluice_collector.sinks.base import Sink
from sluice_collector.sinks.files.retention import disk_report, disk_usage
from sluice_collector.telemetry import ReceiverTelemetry

if TYPE_CHECKING:
    from sluice_collector.query.core import QueryCore
    from sluice_collector.query.service import LogQueryService
    from sluice_collector.sinks.files.auditchain import ChainBreak
    from sluice_collector.sinks.files.auditmonitor import AuditChainMonitor
    from sluice_collector.sinks.files.config import FilePolicy
    from sluice_collector.sinks.files.sink import RotatingFileSink

log = logging.getLogger("sluice.receiver")


class ListenError(SluiceReceiverError):
    """The receiver could not bind its listening address."""


class DirectoryBusy(SluiceReceiverError):
    """Another receiver (or `--workers` supervisor) holds `files.directory`."""


def build_sinks(
    config: ReceiverConfig, telemetry: ReceiverTelemetry, *, worker_index: int | None = None,
    alerts_clock: Callable[[], float] = time.time,
) -> list[Sink]:
    """The sinks the config asks for, files first: it is the record of truth; alerts last: it
    counts only what every other sink took, and writes its records to them.

    `worker_index` is set when several receiver processes share one port (`--workers`): files
    are then written under a cross-process lock, only worker 0 sweeps retention, and each
    worker keeps a spool (and alert state) of its own. `alerts_clock` is the alert rules'
    clock (tests inject one to cross windows without waiting).
    """
    sinks: list[Sink] = []
    policies: Mapping[str, FilePolicy] = config.files.categories
    files: RotatingFileSink | None = None
    if config.files.enabled:
        from sluice_collector.sinks.files.sink import RotatingFileSink

        files = RotatingFileSink(config.files, telemetry, shared=worker_index is not None,
                                 primary=not worker_index)
        policies = files.policies  # live: dynamic categories get retention too
        sinks.append(files)
    if config.syslog.enabled:
        from sluice_collector.sinks.syslog.sink import SyslogSink

        spool_dir = config.files.directory / ".spool" / "syslog"
        if worker_index is not None:
            spool_dir = spool_dir / f"worker-{worker_index}"
        sinks.append(SyslogSink(config.syslog, telemetry, spool_dir))
    if config.forward.targets:
        from sluice_collector.sinks.forward.sink import ForwardSink

        spool_dir = config.files.directory / ".spool" / "forward"
        if worker_index is not None:
            spool_dir = spool_dir / f"worker-{worker_index}"
        sinks.append(ForwardSink(config.forward, telemetry, spool_dir))
    if config.query.enabled:
        # Last: the index is a copy of what the files hold, never ahead of them.
        if files is not None and config.files.format == "json":
            # A process of its own follows the files, off the acknowledgement path; as a sink
            # it only holds acknowledgements when the index falls too far behind.
            from sluice_collector.sinks.index.client import IndexClient
            from sluice_collector.sinks.index.server import IndexSpec

            index = IndexClient(
                IndexSpec(config.files, config.query.index_categories,
                          logging.getLogger().getEffectiveLevel()),
                telemetry, owner=not worker_index,
                lag_limit_bytes=config.query.index_lag_limit_mb << 20,
            )
            files.follow(index, config.query.index_categories)
            sinks.append(index)
        else:
            # Inline: no JSON files to follow. If it fails, the client's retry skips the sinks
            # before it (Pipeline: nothing is stored twice).
            from sluice_collector.query.store import IndexStore
            from sluice_collector.sinks.index.sink import IndexSink

            sinks.append(IndexSink(
                IndexStore.for_directory(config.files.directory), policies,
                index_categories=config.query.index_categories, trace_url=config.files.trace_url,
                sweep_interval_s=config.files.retention_check_interval_s, sweeps=not worker_index,
            ))
    if config.alerts.enabled:
        from sluice_collector.sinks.alerts.sink import AlertsSink

        state_dir = config.files.directory / ".alerts"
        if worker_index is not None:
            state_dir = state_dir / f"worker-{worker_index}"
        sinks.append(AlertsSink(config.alerts, telemetry, state_dir, record_sinks=tuple(sinks),
                                clock=alerts_clock))
    return sinks


class Receiver:
    """One OTLP receiver process (or one worker of several sharing a port)."""

    def __init__(
        self,
        config: ReceiverConfig,
        *,
        sinks: Sequence[Sink] | None = None,
        extra_sinks: Sequence[Sink] = (),
        worker_index: int | None = None,
        peers: tuple[Path, int] | None = None,
        alerts_clock: Callable[[], float] = time.time,
    ) -> None:
        """`sinks` replaces the sinks the config asks for (tests, embedding); `extra_sinks` run
        after them, in order. `peers` — (directory, number of workers) — makes this worker
        (`worker_index`) hand requests to idle fellow workers (`ingest/peers.py`)."""
        self.config = config
        memory.tune_malloc()  # big requests must not leave big buffers resident (memory.py)
        self.telemetry = ReceiverTelemetry()
        # Masking comes first: it scans the request's encoded bytes, whose record positions
        # must still match the decoded request (validation may remove records).
        stages: list[Stage] = []
        if config.masking.enabled:
            stages.append(SecretMasker(config.masking, self.telemetry))
        stages.append(RecordValidator())
        stages.append(CategoryRouter(config.routing, known=config.masking.categories.keys()))
        if config.access_from_spans.enabled:
            # Last: it reads masked, validated spans and the router's access routes, and what
            # it derives (a routed LOGS batch) needs no stage after it.
            stages.append(AccessRecordDeriver(config.access_from_spans, self.telemetry))
        # The directory is claimed only when the receiver writes it itself (service/dirlock.py):
        # a standalone receiver whose sinks come from the config; `--workers` workers share
        # their supervisor's claim, and an embedding that passes its own sinks owns the question.
        self._dir_lock = DirectoryLock(config.files.directory) \
            if sinks is None and worker_index is None else None
        self.sinks = list(sinks) if sinks is not None else build_sinks(
            config, self.telemetry, worker_index=worker_index, alerts_clock=alerts_clock
        )
        self.sinks.extend(extra_sinks)
        self.pipeline = Pipeline(stages, self.sinks, self.telemetry)
        self.ingest = IngestCore(self.pipeline, config.ingest, self.telemetry)
        self._peer_server: PeerServer | None = None
        if peers is not None and worker_index is not None:
            directory, count = peers
            self._peer_server = PeerServer(socket_path(directory, worker_index),
                                           self.ingest.take_over, config.ingest.queue.max_processing)
            self.ingest.peers = Peers(
                [socket_path(directory, index) for index in range(count) if index != worker_index],
                Counter("sluice_worker_handoffs", "Requests this worker offered to another "
                        "worker while its own turn was taken, by what that worker did (taken, "
                        "busy, unreachable, timeout).", ["outcome"], registry=self.telemetry.registry),
            )
        # The read core: the gRPC LogQuery service and the viewer's JSON API both call it.
        self._query: QueryCore | None = None
        self._query_service: LogQueryService | None = None
        if config.query.enabled:
            from sluice_collector.query.core import QueryCore
            from sluice_collector.query.store import IndexStore
            from sluice_collector.sinks.index.client import IndexClient

            index = next((s for s in self.sinks if isinstance(s, IndexClient)), None)
            chain = config.files.audit_chain
            files = next((s for s in self.sinks if hasattr(s, "audit_templates")), None)
            self._query = QueryCore(
                config.query, IndexStore.for_directory(config.files.directory), self.ingest,
                files_directory=Path(config.files.directory),
                chain_key=chain.key if chain.enabled else None,
                audit_templates=files.audit_templates() if files is not None else (),
                # Other workers' commits reach tails as the index process's notices; only an
                # inline index written by several processes is polled.
                shared_index=worker_index is not None and index is None,
                sync=index.sync if index is not None else None,
            )
        self._reuse_port = worker_index is not None
        self.activity = ActivityReporter(
            self.telemetry, config.telemetry.summary_interval_s,
            prefix="" if worker_index is None else f"worker {worker_index}: ")
        self._chain_monitor: AuditChainMonitor | None = None
        self._grpc: OtlpGrpcReceiver | None = None
        self._http_app: OtlpHttpApp | None = None
        self._http_server: AsgiServer | None = None
        self._status: StatusServer | None = None
        self._viewer: Any = None
        self.port = 0
        self.http_port = 0
        self.status_port = 0
        self._started_at = 0.0
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False

    @property
    def endpoint(self) -> str:
        """The OTLP/gRPC address actually bound (port 0 in the config resolved)."""
        host = self.config.receivers.grpc.endpoint.rpartition(":")[0]
        return f"{host}:{self.port}"

    @property
    def http_endpoint(self) -> str:
        """The OTLP/HTTP address actually bound ("" when OTLP/HTTP is off)."""
        if not self.http_port:
            return ""
        host = self.config.receivers.http.endpoint.rpartition(":")[0]
        return f"{host}:{self.http_port}"

    def describe(self) -> str:
        """Where it listens, for the ready line:
        ``otlp grpc on H:P[, otlp http on H:P][, telemetry on URL]``."""
        parts = []
        if self.port:
            parts.append(f"otlp grpc on {self.endpoint}")
        if self.http_port:
            parts.append(f"otlp http on {self.http_endpoint}")
        if self.status_port:
            parts.append(f"telemetry on http://127.0.0.1:{self.status_port}")
        return ", ".join(parts)

    @property
    def viewer_url(self) -> str:
        """Where the viewer is (docs/viewer.md); "" when the query API or the port is off."""
        if self._viewer is None or not self.status_port:
            return ""
        host = self.config.telemetry.listen.rpartition(":")[0].strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.status_port}/ui/"

    def start(self) -> None:
        """Start sinks, then the status port, then listen. Raises on any failure."""
        started: list[Sink] = []
        if self._dir_lock is not None:
            try:
                self._dir_lock.acquire()
            except DirectoryInUse as exc:
                raise DirectoryBusy(str(exc)) from None
        try:
            for sink in self.sinks:
                sink.start()
                started.append(sink)
            if self._query is not None:
                self._query.open()
            self._start_chain_monitor()
            if self._peer_server is not None:
                self._peer_server.start()
            if self.config.telemetry.listen:
                try:
                    self._status = StatusServer(
                        self.config.telemetry.listen, self.telemetry, self.health,
                        viewer=self._viewer_app(),
                    )
                except OSError as exc:
                    raise ListenError(
                        f"telemetry.listen: cannot listen on {self.config.telemetry.listen}: "
                        f"{exc.strerror or exc}; pick a free port or set telemetry.listen: \"\""
                    ) from exc
                self.status_port = self._status.port
                self._status.start()
            if self.config.receivers.grpc.endpoint:
                self._start_grpc()
            if self.config.receivers.http.endpoint:
                self._start_http()
            self._started_at = time.time()
            self.activity.start()
        except BaseException:
            self._stop_front_doors(0)
            self._stop_peers(0)
            if self._chain_monitor is not None:
                self._chain_monitor.stop()
            for sink in reversed(started):
                sink.shutdown()
            if self._status is not None:
                self._status.stop()
            if self._dir_lock is not None:
                self._dir_lock.release()
            raise

    def _viewer_app(self) -> Any:
        """The viewer (query/web.py) on the telemetry port, whenever the query API is on."""
        if self._query is None:
            return None
        from sluice_collector.query.web import ViewerApp

        self._viewer = ViewerApp(self._query, categories=list(self.config.files.categories))
        return self._viewer

    def _start_chain_monitor(self) -> None:
        """Worker 0 verifies the audit chain every `files.audit_chain.verify_interval_s`."""
        from sluice_collector.sinks.files.auditmonitor import AuditChainMonitor
        from sluice_collector.sinks.files.sink import RotatingFileSink

        interval_s = self.config.files.audit_chain.verify_interval_s
        files = next((s for s in self.sinks if isinstance(s, RotatingFileSink)), None)
        if files is None or not files.primary or files.chain_hasher is None or interval_s <= 0:
            return
        self._chain_monitor = AuditChainMonitor(
            files.directory, files.chain_hasher, files.audit_templates(), self.telemetry.registry,
            interval_s=interval_s, on_break=self._report_chain_break,
        )
        self._chain_monitor.start()

    def _report_chain_break(self, set_rel: str, where: ChainBreak) -> bool:
        """One `system` record, event `audit.chain.broken`, through the same ingest call as
        every record (so it is masked, routed, written and forwarded like them)."""
        log.error("audit chain of %s is broken: %s", set_rel, where)
        request = chain_broken_request(set_rel, where)
        try:
            self.ingest.export(Signal.LOGS, request.SerializeToString(), Encoding.PROTOBUF, Caller())
        except SluiceReceiverError as exc:
            log.warning("cannot record that the audit chain of %s is broken (will retry): %s",
                        set_rel, exc)
            return False
        return True

    def _start_grpc(self) -> None:
        """The OTLP/gRPC front door, the health service and (when on) the query API."""
        grpc_config = self.config.receivers.grpc
        # Checked before grpc tries: its own failure is a raw core log line on stderr.
        problem = listen_problem(grpc_config.endpoint, reuse_port=self._reuse_port)
        if problem:
            raise ListenError(
                f"receivers.otlp.protocols.grpc.endpoint: cannot listen on {grpc_config.endpoint}: "
                f"{problem}; pick a free port (or stop what holds it)"
            )
        if self._query is not None:
            from sluice_collector.query.service import LogQueryService

            self._query_service = LogQueryService(self._query)
        front = OtlpGrpcReceiver(
            grpc_config, self.ingest, max_request_bytes=self.config.ingest.max_request_bytes,
            reuse_port=self._reuse_port,
            services=[self._query_service] if self._query_service else [],
        )
        port = front.start()
        if port == 0:
            front.stop(0)
            raise ListenError(
                f"receivers.otlp.protocols.grpc.endpoint: cannot listen on "
                f"{grpc_config.endpoint} (address in use or not available); pick a free port"
            )
        self._grpc, self.port = front, port

    def _start_http(self) -> None:
        """The OTLP/HTTP front door: an ASGI app on uvicorn, on a thread of its own."""
        http = self.config.receivers.http
        queue = self.config.ingest.queue
        metrics = HttpMetrics(self.telemetry.registry)
        self._http_app = OtlpHttpApp(
            self.ingest,
            limits=HttpLimits(
                max_request_bytes=self.config.ingest.max_request_bytes,
                max_pending_bytes=http.max_pending_bytes,
                body_timeout_s=http.body_timeout_s,
                retry_after_s=queue.retry_after_s,
            ),
            cors=http.cors, metrics=metrics,
            # As for gRPC: more threads than the in-flight bound, so a request over it reaches
            # admission and is refused with Retry-After at once instead of queueing.
            threads=queue.max_requests + 4,
        )
        tls = http.tls
        self._http_server = AsgiServer(
            self._http_app, http.endpoint,
            limits=ConnectionLimits(
                max_connections=http.max_connections, max_header_bytes=http.max_header_bytes,
                header_timeout_s=http.header_timeout_s, idle_timeout_s=http.idle_timeout_s,
            ),
            metrics=metrics,
            tls=ServerTls(tls.cert_file, tls.key_file, tls.client_ca_file) if tls else None,
            reuse_port=self._reuse_port,
        )
        try:
            self.http_port = self._http_server.start()
        except OSError as exc:
            raise ListenError(
                f"receivers.otlp.protocols.http.endpoint: cannot listen on {http.endpoint}: "
                f"{exc.strerror or exc}; pick a free port"
            ) from exc

    def _stop_front_doors(self, grace: float) -> None:
        """Stop listening on every front door at once, then let their requests finish: the
        grace runs concurrently on both, not one after the other."""
        if self._http_app is not None:
            self._http_app.close()
        if self._http_server is not None:
            self._http_server.begin_stop(grace)
        if self._grpc is not None:
            self._grpc.set_serving(False)
            self._grpc.stop(grace)
        if self._http_server is not None:
            self._http_server.stop(grace)
        if self._http_app is not None:
            self._http_app.shutdown_executor()

    def _stop_peers(self, grace: float) -> None:
        if self._peer_server is not None:
            self._peer_server.stop(grace)
        if self.ingest.peers is not None:
            self.ingest.peers.close()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop listening, finish in-flight batches, flush and close sinks. Idempotent."""
        with self._stop_lock:
            if self._stopping:
                self._stopped.wait()
                return True
            self._stopping = True
        grace = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
        clean = True
        if self._chain_monitor is not None:
            self._chain_monitor.stop()
        if self._query_service is not None:
            self._query_service.close()
        if self._query is not None:
            self._query.close()  # ends tails (gRPC's and the viewer's) and closes the index
        self._stop_front_doors(grace)
        if self._query_service is not None:
            self._query_service.shutdown()
        clean = self.ingest.close(grace) and clean
        self._stop_peers(grace)  # after close: a closed ingest answers its peers `busy`
        # Last sink first: a later sink may still hand records to earlier ones (the alert
        # sink writes its `alerts` records to files, syslog, forward, index), so each is
        # flushed and shut down only once nothing after it can give it more.
        for sink in reversed(self.sinks):
            try:
                clean = sink.force_flush(grace) and clean
            finally:
                sink.shutdown()
        self.activity.stop()  # the last line: what happened since the previous one
        if self._status is not None:
            self._status.stop()
        if self._viewer is not None:
            self._viewer.close()
        if self._dir_lock is not None:
            self._dir_lock.release()
        self._stopped.set()
        return clean

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._stopped.wait(timeout_s)

    def health(self) -> tuple[bool, dict[str, Any]]:
        sinks = {}
        healthy = not self._stopping
        for sink in self.sinks:
            try:
                state = sink.health()
            except Exception as exc:  # a broken health probe must not break /healthz
                state = {"state": "down", "error": str(exc)}
            sinks[sink.name] = state
            healthy = healthy and state.get("state") != "down"
        return healthy, {
            "status": "ok" if healthy else ("stopping" if self._stopping else "degraded"),
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self._started_at, 3) if self._started_at else 0,
            "listen": self.endpoint,
            "front_doors": {
                name: address for name, address in
                (("otlp_grpc", self.endpoint if self.port else ""), ("otlp_http", self.http_endpoint))
                if address
            },
            "sinks": sinks,
            "disk": self._disk_report(),
        }

    def _disk_report(self) -> dict[str, Any]:
        """One disk figure for `files.directory`: the file sink's own (its probe, its guard)
        when it runs, else the same definition on the real file system (spools live there)."""
        for sink in self.sinks:
            report = getattr(sink, "disk_report", None)
            if callable(report):
                return dict(report())
        return disk_report(disk_usage, self.config.files.directory,
                           self.config.files.disk.max_used_percent)

def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def chain_broken_request(set_rel: str, where: ChainBreak) -> ExportLogsServiceRequest:
    """The receiver's own record of a broken audit chain: category `system`, event name
    `audit.chain.broken`, the set and the first broken link as attributes."""
    now = time.time_ns()
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", "sluice-receiver"))
    sl = rl.scope_logs.add()
    sl.scope.name = "sluice.files"
    rec = sl.log_records.add()
    rec.time_unix_nano = now
    rec.observed_time_unix_nano = now
    rec.severity_number = 17  # type: ignore[assignment]  # ERROR
    rec.severity_text = "ERROR"
    rec.event_name = "audit.chain.broken"
    rec.body.string_value = f"audit chain of {set_rel} is broken: {where}"
    rec.attributes.extend([
        _kv("log.category", "system"), _kv("audit.chain.set", set_rel),
        _kv("audit.chain.reason", where.reason), _kv("audit.chain.file", str(where.path)),
        _kv("audit.chain.line", where.line),
    ])
    return request
