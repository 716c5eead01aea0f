"""The index process: a `FileIndexer` behind a Unix datagram socket, one per files directory.

Why a process: indexing a record costs about what receiving it costs, and in the receiver's
process it competed for the same GIL (measured: a thread there doubled the cost per row). In
a process of its own it runs on another core and ingest does not wait for it at all.

Every receiver process of the directory (one, or each `--workers` worker) talks to it through
`client.py`; the receiver that owns it (the only one, or worker 0) starts it with the spec on
stdin and keeps its stdin open: when that closes (the owner stopped or died) the process
indexes what was reported and exits. The socket lives in Linux's abstract namespace, named
after the directory, so no path length limit applies and nothing is left on disk.

Datagrams, client → server: ``H`` hello (register for notices), ``W`` + ino, end, bytes + rel
(with the descriptor of a new inode attached, SCM_RIGHTS), ``B`` + token (barrier), ``G``
goodbye. Server → client: ``C`` + newest row id, lag bytes (+ the index's error, if it
has one) after every transaction and every failed attempt; ``D`` + token when a barrier
completes. One socket carries every client's reports, in the order the
file sinks sent them (under their lock and the files' flock), which is write order.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import pickle
import signal
import socket
import sqlite3
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sluice_collector.query.store import IndexStore
from sluice_collector.sinks.files.config import FilePolicy, FilesConfig
from sluice_collector.sinks.index.fileindexer import FileIndexer

log = logging.getLogger("sluice.receiver")

HELLO, WROTE, BARRIER, BYE, COMMITTED, DONE = b"H", b"W", b"B", b"G", b"C", b"D"
WROTE_HEAD = struct.Struct("<QQQ")  # inode, end offset, bytes written
TOKEN = struct.Struct("<Q")
COMMIT = struct.Struct("<qq")  # newest row id (0: none in that transaction), lag bytes
MAX_DATAGRAM = 65536
BIND_PATIENCE_S = 30.0
READY = b"ready\n"


def address(directory: Path) -> bytes:
    """The index process's socket name for a files directory (abstract namespace)."""
    digest = hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:32]
    return b"\0sluice-index-" + digest.encode()


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """What the index process needs, sent pickled on its stdin by its owner."""

    files: FilesConfig
    index_categories: tuple[str, ...]
    log_level: int = logging.WARNING


class _Policies(dict[str, FilePolicy]):
    """Every category's retention: configured, else the file sink's default for it (the
    file sink gives dynamic categories the same default)."""

    def __init__(self, files: FilesConfig) -> None:
        super().__init__(files.categories)
        self._files = files

    def __missing__(self, name: str) -> FilePolicy:
        return self.setdefault(name, self._files.default_policy(name))


class IndexServer:
    """The socket side of the index process."""

    def __init__(self, spec: IndexSpec) -> None:
        directory = Path(spec.files.directory)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        deadline = time.monotonic() + BIND_PATIENCE_S
        while True:
            try:
                self._sock.bind(address(directory))  # first: reports sent meanwhile wait in it
                break
            except OSError as exc:
                # The index process of an owner that just died may still be finishing.
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._clients: set[bytes] = set()
        self._clients_lock = threading.Lock()
        self.indexer = FileIndexer(
            IndexStore.for_directory(directory), directory, _Policies(spec.files),
            index_categories=spec.index_categories,
            sweep_interval_s=spec.files.retention_check_interval_s,
            on_commit=self._committed,
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take datagrams, and index what they report (`FileIndexer.catch_up` ran already)."""
        self._thread = threading.Thread(target=self._serve, name="sluice-index-socket", daemon=True)
        self._thread.start()
        self.indexer.start(caught_up=True)

    def stop(self) -> None:
        """Index everything reported, then close."""
        self.indexer.shutdown()
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                data, fds, _flags, sender = socket.recv_fds(self._sock, MAX_DATAGRAM, 1)
            except OSError:
                return  # closed by stop()
            try:
                self._handle(data, list(fds), sender)
            except Exception:  # a bad datagram must not stop the index
                log.exception("index: cannot handle a %r message", data[:1])
                for fd in fds:
                    os.close(fd)

    def _handle(self, data: bytes, fds: list[int], sender: bytes) -> None:
        kind = data[:1]
        if kind == WROTE:
            ino, end, n_bytes = WROTE_HEAD.unpack_from(data, 1)
            rel = data[1 + WROTE_HEAD.size:].decode()
            self.indexer.wrote(rel, ino, end, n_bytes, fds[0] if fds else -1)
            return
        for fd in fds:
            os.close(fd)
        if kind == BARRIER:
            token = data[1:1 + TOKEN.size]
            self.indexer.barrier(lambda: self._send(sender, DONE + token))
        elif kind == HELLO:
            with self._clients_lock:
                self._clients.add(sender)
            self._send(sender, COMMITTED + COMMIT.pack(0, self.indexer.lag_bytes))
        elif kind == BYE:
            with self._clients_lock:
                self._clients.discard(sender)

    def _committed(self, newest: int, lag: int, error: str) -> None:
        message = COMMITTED + COMMIT.pack(newest, lag) + error.encode()[:1024]
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            self._send(client, message)

    def _send(self, client: bytes, message: bytes) -> None:
        try:
            self._sock.sendto(message, socket.MSG_DONTWAIT, client)
        except (BlockingIOError, InterruptedError):
            pass  # its queue is full: it has notices to read already; a newer one follows
        except OSError:  # gone
            with self._clients_lock:
                self._clients.discard(client)


def main() -> int:
    # Ctrl-C in a terminal, and systemd's stop, signal every process of the group: the owner
    # stops, closes our stdin, and only then do we stop — after indexing what it reported.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # From the receiver that started us, over the pipe only it holds: not outside input.
    spec: IndexSpec = pickle.load(sys.stdin.buffer)  # noqa: S301
    logging.basicConfig(level=spec.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s sluice index: %(message)s")
    try:
        server = IndexServer(spec)
        # Before anyone is told we are ready: the database and its schema exist (readers never
        # race us to create it), and the index has caught up with the files — it looks at the
        # directory, which must not rotate meanwhile, and the receiver writes nothing until
        # we are ready. Reports that other workers send meanwhile wait in the socket.
        server.indexer.catch_up()
    except (OSError, sqlite3.Error) as exc:
        print(f"sluice index: cannot start: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    try:
        server.start()
    except Exception as exc:
        print(f"sluice index: {exc}", file=sys.stderr)
        return 1
    sys.stdin.buffer.read()  # until the owner closes it, stops or dies
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
