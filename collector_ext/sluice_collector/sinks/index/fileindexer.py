"""The index as a follower of the files: rows are read from the JSON lines the file sink wrote,
after the batch was acknowledged, in a process of its own (sinks/index/server.py).

Why: deriving a row and inserting it into SQLite's B-trees costs about what the rest of a
record's trip costs; done inline it took 80 % of ingest throughput, and on a thread of the
receiver (sharing its GIL) still 60 %. The files are the record of truth and the index is
rebuildable from them, so the index may trail them — within bounds:

- **Nothing skipped, nothing twice.** For every file it follows the index keeps a cursor (the
  byte offset past its last indexed line, the file's inode and first bytes) in the same SQLite
  transaction as the rows read up to it (`IndexStore.insert(..., cursors=)`). After a crash it
  resumes at the cursor — in the same file, or, when that file was rotated meanwhile, in the
  rotated (possibly gzipped) copy whose first bytes match, and every later rotation of it.
- **Only acknowledged bytes.** The file sink reports each batch's end offset per file once the
  whole batch is written (`wrote`); a batch it rolls back is never reported, so the index
  never reads lines the files are about to lose. A rotated file is drained to its end through
  a descriptor the file sink hands over with the first report of each inode, so a rotation
  (or the gzip that follows it and removes the plain file) cannot hide lines.
- **Read your writes.** A barrier (`barrier`, `sync`) completes once everything reported
  before it is committed; the query API passes one before each read.

At the first start on a database without cursors (a new index, or one the inline sink wrote),
files already present count as indexed up to their end; `sluice index rebuild` indexes them.
"""

from __future__ import annotations

import gzip
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice_collector.errors import SinkError
from sluice_collector.query.store import (
    HEAD_BYTES,
    MAX_NS,
    Cursor,
    IndexStore,
    Row,
    file_head,
    is_active_name,
    line_end,
    row_of_line,
    stored_files,
    tenant_of,
)
from sluice_collector.sinks.files.config import FilePolicy
from sluice_collector.sinks.files.naming import backups_of
from sluice_collector.sinks.index.maintenance import IndexMaintenance

log = logging.getLogger("sluice.receiver")

READ_BYTES = 4 << 20  # read (and committed) per transaction, so catching up stays incremental
MAX_OPEN = 512  # descriptors kept on caught-up files; beyond it the least recent are closed
_RETRY_S = 1.0


@dataclass(slots=True, eq=False)
class _Followed:
    """One file being followed: indexed up to `offset`, acknowledged up to `end`."""

    rel: str
    ino: int
    fd: int
    offset: int
    end: int
    head: bytes
    tenant: str

    def cursor(self) -> Cursor:
        return Cursor(self.rel, self.ino, self.offset, self.head)


@dataclass(frozen=True, slots=True)
class _Wrote:
    rel: str
    ino: int
    end: int
    n_bytes: int
    fd: int  # a duplicate of the writer's descriptor (first report of an inode) or -1


@dataclass(frozen=True, slots=True)
class _Barrier:
    done: Callable[[], None]


_STOP = object()


def active_files(directory: Path) -> Iterator[str]:
    """Every active (not rotated) file under `directory`, as rel paths."""
    for path, _tenant in stored_files(directory):
        if is_active_name(path.name):
            yield path.relative_to(directory).as_posix()


def _open_copy(path: Path) -> Any:
    """A rotated copy, read plain or gzipped — and gzipped when the plain one went meanwhile
    (the file sink gzips right after a rotation: `.gz` is in place before the plain is gone)."""
    if not path.name.endswith(".gz"):
        try:
            return open(path, "rb")  # the caller closes it (a `with`)
        except FileNotFoundError:
            path = path.with_name(path.name + ".gz")
    return gzip.open(path, "rb")


class FileIndexer:
    """Follows the files the file sink writes and indexes their lines; see the module docs.
    `on_commit(newest row id, lag bytes, error)` is called after every transaction (newest 0
    if it had no rows), and after every failed attempt (with the error; "" when healthy)."""

    def __init__(
        self,
        store: IndexStore,
        directory: Path,
        policies: Mapping[str, FilePolicy],
        *,
        index_categories: Sequence[str] = (),
        sweep_interval_s: float = 3600.0,
        checkpoint_interval_s: float = 1.0,
        on_commit: Callable[[int, int, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.directory = Path(directory)
        self._only = frozenset(index_categories)
        self._on_commit = on_commit
        self._clock = clock
        self._chores = IndexMaintenance(store, policies, sweep_interval_s=sweep_interval_s,
                                        checkpoint_interval_s=checkpoint_interval_s, clock=clock)
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._files: dict[str, _Followed] = {}  # by rel: the inode the file sink writes now
        self._retired: list[_Followed] = []  # rotated away: read to their end, then dropped
        self._lock = threading.Lock()
        self._reported = 0  # bytes the file sink reported
        self._done = 0  # of those, bytes indexed
        self._thread: threading.Thread | None = None
        self.indexed = 0
        self.last_error = ""

    @property
    def lag_bytes(self) -> int:
        with self._lock:
            return self._reported - self._done

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, *, caught_up: bool = False) -> None:
        """Open the index, catch up with the files (what a crash left unread; `caught_up`:
        `catch_up` ran already), then follow them on a thread."""
        try:
            if not caught_up:
                self.catch_up()
        except (OSError, sqlite3.Error) as exc:
            raise SinkError(f"index: cannot open {self.store.path}: {exc}") from exc
        self._chores.start()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sluice-index", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        """Index what was reported, then stop."""
        if self._thread is not None:
            self._inbox.put(_STOP)
            self._thread.join(60.0)
            self._thread = None
        self._chores.stop()
        for f in [*self._files.values(), *self._retired]:
            self._close(f)
        self._files.clear()
        self._retired.clear()
        self.store.close()

    # -- what the file sink (or a client of the index process) says ------------------------------
    def wrote(self, rel: str, ino: int, end: int, n_bytes: int, fd: int = -1) -> None:
        """The file sink appended `n_bytes`, ending at `end`, to `rel` (inode `ino`) and the
        batch is whole. Reports must arrive in write order (the file sink sends them under its
        lock); `fd`, when not -1, is a descriptor on that inode this indexer now owns."""
        with self._lock:
            self._reported += n_bytes
        self._inbox.put(_Wrote(rel, ino, end, n_bytes, fd))

    def barrier(self, done: Callable[[], None]) -> None:
        """Call `done` once everything reported before this call is committed."""
        self._inbox.put(_Barrier(done))

    def sync(self, timeout_s: float | None = None) -> bool:
        """Wait until everything reported so far is indexed; False on timeout."""
        if self._thread is None:
            return False
        event = threading.Event()
        self.barrier(event.set)
        return event.wait(timeout_s)

    # -- the indexing thread ---------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            barriers: list[_Barrier] = []
            message = self._inbox.get()
            while True:
                if message is _STOP:
                    stopping = True
                elif isinstance(message, _Barrier):
                    barriers.append(message)
                else:
                    self._note(message)
                try:
                    message = self._inbox.get_nowait()
                except queue.Empty:
                    break
            while not self._index_pending() and not stopping:
                if self._on_commit is not None:
                    self._on_commit(0, self.lag_bytes, self.last_error)
                time.sleep(_RETRY_S)  # the index is failing (last_error says why): retry
            for barrier in barriers:
                barrier.done()

    def _note(self, message: _Wrote) -> None:
        f = self._files.get(message.rel)
        if f is not None and f.ino != message.ino:
            if self._names(message.rel, f.ino):
                # The path still names the file we follow: the report is about an older one
                # (queued while the index caught up at start, which read it already).
                if message.fd >= 0:
                    os.close(message.fd)
                with self._lock:
                    self._done += message.n_bytes
                return
            # Rotated (or removed and recreated): what the old inode holds is whole, and is
            # read to its end before the new one.
            f.end = -1
            self._retired.append(f)
            f = None
        fd = message.fd
        if f is None:
            if fd < 0:
                fd = self._open_inode(message.rel, message.ino)
            f = _Followed(message.rel, message.ino, fd, 0, 0,
                          file_head(fd) if fd >= 0 else b"", tenant_of(message.rel))
            self._files[message.rel] = f
        elif f.fd < 0:
            f.fd = fd if fd >= 0 else self._open_inode(message.rel, message.ino)
        elif fd >= 0:
            os.close(fd)
        start = message.end - message.n_bytes
        if start < f.offset and f.fd >= 0 and self._was_cut(f):
            # The batch begins before what was read, and the file is not what was read: it was
            # cut (by hand: `> file`, a copytruncate) and is being written again from there.
            # (A report that merely arrived after the lines it names were read — queued while
            # the index caught up at start — changes nothing.)
            log.warning("index: %s was cut to %d bytes under the receiver; reading on from there",
                        f.rel, start)
            with self._lock:
                self._done += max(0, f.end - f.offset)  # reported, now never to be read
            f.offset = start
            f.end = message.end
        elif start < f.offset:  # lines read already (at start-up, before this report came)
            with self._lock:
                self._done += min(message.end, f.offset) - start
        f.end = max(f.end, message.end)
        if len(f.head) < HEAD_BYTES and f.fd >= 0:
            f.head = file_head(f.fd)

    def _names(self, rel: str, ino: int) -> bool:
        """Whether `rel` is (still) inode `ino`."""
        try:
            return os.stat(self.directory / rel).st_ino == ino
        except OSError:
            return False

    @staticmethod
    def _was_cut(f: _Followed) -> bool:
        """Whether the file no longer holds what was read: shorter, or other first bytes."""
        return os.fstat(f.fd).st_size < f.offset or file_head(f.fd)[: len(f.head)] != f.head

    def _open_inode(self, rel: str, ino: int) -> int:
        """A descriptor on `rel` if it still is inode `ino`, else on its rotated plain copy;
        -1 if neither is there (gzipped already: found by its head at the next start)."""
        path = self.directory / rel
        candidates = [path] + [path.with_name(b.name) for b in reversed(
            backups_of(path.parent, path.name)) if not b.gz]
        for candidate in candidates:
            try:
                fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            if os.fstat(fd).st_ino == ino:
                return fd
            os.close(fd)
        self.last_error = f"lost track of {rel} (rotated before it was read)"
        log.warning("index: %s; run `sluice index rebuild` to index it", self.last_error)
        return -1

    def _index_pending(self) -> bool:
        """Index every followed file up to its acknowledged end (a rotated one to its end), one
        transaction per READ_BYTES; False if the index could not be written (nothing moved)."""
        while True:
            rows: list[Row] = []
            cursors: list[Cursor] = []
            plan: list[tuple[_Followed, int, bool]] = []  # (file, new offset, finished)
            budget = READ_BYTES
            for f in [*self._retired, *self._files.values()]:
                retired = f.end < 0
                if budget <= 0 or f.fd < 0:
                    if retired and f.fd < 0:
                        plan.append((f, f.offset, True))  # lost track of it: warned already
                    continue
                target = line_end(f.fd, os.fstat(f.fd).st_size) if retired else f.end
                if f.offset >= target:
                    if retired:
                        plan.append((f, f.offset, True))
                    continue
                data, advance = self._read(f, target, budget)
                rows.extend(self._rows(data, f.tenant))
                offset = f.offset + advance
                budget -= advance
                plan.append((f, offset, retired and offset >= target))
                if len(f.head) < HEAD_BYTES:
                    f.head = file_head(f.fd)
                if not retired and f.head:
                    cursors.append(Cursor(f.rel, f.ino, offset, f.head))
            if not plan:
                return True
            try:
                newest = self.store.insert(rows, int(self._clock() * 1e9), cursors)
            except Exception as exc:  # a full disk, or a bug: retried, and shown in /healthz
                self.last_error = f"cannot write {self.store.path}: {exc}"
                log.warning("index: %s", self.last_error)
                return False
            self.indexed += len(rows)
            self.last_error = ""
            moved = 0
            for f, offset, finished in plan:
                moved += offset - f.offset
                f.offset = offset
                if finished:
                    self._retired.remove(f)
                    self._close(f)
            with self._lock:
                self._done += moved
                lag = self._reported - self._done
            if self._on_commit is not None:
                self._on_commit(newest, lag, self.last_error)
            self._trim_open()

    def _read(self, f: _Followed, target: int, budget: int) -> tuple[bytes, int]:
        """Whole lines from `f.offset` towards `target` — at most `budget` bytes, unless the
        first line alone is longer — and how far they reach. An unreadable file, or one cut
        shorter than the file sink reported (by hand), is skipped to `target` (as rebuild
        skips it), with a warning."""
        try:
            data = os.pread(f.fd, min(target - f.offset, max(budget, 65536)), f.offset)
            while f.offset + len(data) < target and b"\n" not in data:
                more = os.pread(f.fd, min(target - f.offset - len(data), 1 << 20),
                                f.offset + len(data))
                if not more:
                    break
                data += more
        except OSError as exc:
            self.last_error = f"cannot read {f.rel}: {exc.strerror or exc}"
            log.warning("index: %s; skipped to its end", self.last_error)
            return b"", target - f.offset
        if f.offset + len(data) < target:
            data = data[: data.rfind(b"\n") + 1]
            if not data:
                self.last_error = f"{f.rel} is shorter than written (cut by hand?)"
                log.warning("index: %s; skipped to where it was written up to", self.last_error)
                return b"", target - f.offset
        return data, len(data)

    def _rows(self, data: bytes, tenant: str) -> list[Row]:
        out = []
        only = self._only
        for line in data.split(b"\n"):
            row = row_of_line(line, tenant)
            # (Validation refuses times past SQLite's integers; a line from elsewhere may not.)
            if row is not None and (not only or row.category in only) and row.time_ns <= MAX_NS:
                out.append(row)
        return out

    def _trim_open(self) -> None:
        """Close the descriptors of caught-up files beyond MAX_OPEN (their cursors stay)."""
        if len(self._files) <= MAX_OPEN:
            return
        excess = sum(f.fd >= 0 for f in self._files.values()) - MAX_OPEN
        for f in self._files.values():
            if excess <= 0:
                break
            if f.fd >= 0 and f.offset >= f.end:
                self._close(f)
                excess -= 1

    @staticmethod
    def _close(f: _Followed) -> None:
        if f.fd >= 0:
            os.close(f.fd)
            f.fd = -1

    # -- start-up --------------------------------------------------------------------------------
    def catch_up(self) -> None:
        """Open the index, adopt the files if it never followed them, and index what it has
        not read. It looks at the directory (cursors, rotated copies, active files), so it must
        run while nothing rotates: the index process does it before it says it is ready, and
        the receiver writes nothing until then."""
        self.store.open(background_checkpoints=True)
        self.adopt()
        self._resume()

    def adopt(self) -> None:
        """On a database that never followed the files (new, or written by the inline sink):
        count what the active files hold as indexed — a cursor at each one's last line — and
        their rotated copies with them (`sluice index rebuild` indexes it all). Must run before
        the receiver writes: the index process does it before it says it is ready."""
        if not self.store.cursors_created:
            return
        cursors = []
        for rel in active_files(self.directory):
            try:
                fd = os.open(self.directory / rel, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                cursors.append(Cursor(rel, st.st_ino, line_end(fd, st.st_size), file_head(fd)))
            finally:
                os.close(fd)
        self.store.insert([], 0, cursors)
        self.store.cursors_created = False

    def _resume(self) -> None:
        """Pick up every cursor; index what a crash left unread (in the file itself or in its
        rotated copies); follow active files that have no cursor from their start — after
        their rotated copies: the set is new since the index last committed (it was created,
        and maybe rotated, while the index process was down)."""
        cursors = self.store.cursors()
        for cursor in cursors.values():
            self._resume_one(cursor)
        for rel in active_files(self.directory):
            if rel in self._files:
                continue
            if rel not in cursors:
                self._drain_backups(rel, None, 0)
            try:
                fd = os.open(self.directory / rel, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            st = os.fstat(fd)
            # Not followed before (or rotated since): all of it is new.
            self._files[rel] = _Followed(rel, st.st_ino, fd, 0, line_end(fd, st.st_size),
                                         file_head(fd), tenant_of(rel))
        with self._lock:
            self._reported += sum(f.end - f.offset for f in [*self._files.values(), *self._retired])
        if not self._index_pending():
            raise sqlite3.OperationalError(self.last_error)
        # Cursors for files not there any more (rotated, then removed by retention): dropped.
        # An empty active file gets no cursor (it could not be found again once rotated): its
        # set's cursor stays where the drain of its rotated copies left it.
        gone = [rel for rel in cursors if rel not in self._files]
        self.store.insert([], 0, [f.cursor() for f in self._files.values() if f.head], gone)

    def _resume_one(self, cursor: Cursor) -> None:
        path = self.directory / cursor.rel
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            st = os.fstat(fd)
            if st.st_ino == cursor.ino and file_head(fd)[: len(cursor.head)] == cursor.head:
                self._files[cursor.rel] = _Followed(cursor.rel, cursor.ino, fd, cursor.offset,
                                                    line_end(fd, st.st_size), cursor.head,
                                                    tenant_of(cursor.rel))
                return
            os.close(fd)
        if not cursor.head:
            return  # it was empty: nothing of it can be unread
        # Rotated while the index was not reading it: the rotated copy with its head, from the
        # cursor on, then every later rotation of the set (the active file follows from 0).
        if self._drain_backups(cursor.rel, cursor.head, cursor.offset):
            return
        if cursor.offset:
            log.warning("index: %s was rotated and removed before the index read it to its end; "
                        "run `sluice index rebuild` if its last records are missing", cursor.rel)

    def _drain_backups(self, rel: str, head: bytes | None, offset: int) -> bool:
        """Index the rotated copies of `rel`'s set: from the newest one starting with `head`
        at `offset` (`head` None: from the oldest, at 0), then every later one. Each copy is
        one transaction that also moves the cursor on to the next copy (by its head: ino 0
        never names an active file), so a crash here resumes here. False if no copy matched."""
        path = self.directory / rel
        backups = {b.seq: b for b in backups_of(path.parent, path.name) if not b.gz}
        for b in backups_of(path.parent, path.name):
            backups.setdefault(b.seq, b)  # gzipped only where no plain copy is left
        ordered = [backups[seq] for seq in sorted(backups)]
        heads = [self._head_of(path.with_name(b.name)) for b in ordered]
        if head is None:
            first = 0
        else:
            matches = [i for i, h in enumerate(heads) if h.startswith(head)]
            if not matches:
                return False
            first = matches[-1]
        tenant = tenant_of(rel)
        for index in range(first, len(ordered)):
            start = offset if index == first else 0
            data = self._backup_lines(path.with_name(ordered[index].name), start)
            rows = self._rows(data, tenant)
            # The cursor moves on to the next copy; after the last, it stays at the end of it
            # (found again by its head) until lines of the active file are read: an active
            # file may be empty yet, and a cursor without a head could not be found again.
            if index + 1 < len(ordered) and heads[index + 1]:
                after = Cursor(rel, 0, 0, heads[index + 1])
            else:
                after = Cursor(rel, 0, start + len(data), heads[index])
            self.store.insert(rows, int(self._clock() * 1e9), [after] if after.head else [],
                              [] if after.head else [rel])
            self.indexed += len(rows)
        return True

    @staticmethod
    def _head_of(path: Path) -> bytes:
        """A rotated file's first bytes (b"" if unreadable)."""
        try:
            with _open_copy(path) as fh:
                head: bytes = fh.read(HEAD_BYTES)
        except (OSError, EOFError):
            return b""
        return head

    @staticmethod
    def _backup_lines(path: Path, offset: int) -> bytes:
        """A rotated file's whole lines from `offset` (what is readable of them)."""
        try:
            with _open_copy(path) as fh:
                fh.seek(offset)
                data: bytes = fh.read()
        except (OSError, EOFError) as exc:
            log.warning("index: cannot read %s: %s", path, exc)
            return b""
        return data[: data.rfind(b"\n") + 1]
