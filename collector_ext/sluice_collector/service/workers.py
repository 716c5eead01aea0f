"""`sluice receiver run --workers N`: N receiver processes on one port, one supervisor.

Python runs one core per process, so a busy receiver scales by processes. Each worker binds the
same OTLP/gRPC and OTLP/HTTP addresses with SO_REUSEPORT (the kernel spreads connections; the
supervisor picks the concrete ports when the config says port 0), writes the shared category
files under a cross-process lock (see `sinks.files`), and serves its own /metrics on the
telemetry port + its index. The kernel spreads connections, not requests, so the workers also
hand requests to each other over Unix sockets in a private directory the supervisor makes
(`ingest/peers.py`): one connection's requests use every core. The supervisor only starts,
watches and stops workers: it restarts one that dies, and on SIGTERM/SIGINT passes SIGTERM on
and waits for every worker to drain.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import FrameType

from sluice_collector.service.config import ReceiverConfig

log = logging.getLogger("sluice.receiver")
_READY_RE = re.compile(
    r"sluice receiver ready: (?:otlp grpc on \S+?, )?(?:otlp http on \S+?, )?(?:telemetry on (\S+?), )?"
)
RESTART_DELAY_S = 1.0


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host.strip("[]"), 0))
        return int(probe.getsockname()[1])


class _Worker:
    def __init__(self, index: int, command: list[str]) -> None:
        self.index = index
        self.command = command
        self.proc: subprocess.Popen[str] | None = None
        self.ready = threading.Event()
        self.telemetry_url = ""

    def start(self) -> None:
        self.ready.clear()
        self.proc = subprocess.Popen(self.command, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._pump, name=f"sluice-worker-{self.index}-log", daemon=True).start()

    def _pump(self) -> None:
        proc = self.proc
        assert proc is not None
        assert proc.stderr is not None
        for line in proc.stderr:
            match = _READY_RE.search(line)
            if match:
                self.telemetry_url = match.group(1) or ""
                self.ready.set()
                continue  # the supervisor prints one ready line for all
            sys.stderr.write(f"[worker {self.index}] {line}")
            sys.stderr.flush()


def _concrete(endpoint: str) -> str:
    """`endpoint` with port 0 replaced by a free port: every worker must bind the same one."""
    if not endpoint:
        return ""
    host, port = _split(endpoint)
    return f"{host}:{port or _free_port(host)}"


def supervise(args: argparse.Namespace, config: ReceiverConfig) -> int:
    grpc_endpoint = _concrete(config.receivers.grpc.endpoint)
    http_endpoint = _concrete(config.receivers.http.endpoint)
    telemetry_host, telemetry_port = (
        _split(config.telemetry.listen) if config.telemetry.listen else ("", 0)
    )
    base = [sys.executable, "-m", "sluice_collector", "receiver", "run",
            "--listen", grpc_endpoint, "--http-listen", http_endpoint, "--log-level", args.log_level]
    if args.config:
        base += ["--config", args.config]

    # The workers share the directory; another receiver may not (service/dirlock.py).
    from sluice_collector.service.dirlock import DirectoryInUse, DirectoryLock

    claim = DirectoryLock(config.files.directory)
    try:
        claim.acquire()
    except DirectoryInUse as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    try:
        # Mode 0700 (mkdtemp): only this user may hand the workers requests, which skip auth
        # there. Removed with everything in it when the supervisor ends.
        with tempfile.TemporaryDirectory(prefix="sluice-peers-", ignore_cleanup_errors=True) as peer_dir:
            base += ["--peer-dir", peer_dir, "--worker-count", str(args.workers)]
            workers = []
            for index in range(args.workers):
                telemetry = ""
                if config.telemetry.listen:
                    telemetry = f"{telemetry_host}:{telemetry_port + index if telemetry_port else 0}"
                workers.append(_Worker(index, [*base, "--worker-index", str(index),
                                               "--telemetry-listen", telemetry]))
            return _supervise(workers, config, grpc_endpoint, http_endpoint)
    finally:
        claim.release()


def _supervise(workers: list[_Worker], config: ReceiverConfig, grpc_endpoint: str,
               http_endpoint: str) -> int:
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 60
    for worker in workers:
        while not worker.ready.wait(0.1):
            if stopping.is_set():  # asked to stop while starting: a normal stop, not a failure
                return _stop_all(workers, config.shutdown_timeout_s)
            if time.monotonic() > deadline or (
                worker.proc is not None and worker.proc.poll() is not None
            ):
                print(f"sluice: worker {worker.index} did not start", file=sys.stderr)
                _stop_all(workers, config.shutdown_timeout_s)
                return 1
    urls = " ".join(w.telemetry_url for w in workers if w.telemetry_url)
    listening = [f"otlp {name} on {endpoint}" for name, endpoint in
                 (("grpc", grpc_endpoint), ("http", http_endpoint)) if endpoint]
    if urls:
        listening.append(f"telemetry on {urls.split()[0]}")
    print(
        f"sluice receiver ready: {', '.join(listening)}, "
        f"files under {config.files.directory.resolve()} (config: {config.source}; "
        f"{len(workers)} workers{'; telemetry per worker: ' + urls if urls else ''})",
        file=sys.stderr, flush=True,
    )
    while not stopping.wait(0.5):
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is not None and not stopping.is_set():
                log.error("worker %d exited with %s; restarting it", worker.index, worker.proc.returncode)
                time.sleep(RESTART_DELAY_S)
                worker.start()
    return _stop_all(workers, config.shutdown_timeout_s)


def _stop_all(workers: list[_Worker], timeout_s: float) -> int:
    for worker in workers:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    code = 0
    for worker in workers:
        if worker.proc is None:
            continue
        try:
            rc = worker.proc.wait(timeout_s + 10)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            rc = worker.proc.wait()
        # Killed by our SIGTERM before it had its handler (still importing): it had taken
        # nothing, so that is a clean stop too.
        if rc not in (0, -signal.SIGTERM):
            code = 1
    return code
