"""The index as a receiver process sees it: reports to the index process, barriers, lag.

It is the last sink of the chain, but takes nothing from a batch: the file sink tells it of
each batch's appends (`wrote`, passed on to the index process, server.py), and `consume` only
holds the acknowledgement while the index is more than `query.index_lag_limit_mb` behind the
files — at most `max_wait_s`, then the batch is acknowledged anyway: the files have it and
the index catches up. The owner (the only receiver, or worker 0) starts the index process and
starts it again if it dies; every process of the directory registers for its notices, which
wake the tails of that process (pushed, nothing polls) and carry the current lag.
"""

from __future__ import annotations

import array
import itertools
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from prometheus_client import Gauge

from sluice_collector.batch import Batch
from sluice_collector.errors import SinkError
from sluice_collector.query.store import IndexStore
from sluice_collector.sinks.index import server
from sluice_collector.telemetry import ReceiverTelemetry

log = logging.getLogger("sluice.receiver")

SEND_TIMEOUT_S = 10.0  # a report waits this long for room in the index process's queue
RESPAWN_AFTER_S = 5.0
START_TIMEOUT_S = 60.0


class IndexClient:
    """One receiver process's line to the index process; see the module docs."""

    name = "index"

    def __init__(self, spec: server.IndexSpec, telemetry: ReceiverTelemetry, *, owner: bool,
                 lag_limit_bytes: int, max_wait_s: float = 30.0,
                 respawn_after_s: float = RESPAWN_AFTER_S) -> None:
        """`respawn_after_s`: a dead index process is started again at the first report that
        fails at least this long after it was last started (so a crash loop costs little)."""
        self._spec = spec
        self.respawn_after_s = respawn_after_s
        self._owner = owner
        self._lag_limit = lag_limit_bytes
        self._max_wait_s = max_wait_s
        self._server = server.address(Path(spec.files.directory))
        self._store = IndexStore.for_directory(Path(spec.files.directory))  # for its listeners
        self._proc: subprocess.Popen[bytes] | None = None
        self._spawned_at = 0.0
        self._sock: socket.socket | None = None
        self._cond = threading.Condition()
        self._lag = 0  # as the index process last said
        self._since = 0  # bytes this process reported since then: a stuck index says nothing
        self._waiting: dict[bytes, threading.Event] = {}
        self._tokens = itertools.count(1)
        self._registered = False
        self._closing = False
        self.last_error = ""
        self._index_error = ""  # what the index process last said was wrong ("" = nothing)
        Gauge("sluice_index_lag_bytes", "Bytes the files hold that the index has not read yet "
              "(as the index process last said).", registry=telemetry.registry
              ).set_function(lambda: self.lag_bytes)
        Gauge("sluice_index_lag_limit_bytes", "query.index_lag_limit_mb in bytes: past it "
              "acknowledgements wait for the index.", registry=telemetry.registry
              ).set(lag_limit_bytes)

    @property
    def lag_bytes(self) -> int:
        """How far the index trails the files: its last word, plus what this process has
        written since."""
        return self._lag + self._since

    @property
    def server_pid(self) -> int:
        """The index process's pid (0 if this process does not own it)."""
        return self._proc.pid if self._proc is not None else 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._owner:
            self._spawn()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self._server + f"-{os.getpid()}-{id(self):x}".encode())
        sock.settimeout(SEND_TIMEOUT_S)
        self._sock = sock
        threading.Thread(target=self._listen, args=(sock,), name="sluice-index-client",
                         daemon=True).start()
        self._hello()

    def _spawn(self) -> None:
        """Start the index process and wait until its socket is there."""
        self._spawned_at = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "sluice_collector.sinks.index.server"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        stdin: IO[bytes] | None = proc.stdin
        assert stdin is not None
        assert proc.stdout is not None
        try:
            stdin.write(pickle.dumps(self._spec))
            stdin.flush()
        except OSError:
            pass  # it died at once: reported below
        ready = proc.stdout.readline()
        if ready != server.READY:
            proc.kill()
            code = proc.wait()
            raise SinkError(f"index: the index process did not start (exit status {code}); "
                            "its error is above")
        self._proc = proc

    def shutdown(self) -> None:
        self._closing = True
        if self._sock is not None:
            self._send(server.BYE)
            self._sock.close()
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()  # it indexes what it was told, then exits
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                log.error("index: the index process did not stop in 60 s; killing it")
                proc.kill()
                proc.wait()

    def health(self) -> dict[str, Any]:
        lag = self.lag_bytes
        error = self.last_error or self._index_error
        return {"state": "degraded" if error or lag > self._lag_limit else "ok",
                "lag_bytes": lag, "last_error": error}

    # -- the file sink's side ----------------------------------------------------------------------
    def wrote(self, rel: str, ino: int, end: int, n_bytes: int, fd: int = -1) -> None:
        """Pass the file sink's report on (see `FileIndexer.wrote`); `fd` is ours to close."""
        message = server.WROTE + server.WROTE_HEAD.pack(ino, end, n_bytes) + rel.encode()
        with self._cond:
            self._since += n_bytes
        try:
            self._send(message, fd)
        finally:
            if fd >= 0:
                os.close(fd)

    def consume(self, batch: Batch) -> None:
        """Back-pressure only: hold the acknowledgement while the index is too far behind."""
        if self.lag_bytes <= self._lag_limit:
            return
        deadline = time.monotonic() + self._max_wait_s
        with self._cond:
            while self.lag_bytes > self._lag_limit and self._registered:
                left = deadline - time.monotonic()
                if left <= 0:
                    return  # the files have the batch; the index catches up later
                self._cond.wait(left)

    def sync(self, timeout_s: float | None = None) -> bool:
        """Wait until the index holds everything this process reported so far (and everything
        other processes reported before); False on timeout or once the index process is gone
        (each second without an answer, a hello checks that it is still there)."""
        token = server.TOKEN.pack(next(self._tokens))
        done = threading.Event()
        self._waiting[token] = done
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            if not self._send(server.BARRIER + token):
                return False
            while not done.wait(1.0 if deadline is None else
                                max(0.0, min(1.0, deadline - time.monotonic()))):
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                if not self._send(server.HELLO, hello=True):
                    return False
            return True
        finally:
            self._waiting.pop(token, None)

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Nothing is buffered here: each report went out as the file sink wrote. Where the
        index process is reachable, wait for it to index them; where it is not (its owner,
        another worker, stopped first), its next start catches up from the files."""
        return self.sync(timeout_s) or not self._registered

    # -- plumbing ------------------------------------------------------------------------------
    def _hello(self) -> None:
        self._registered = self._send(server.HELLO, hello=True)

    def _send(self, message: bytes, fd: int = -1, *, hello: bool = False) -> bool:
        sock = self._sock
        if sock is None:
            return False
        if not self._registered and not hello and not self._closing:
            self._hello()  # the index process (re)started since: register for its notices
        try:
            if fd >= 0:
                # (socket.send_fds drops its address argument before Python 3.12)
                sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                          array.array("i", [fd]))], 0, self._server)
            else:
                sock.sendto(message, self._server)
        except OSError as exc:
            self._unreachable(exc)
            return False
        return True

    def _unreachable(self, exc: OSError) -> None:
        """The index process is not there (or stuck): its next start catches up from the
        files; the owner starts it again."""
        self._registered = False
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        message = f"cannot reach the index process ({reason}); it catches up when it is back"
        if message != self.last_error:
            log.warning("index: %s", message)
        self.last_error = message
        with self._cond:
            self._cond.notify_all()  # nobody waits for an index that is not there
        proc = self._proc
        if (self._owner and not self._closing and proc is not None and proc.poll() is not None
                and time.monotonic() - self._spawned_at >= self.respawn_after_s):
            log.error("index: the index process exited with %s; starting it again", proc.returncode)
            try:
                self._spawn()
            except SinkError as error:
                self.last_error = str(error)

    def _listen(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return  # closed: shutdown
            kind = data[:1]
            if kind == server.COMMITTED:
                newest, lag = server.COMMIT.unpack_from(data, 1)
                self._index_error = data[1 + server.COMMIT.size:].decode("utf-8", "replace")
                with self._cond:
                    self._lag, self._since = lag, 0
                    if self.last_error.startswith("cannot reach"):
                        self.last_error = ""
                    self._cond.notify_all()
                if newest:
                    self._store.notify_commit(newest)
            elif kind == server.DONE:
                event = self._waiting.get(data[1:])
                if event is not None:
                    event.set()
