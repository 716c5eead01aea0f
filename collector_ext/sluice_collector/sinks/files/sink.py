"""`RotatingFileSink`: the record of truth — one rotated, compressed file set per category.

Why it is shaped the way it is (docs/files.md has the user-facing description):

- One write per file per batch. Records are encoded once, grouped by destination file, and each
  group goes out with one `os.write` on an ``O_APPEND`` descriptor, so a batch costs one syscall
  per file and the data is with the OS (page cache) before `consume` returns — which is what the
  receiver's acknowledgement promises. `files.fsync` adds an fsync per file per batch.
- All or nothing per batch. If any write fails (or is short), every file this batch touched is
  truncated back to its size before the batch, and `SinkError`/`DiskFullError` is raised, so the
  client's retry does not duplicate lines and no file ever ends in half a line.
- Paths may be templates over record and resource fields (per-user isolation). Every field is
  made a safe single path component (see `safe_component`) and the result must resolve inside
  `files.directory`; anything missing or refused goes to `files.fallback_path` — never dropped.
  A templated path names at most `files.max_files_per_template` files per category and tenant
  (those found at start count); records that would open one more go to the fallback path and
  are counted, because every new value (a user id) is a new inode, and inodes run out too.
- Rotation (size or clock-aligned period, whichever first) is checked before each write, so it
  costs nothing extra; gzip runs in a background thread and writes ``.gz.tmp`` then renames, so
  a crash never leaves a truncated ``.gz`` under a final name, and leftovers are finished on the
  next start.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import logging
import math
import os
import queue
import re
import shutil
import stat
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from sluice_collector.batch import Batch, Signal
from sluice_collector.encode import BatchCache, TimestampFormatter, json_lines, text_lines
from sluice_collector.errors import DiskFullError, SinkError
from sluice_collector.otlpvalues import any_value
from sluice_collector.sinks.files.auditchain import (
    SEAL_BYTES,
    AuditChainWriter,
    ChainHasher,
    SealedBatch,
    is_temp_name,
    record_templates,
)
from sluice_collector.sinks.files.config import FilePolicy, FilesConfig, RotationConfig
from sluice_collector.sinks.files.fsclock import file_clock
from sluice_collector.sinks.files.naming import ROTATED_RE, backups_of, period_key
from sluice_collector.sinks.files.retention import (
    TENANTS_DIR,
    Clock,
    DiskUsage,
    RetentionSweeper,
    disk_report,
    disk_usage,
    template_regex,
    used_percent,
)
from sluice_collector.telemetry import ReceiverTelemetry

__all__ = ["MAX_COMPONENT_CHARS", "RotatingFileSink", "WriteFn", "safe_component"]

log = logging.getLogger("sluice.files")

WriteFn = Callable[[int, bytes | memoryview], int]  # os.write's shape; injectable for tests
MAX_COMPONENT_CHARS = 96
METRICS_CATEGORY = "metrics"  # never indexed: the write listener is not told of it
AUDIT_CATEGORY = "audit"  # the category whose lines are hash-chained (files.audit_chain)
_BATCH_FIELDS = frozenset({"category", "signal", "tenant"})
_SAFE_RE = re.compile(r"[A-Za-z0-9_\-@+=,][A-Za-z0-9_\-.@+=,]*")
_SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "_-.@+=,")
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
# Active files are also read (their last bytes, to find a torn tail): open them read-write.
_ACTIVE_FLAGS = (_OPEN_FLAGS & ~os.O_WRONLY) | os.O_RDWR
_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG})


def safe_component(value: Any) -> str | None:
    """`value` as one safe path component, or None when it is empty.

    Unsafe characters (``/``, ``\\``, NUL, controls, spaces, non-ASCII, ``%``) are
    percent-encoded as UTF-8 rather than replaced, so two different values (two users) can
    never share a file; a leading dot is encoded so nothing is hidden and ``.``/``..`` cannot
    appear; overlong values keep a prefix plus a hash of the whole value.
    """
    text = value if isinstance(value, str) else str(value)
    if not text:
        return None
    if len(text) <= MAX_COMPONENT_CHARS and _SAFE_RE.fullmatch(text):
        return text
    out = "".join(
        ch if ch in _SAFE_CHARS else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in text
    )
    if out.startswith("."):
        out = "%2E" + out[1:]
    if len(out) > MAX_COMPONENT_CHARS:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        out = out[: MAX_COMPONENT_CHARS - 17].rstrip("%0123456789ABCDEF") + "~" + digest
    return out


class _Template:
    """A parsed path template; `static` ones depend only on batch-level fields (fast path)."""

    __slots__ = ("fields", "pieces", "record_fields", "static", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pieces: list[tuple[str, str | None]] = [
            (literal, name) for literal, name, _spec, _conv in string.Formatter().parse(text)
        ]
        self.fields = [name for _lit, name in self.pieces if name]
        self.record_fields = frozenset(f for f in self.fields if f not in _BATCH_FIELDS)
        self.static = not self.record_fields

    def render(self, values: Mapping[str, Any]) -> str | None:
        """The relative path, or None when a field is missing or empty after sanitising."""
        out: list[str] = []
        for literal, name in self.pieces:
            out.append(literal)
            if name:
                value = values.get(name)
                part = None if value is None else safe_component(value)
                if part is None:
                    return None
                out.append(part)
        return "".join(out)


@dataclass(slots=True, eq=False)
class _FileSet:
    """One active file and the rotation state of its set; only kept while its fd is open."""

    rel: str
    path: Path
    category: str
    rotation: RotationConfig
    fd: int = -1
    size: int = 0
    period: str = ""  # the period the current content belongs to ("" = empty file)
    tail_checked: bool = False  # the file was seen to end in a newline since it was opened
    ino: int = 0
    announced: int = -1  # the inode the write listener was last handed a descriptor of


class _Compressor:
    """One daemon thread gzipping rotated files, so rotation never blocks ingest."""

    def __init__(self, on_error: Callable[[str], None]) -> None:
        self._queue: queue.Queue[tuple[Path, int] | None] = queue.Queue()
        self._pending: set[Path] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._on_error = on_error
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sluice-gzip", daemon=True)
            self._thread.start()

    def submit(self, path: Path, level: int = 6) -> None:
        with self._lock:
            if path in self._pending:
                return
            self._pending.add(path)
        self._queue.put((path, level))

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def is_busy(self, path: Path) -> bool:
        with self._lock:
            return path in self._pending or (
                path.name.endswith(".gz") and path.with_name(path.name[:-3]) in self._pending
            )

    def wait(self, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stop(self, timeout_s: float) -> bool:
        done = self.wait(timeout_s)
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=max(timeout_s, 0.1))
        return done

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            path, level = item
            try:
                compress_file(path, level)
            except FileNotFoundError:
                pass  # removed meanwhile (max_backups or retention): nothing to do
            except Exception as exc:
                self._on_error(f"cannot compress {path}: {exc}")
            finally:
                with self._idle:
                    self._pending.discard(path)
                    self._idle.notify_all()


def compress_file(path: Path, level: int = 6) -> Path | None:
    """gzip `path` to `path.gz` via a temp name, keep its mtime (retention ages by it), and
    remove the original only once the ``.gz`` is complete under its final name.

    Several receiver workers may find the same rotated file (a restarted worker re-queues
    unfinished compressions): the source is held under an exclusive flock while it is
    compressed and the temp name carries the pid, so two processes never write one temp file.
    Returns None when another process is already compressing `path`.
    """
    final = path.with_name(path.name + ".gz")
    tmp = path.with_name(f"{path.name}.gz.tmp.{os.getpid()}")
    with path.open("rb") as src:
        try:
            fcntl.flock(src.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        if not path.exists():  # finished by another process while we waited to open it
            return final if final.exists() else None
        st = os.fstat(src.fileno())
        try:
            # Same permissions as the file it replaces: logs may hold personal data.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(st.st_mode))
            with open(fd, "wb") as raw:
                with gzip.GzipFile(
                    filename=path.name, mode="wb", fileobj=raw, mtime=int(st.st_mtime), compresslevel=level
                ) as gz:
                    shutil.copyfileobj(src, gz, 1024 * 1024)
                raw.flush()
                os.fsync(raw.fileno())
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        path.unlink(missing_ok=True)
    return final


def _temp_owner_alive(name: str) -> bool:
    """Whether the process named in a `<file>.gz.tmp.<pid>` temp name still runs."""
    pid_text = name.rsplit(".", 1)[-1]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriteListener(Protocol):
    """Told of every file a batch appended to, once the whole batch is written (the index
    follows the files this way: sinks/index/fileindexer.py)."""

    def wrote(self, rel: str, ino: int, end: int, n_bytes: int, fd: int = -1) -> None: ...


class RotatingFileSink:
    """Writes every routed record to its category's files; see the module docstring.

    `clock` drives time-based rotation and retention; `disk_usage` probes (used, total) bytes;
    `write` is the low-level write (``os.write``) — all three are injectable so tests can cross
    midnight, fake a full disk or fail a write without mocks.
    """

    name = "files"

    def __init__(
        self,
        config: FilesConfig,
        telemetry: ReceiverTelemetry,
        *,
        clock: Clock = time.time,
        disk_usage: DiskUsage = disk_usage,
        write: WriteFn = os.write,
        shared: bool = False,
        primary: bool = True,
    ) -> None:
        self.config = config
        # `shared`: other processes (receiver workers on one port) write the same files. Every
        # write then happens under an exclusive flock of `<directory>/.sluice-files.lock`, and
        # a writer reopens its file when the path now names another inode, so a rotation by
        # one worker is seen by all before their next line, and nobody's rollback can cut
        # another's lines. Only the `primary` process sweeps retention and finishes
        # compressions left over from a crash, so two workers never race over one file.
        self._shared = shared
        self._primary = primary
        self._lock_fd = -1
        self.directory = Path(config.directory)
        # The live policy table: the configured categories, plus a default policy for every
        # other category a batch brings (routing bounds how many). Retention and the index
        # sink read it, so a dynamic category is swept like a configured one.
        self.policies: dict[str, FilePolicy] = dict(config.categories)
        self._telemetry = telemetry
        self._clock = clock
        self._disk_usage = disk_usage
        self._write = write
        self._lines = text_lines if config.format == "text" else json_lines
        chain = config.audit_chain
        self._chain = AuditChainWriter(ChainHasher(chain.key), fsync=config.fsync, clock=clock) if (
            chain.enabled and config.format == "json") else None
        self._lock = threading.Lock()
        self._open: OrderedDict[str, _FileSet] = OrderedDict()  # LRU of open file sets
        self._templates: dict[str, _Template] = {}
        self._resolved: dict[str, Path | None] = {}  # rel path → confined absolute path
        # → (rel path, whether it is there because the template was at its file limit)
        self._rendered: dict[tuple[str, str, str, tuple[Any, ...]], tuple[str, bool]] = {}
        # (category, tenant) → the files its templated path names: bounded by
        # max_files_per_template, seeded from the directory at start
        self._named: dict[tuple[str, str], set[str]] = {}
        self._over_limit_logged: set[tuple[str, str]] = set()
        self._root = self.directory
        self._compressor = _Compressor(self._record_error)
        # The clock mtimes come from, and how far ours is ahead of it (re-probed each minute):
        # a file found at start-up belongs to the period of its last write on *our* clock.
        self._fs_clock = file_clock(self.directory, clock)
        self._skew: tuple[float, float] = (0.0, float("-inf"))  # (skew, monotonic when probed)
        self.sweeper = RetentionSweeper(
            config, self.policies, telemetry, clock=clock, fs_clock=self._fs_clock,
            disk_usage=disk_usage,
            is_busy=self._compressor.is_busy,
        )
        self._listener: WriteListener | None = None
        self._listened: frozenset[str] = frozenset()  # categories it is told of; empty = all
        self._started = False
        self._stopped = False
        self._manifest_written = False
        self.last_error = ""
        self._failing = False
        # /healthz's disk.used_percent and the guard it is compared with, for alert rules
        # (deploy/prometheus/rules). NaN when the probe fails: no sample beats a made-up one.
        r = telemetry.registry
        Gauge("sluice_files_disk_used_percent",
              "Used space of the file system holding files.directory, in percent.",
              registry=r).set_function(self._disk_used_percent)
        Gauge("sluice_files_disk_max_used_percent",
              "files.disk.max_used_percent: above it retention removes rotated files.",
              registry=r).set(config.disk.max_used_percent)
        self._over_limit = Counter(
            "sluice_files_over_limit_records",
            "Records written to the fallback path because their category's templated path "
            "already names files.max_files_per_template files.", ["category"], registry=r)

    def follow(self, listener: WriteListener, categories: Sequence[str] = ()) -> None:
        """Tell `listener` of each batch's appends to the files of `categories` (empty: every
        category but metrics), in write order, under this sink's lock: the end offset, and
        with the first report of each inode a duplicate descriptor the listener then owns, so
        a rotation cannot hide the file's last lines from it."""
        self._listener = listener
        self._listened = frozenset(categories)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, *, background: bool = True) -> None:
        """Create the directory, finish compressions a crash left behind, start the gzip
        thread and the retention sweeper (`background=False` leaves sweeping to the caller)."""
        if self._started:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(
                f"files.directory: cannot create {self.directory}: {exc.strerror or exc}"
            ) from exc
        self._root = self.directory.resolve()
        if self._shared:
            lock_path = self.directory / ".sluice-files.lock"
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o640)
        self._started = True
        self._stopped = False
        self._compressor.start()
        self._scan(recover=self._primary)
        if self._primary and background:
            self.sweeper.start()

    @property
    def primary(self) -> bool:
        """Whether this process does the set-wide chores (worker 0, or the only process)."""
        return self._primary

    @property
    def chain_hasher(self) -> ChainHasher | None:
        """The audit chain's hasher, None when the chain is off."""
        return self._chain.hasher if self._chain is not None else None

    def audit_templates(self) -> list[str]:
        """The path templates audit records can be written under: the category's own and the
        fallback path when it names the category (`{category}.log` is always the last resort)."""
        policy = self.policies.get(AUDIT_CATEGORY) or self.config.default_policy(AUDIT_CATEGORY)
        templates = [policy.path]
        if "{category}" in self.config.fallback_path:
            templates.append(self.config.fallback_path)
        return list(dict.fromkeys([*templates, "{category}.log"]))

    def _record_audit_templates(self) -> None:
        """Write the audit templates into the manifest `verify` finds sets by: once per
        process, at its first audit write (under the sink lock and the flock), so a directory
        that never gets an audit record gets no manifest either."""
        assert self._chain is not None
        self._manifest_written = True
        try:
            record_templates(self._root, self.audit_templates(), self._chain.hasher)
        except OSError as exc:
            self._record_error(f"cannot write the audit manifest: {exc.strerror or exc}")

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """fsync every open file (writes are already with the OS) and wait for pending gzips."""
        ok = True
        with self._lock:
            for fs in self._open.values():
                try:
                    os.fsync(fs.fd)
                except OSError as exc:
                    self._record_error(f"fsync {fs.path}: {exc.strerror or exc}")
                    ok = False
        return self._compressor.wait(timeout_s) and ok

    def shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.sweeper.stop()
        self._compressor.stop(10.0)
        with self._lock:
            for fs in self._open.values():
                _close(fs)
            self._open.clear()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
        self._started = False

    def _disk_used_percent(self) -> float:
        try:
            return used_percent(self._disk_usage, self.directory)
        except OSError:
            return math.nan

    def disk_report(self) -> dict[str, Any]:
        """The disk use of `files.directory` as /healthz shows it (once, at its top level), by
        the same probe and definition as the guard and `sluice_files_disk_used_percent`."""
        return disk_report(self._disk_usage, self.directory, self.config.disk.max_used_percent)

    def health(self) -> dict[str, Any]:
        # The figure itself is /healthz's top-level `disk` (see disk_report): only the verdict here.
        try:
            over = used_percent(self._disk_usage, self.directory) > self.config.disk.max_used_percent
        except OSError:
            over = False
        with self._lock:
            open_files = len(self._open)
        return {
            "state": "degraded" if (self._failing or over) else "ok",
            "directory": str(self.directory),
            "disk_over_limit": over,
            "open_files": open_files,
            "pending_compressions": self._compressor.pending(),
            "last_error": self.last_error or self.sweeper.last_error,
        }

    # -- ingest ----------------------------------------------------------------------------
    def consume(self, batch: Batch) -> None:
        """Encode, group by file, write each group once; all or nothing (see module docs) — for
        the batch and the batches derived from it (`Batch.family`) together."""
        cache = BatchCache()
        cache.trace_url = self.config.trace_url
        ts = TimestampFormatter()
        groups: dict[str, _Group] = {}
        counts: dict[tuple[str, str], int] = {}  # (signal, category) → records
        over: dict[str, int] = {}  # category → records sent to the fallback by the file limit
        for member in batch.family():
            self._encode(member, groups, counts, over, cache, ts)
        if not groups:
            return
        self._write_groups(groups, counts, over)

    def _encode(self, batch: Batch, groups: dict[str, _Group], counts: dict[tuple[str, str], int],
                over: dict[str, int], cache: BatchCache, ts: TimestampFormatter) -> None:
        """Encode one batch's routed records into `groups` (destination file → lines)."""
        signal = batch.signal.value
        batch_values = {"signal": signal, "tenant": batch.tenant or None}
        for category, refs in batch.routes.items():
            if not refs:
                continue
            cat = self._category(category)
            template = self._template(cat.path)
            batch_values["category"] = category
            if template.static:
                lines = self._lines(batch, category, refs, cache=cache, ts=ts)
                rel = self._destination(template, batch_values)
                group = groups.get(rel)
                if group is None:
                    group = groups[rel] = _Group(cat)
                group.chunks.extend(lines)
                counts[signal, category] = counts.get((signal, category), 0) + len(lines)
                continue
            # Templated: the JSON encoders hand back each record's attribute dict, so the
            # template's fields cost dict lookups, not a second pass over the protobuf.
            cache.record_attrs = [] if batch.signal is not Signal.METRICS else None
            lines = self._lines(batch, category, refs, cache=cache, ts=ts)
            record_attrs, cache.record_attrs = cache.record_attrs, None
            if record_attrs is not None and len(record_attrs) != len(refs):
                record_attrs = None  # text format converts no attributes: look them up below
            counts[signal, category] = counts.get((signal, category), 0) + len(lines)
            for index, ((rl, _sl, rec), line) in enumerate(zip(refs, lines, strict=True)):
                if record_attrs is not None:
                    attrs = record_attrs[index]
                elif batch.signal is Signal.METRICS:
                    attrs = {}
                else:
                    attrs = _find_attributes(rec.attributes, template.record_fields)
                key = _field_key(template, batch_values, attrs, cache.resource_attributes(rl))
                # The fallback path may name the category: it is part of the cache key.
                cache_key = (template.text, category, batch.tenant, key)
                known = self._rendered.get(cache_key)
                if known is None:
                    values = {**batch_values, **dict(zip(template.fields, key, strict=True))}
                    known = self._limited_destination(template, values)
                    if len(self._rendered) > 65536:
                        self._rendered.clear()
                    self._rendered[cache_key] = known
                dest, over_limit = known
                if over_limit:
                    over[category] = over.get(category, 0) + 1
                group = groups.get(dest)
                if group is None:
                    group = groups[dest] = _Group(cat)
                group.chunks.append(line)

    def _write_groups(self, groups: dict[str, _Group], counts: dict[tuple[str, str], int],
                      over: dict[str, int]) -> None:
        """Write every group with one append each, under the lock; roll all back on failure."""
        bytes_by_category: dict[str, int] = {}
        with self._lock:
            if not self._started:
                raise SinkError("files sink is not started")
            now = self._clock()
            done: list[tuple[_FileSet, int]] = []
            # (file, rel, inode, end, bytes, duplicate fd or -1) for the write listener
            told: list[tuple[_FileSet, str, int, int, int, int]] = []
            sealed_batches: list[SealedBatch] = []  # audit chain heads, recorded only if all went well
            if self._lock_fd >= 0:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                for rel, group in groups.items():
                    fs = self._fileset(rel, group.category)
                    if self._chain is not None and group.category.name == AUDIT_CATEGORY:
                        # Rotate first, then seal: the chain reads its head (and any torn
                        # tail) from the files as they are when this batch is appended.
                        chunks = group.chunks
                        self._rotate_if_due(fs, sum(map(len, chunks)) + len(chunks) * SEAL_BYTES, now)
                        if not self._manifest_written:
                            self._record_audit_templates()
                        # Under the flock: the head is the file's, whoever wrote it last.
                        sealed = self._chain.seal(fs.path, fs.path.relative_to(self._root).as_posix(),
                                                  chunks)
                        sealed_batches.append(sealed)
                        data = b"".join(sealed.lines)
                    else:
                        data = b"".join(group.chunks)
                        self._rotate_if_due(fs, len(data), now)
                    done.append((fs, self._append(fs, data, now)))
                    name = group.category.name
                    if self._listener is not None and self._listens(name):
                        announce = fs.announced != fs.ino
                        told.append((fs, fs.rel, fs.ino, fs.size, len(data),
                                     os.dup(fs.fd) if announce else -1))
                        fs.announced = fs.ino
                    bytes_by_category[name] = bytes_by_category.get(name, 0) + len(data)
            except OSError as exc:
                self._rollback(done)
                for fs, *_, fd in told:
                    fs.announced = -1
                    if fd >= 0:
                        os.close(fd)
                self._failing = True
                self._record_error(f"write failed: {exc.strerror or exc}")
                if exc.errno in _DISK_FULL:
                    self.sweeper.relieve_pressure()
                    raise DiskFullError(
                        f"files: no space left under {self.directory} ({exc.strerror or exc})"
                    ) from exc
                raise SinkError(f"files: write failed under {self.directory}: {exc.strerror or exc}") from exc
            else:
                if self._chain is not None:
                    # After every write of the batch (and its fsync): a head never runs ahead
                    # of the data, whatever moment a crash picks.
                    for sealed in sealed_batches:
                        self._chain.commit(sealed)
                for _fs, rel, ino, end, n, fd in told:
                    assert self._listener is not None
                    self._listener.wrote(rel, ino, end, n, fd)
            finally:
                if self._lock_fd >= 0:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            self._failing = False
        telemetry = self._telemetry
        for category, n in over.items():
            self._over_limit.labels(category=category).inc(n)
        for (signal, category), n in counts.items():
            telemetry.written.labels(signal=signal, category=category, sink=self.name).inc(n)
        for category, n in bytes_by_category.items():
            telemetry.bytes_written.labels(sink=self.name, category=category).inc(n)

    def _listens(self, category: str) -> bool:
        return category in self._listened if self._listened else category != METRICS_CATEGORY

    # -- destinations ----------------------------------------------------------------------
    def _category(self, name: str) -> FilePolicy:
        policy = self.policies.get(name)
        if policy is None:
            policy = self.policies.setdefault(name, self.config.default_policy(name))
        return policy

    def _template(self, text: str) -> _Template:
        template = self._templates.get(text)
        if template is None:
            template = self._templates[text] = _Template(text)
        return template

    def _destination(self, template: _Template, values: Mapping[str, Any]) -> str:
        """A relative path confined under the directory: the template's, else the fallback's,
        else ``<category>.log`` (the fallback may itself name a field that is missing).

        An authenticated batch (`tenant` set from its token) goes under ``tenants/<tenant>/``
        whatever its template renders to, so no record field can reach another tenant's files.
        """
        tenant = values.get("tenant")
        prefix = f"{TENANTS_DIR}/{safe_component(tenant)}/" if tenant else ""
        rel = template.render(values)
        if rel is not None and self._confined(prefix + rel) is not None:
            return prefix + rel
        rel = self._template(self.config.fallback_path).render(values)
        if rel is not None and self._confined(prefix + rel) is not None:
            return prefix + rel
        return f"{prefix}{safe_component(values['category']) or 'app'}.log"

    def _limited_destination(self, template: _Template, values: Mapping[str, Any]
                             ) -> tuple[str, bool]:
        """`_destination`, within the category's file limit: a path the template has not named
        yet is taken only while the (category, tenant) names fewer than max_files_per_template
        files (or when the file is already there); otherwise the fallback path when it names
        no record field, else ``<category>.log``. Returns (path, whether limited)."""
        category = str(values["category"])
        tenant = str(values.get("tenant") or "")
        named = self._named.setdefault((category, tenant), set())
        limit = self.config.max_files_per_template
        rel = self._destination(template, values)
        if rel in named:
            return rel, False
        if len(named) < limit or os.path.exists(self.directory / rel):
            named.add(rel)
            return rel, False
        # Over the limit: the fallback, itself counted when it is a template.
        prefix = f"{TENANTS_DIR}/{safe_component(tenant)}/" if tenant else ""
        last_resort = f"{prefix}{safe_component(category) or 'app'}.log"
        fallback = self._template(self.config.fallback_path)
        shown = fallback.render(values)
        rel = last_resort
        if shown is not None and self._confined(prefix + shown) is not None and (
                fallback.static or prefix + shown in named):  # never one more file
            rel = prefix + shown
        if (category, tenant) not in self._over_limit_logged:
            self._over_limit_logged.add((category, tenant))
            log.warning("files: category %r%s names %d files, files.max_files_per_template; "
                        "further new paths go to %s (counted in "
                        "sluice_files_over_limit_records_total)", category,
                        f" of tenant {tenant!r}" if tenant else "", len(named), rel)
        return rel, True

    def _confined(self, rel: str) -> Path | None:
        if rel in self._resolved:
            return self._resolved[rel]
        if len(self._resolved) > 65536:
            self._resolved.clear()
        path: Path | None = self._root / rel
        resolved = os.path.realpath(path)  # type: ignore[arg-type]
        root = str(self._root)
        if not (resolved.startswith(root + os.sep)) or os.path.basename(resolved) in ("", ".", ".."):
            log.warning("files: path %r leaves %s; using the fallback path", rel, root)
            path = None
        self._resolved[rel] = path
        return path

    # -- file sets -------------------------------------------------------------------------
    def _fileset(self, rel: str, category: FilePolicy) -> _FileSet:
        fs = self._open.get(rel)
        if fs is not None:
            self._open.move_to_end(rel)
            return fs
        path = self._confined(rel)
        if path is None:  # the tree changed since the path was chosen (a symlink appeared)
            raise OSError(errno.EACCES, f"{rel} resolves outside files.directory")
        fs = _FileSet(rel=rel, path=path, category=category.name, rotation=category.rotation)
        while len(self._open) >= self.config.max_open_files:
            _rel, idle = self._open.popitem(last=False)
            _close(idle)
        self._open_fd(fs)
        self._open[rel] = fs
        return fs

    def _open_fd(self, fs: _FileSet) -> None:
        fs.path.parent.mkdir(parents=True, exist_ok=True)
        fs.fd = os.open(fs.path, _ACTIVE_FLAGS, 0o640)
        st = os.fstat(fs.fd)
        fs.size = st.st_size
        fs.ino = st.st_ino
        # A file left from before a restart belongs to the period of its last write.
        fs.period = period_key(st.st_mtime + self._mtime_skew(), fs.rotation.interval,
                               fs.rotation.utc) if st.st_size else ""

    def _mtime_skew(self) -> float:
        """Our clock minus the file system's (0 unless they disagree by over a second)."""
        skew, probed = self._skew
        if time.monotonic() - probed > 60.0:
            skew = self._clock() - self._fs_clock()
            skew = skew if abs(skew) > 1.0 else 0.0
            self._skew = (skew, time.monotonic())
        return skew

    def _rotate_if_due(self, fs: _FileSet, n_bytes: int, now: float) -> None:
        """Make `fs` the file the next `n_bytes` go to: reopen it if it was renamed or removed
        behind our back, quarantine a torn tail, and rotate when size or period says so."""
        if fs.fd < 0:  # a failed reopen (e.g. after a rotation) left it closed: try again
            self._open_fd(fs)
        st = os.fstat(fs.fd)
        if st.st_nlink == 0 or (self._shared and _renamed(fs.path, st)):
            # Removed behind our back (an external logrotate), or rotated by another worker.
            _close(fs)
            self._open_fd(fs)
            st = os.fstat(fs.fd)
        fs.size = st.st_size
        if fs.size and (self._shared or not fs.tail_checked) and fs.category != AUDIT_CATEGORY:
            # Once per open file, and before every write when other workers share it (one of
            # them may have died inside a write). Audit files keep their torn tail: the hash
            # chain acknowledges it in the next record instead (see auditchain).
            self._quarantine_torn_tail(fs)
        fs.tail_checked = True
        rotation = fs.rotation
        current = period_key(now, rotation.interval, rotation.utc)
        if fs.size and (
            fs.size + n_bytes > rotation.max_bytes
            or (rotation.interval != "none" and fs.period != current)
        ):
            self._rotate(fs)

    def _append(self, fs: _FileSet, data: bytes, now: float) -> int:
        """Append `data` whole (truncated back on any error); returns the pre-write size."""
        pre = fs.size
        view = memoryview(data)
        offset = 0
        try:
            while offset < len(data):
                n = self._write(fs.fd, view[offset:])
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                offset += n
            if self.config.fsync:
                # Here rather than after the batch: a later file of the same batch may evict
                # this one from the descriptor LRU.
                os.fsync(fs.fd)
        except OSError:
            _truncate(fs, pre)
            raise
        if not fs.size:
            fs.period = period_key(now, fs.rotation.interval, fs.rotation.utc)
        fs.size = pre + len(data)
        return pre

    def _quarantine_torn_tail(self, fs: _FileSet) -> None:
        """Move a torn last line (a crash inside a write left it without its newline) out of
        the file, into `<file>.torn`, and cut the file back to its last complete line.

        Without this the next acknowledged batch would be glued onto the fragment and its first
        record could not be parsed. The fragment belongs to a batch that was never
        acknowledged (the client retries it), so nothing is lost; it is kept for inspection.
        """
        if os.pread(fs.fd, 1, fs.size - 1) == b"\n":
            return
        cut, position = 0, fs.size
        while position > 0:
            start = max(0, position - 65536)
            found = os.pread(fs.fd, position - start, start).rfind(b"\n")
            if found >= 0:
                cut = start + found + 1
                break
            position = start
        fragment = os.pread(fs.fd, fs.size - cut, cut)
        quarantine = fs.path.with_name(fs.path.name + ".torn")
        fd = os.open(quarantine, _OPEN_FLAGS, 0o640)
        try:
            os.write(fd, fragment + b"\n")
        finally:
            os.close(fd)
        os.ftruncate(fs.fd, cut)
        fs.size = cut
        self._telemetry.torn_lines.labels(category=fs.category).inc()
        log.warning("files: %s ended in a torn record of %d bytes (a write cut short by a crash); "
                    "moved it to %s", fs.path, len(fragment), quarantine.name)

    def _rollback(self, done: list[tuple[_FileSet, int]]) -> None:
        for fs, pre in done:
            _truncate(fs, pre)

    def _rotate(self, fs: _FileSet) -> None:
        directory = fs.path.parent
        base = fs.path.name
        period = fs.period or period_key(self._clock(), fs.rotation.interval, fs.rotation.utc)
        seq = 1 + max((b.seq for b in backups_of(directory, base)), default=0)
        target = directory / f"{base}.{period}.{seq}"
        try:
            os.rename(fs.path, target)
        except OSError as exc:
            # Keep writing to the current file: a late rotation is better than a lost batch.
            self._record_error(f"cannot rotate {fs.path}: {exc.strerror or exc}")
            return
        _close(fs)
        self._open_fd(fs)
        self._telemetry.rotations.labels(category=fs.category).inc()
        if fs.rotation.compress:
            self._compressor.submit(target, fs.rotation.compress_level)
        if fs.rotation.max_backups:
            self._prune(fs)

    def _prune(self, fs: _FileSet) -> None:
        category = self.policies.get(fs.category)
        if category is not None and category.retention_days is None:
            return  # "forever" means forever: max_backups never removes audit-like data
        # One backup may briefly exist as both `x.1` and `x.1.gz` (mid-compression): count
        # backups by (seq, period), not by file name.
        backups: dict[tuple[int, str], list[str]] = {}
        for backup in backups_of(fs.path.parent, fs.path.name):
            backups.setdefault((backup.seq, backup.period), []).append(backup.name)
        order = list(backups)  # oldest first
        excess = len(order) - fs.rotation.max_backups
        for seq, period in order[: max(excess, 0)]:
            for name in backups[(seq, period)]:
                path = fs.path.parent / name
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    self._record_error(f"cannot remove {path}: {exc.strerror or exc}")
                    continue
                self._telemetry.retention_removed.labels(category=fs.category, reason="max_backups").inc()
                log.debug("files: removed %s (%s.%s) over max_backups", path, period, seq)

    def _scan(self, *, recover: bool) -> None:
        """One walk of the directory at start: count the files each templated category path
        already names (they count against max_files_per_template), and, when `recover`,
        remove half-written ``.gz.tmp`` files (and audit manifest temp files) and re-queue
        rotated files whose gzip a crash or a shutdown interrupted."""
        templated = [(name, template_regex(p.path, name)) for name, p in self.policies.items()
                     if not self._template(p.path).static]
        if not templated and not recover:
            return
        for dirpath, dirnames, filenames in os.walk(self.directory):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for filename in filenames:
                path = Path(dirpath, filename)
                if templated and ROTATED_RE.match(filename) is None:
                    self._count_existing(path.relative_to(self.directory).as_posix(), templated)
                if not recover:
                    continue
                if is_temp_name(filename):  # an audit manifest a crash left half-written
                    if not _temp_owner_alive(filename):
                        path.unlink(missing_ok=True)
                    continue
                if filename.endswith(".gz.tmp") or ".gz.tmp." in filename:
                    if not _temp_owner_alive(filename):  # another worker may be compressing
                        path.unlink(missing_ok=True)
                    continue
                m = ROTATED_RE.match(filename)
                if m is None or m.group("gz"):
                    continue
                rel = path.relative_to(self.directory).parent / m.group("base")
                owner = self.sweeper.category_of(rel.as_posix())
                cat = self.policies.get(owner[0]) if owner else None
                rotation = cat.rotation if cat else self.config.rotation
                if rotation.compress:
                    self._compressor.submit(path, rotation.compress_level)

    def _count_existing(self, rel: str, templated: list[tuple[str, re.Pattern[str]]]) -> None:
        tenant, rest = "", rel
        parts = rel.split("/", 2)
        if len(parts) == 3 and parts[0] == TENANTS_DIR:
            tenant, rest = parts[1], parts[2]
        for category, regex in templated:
            if regex.fullmatch(rest):
                self._named.setdefault((category, tenant), set()).add(rel)

    def _record_error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("files: %s", message)
        self.last_error = message


@dataclass(slots=True, eq=False)
class _Group:
    category: FilePolicy
    chunks: list[bytes] = field(default_factory=list)


def _find_attributes(kvs: Any, wanted: frozenset[str]) -> dict[str, Any]:
    """Only the attributes a template names (text format: nothing converted them yet)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        if kv.key in wanted:
            v = kv.value
            out[kv.key] = v.string_value or any_value(v)
    return out


def _field_key(template: _Template, batch_values: Mapping[str, Any], record: Mapping[str, Any],
               resource: Mapping[str, Any]) -> tuple[Any, ...]:
    """The template's field values in order: batch fields, else the record's attribute, else
    the resource's. Structured values (lists, maps) do not name files: they count as missing."""
    out: list[Any] = []
    for name in template.fields:
        if name in _BATCH_FIELDS:
            value = batch_values.get(name)
        else:
            value = record.get(name)
            if value is None or value == "":
                value = resource.get(name)
        out.append(value if isinstance(value, str | int | float) else None)
    return tuple(out)


def _renamed(path: Path, st: os.stat_result) -> bool:
    """Whether `path` no longer names the file `st` describes (another process rotated it)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return True
    return (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev)


def _close(fs: _FileSet) -> None:
    if fs.fd >= 0:
        try:
            os.close(fs.fd)
        finally:
            fs.fd = -1


def _truncate(fs: _FileSet, size: int) -> None:
    """Cut a file back to `size`; by path when the LRU closed it since it was written."""
    try:
        if fs.fd >= 0:
            os.ftruncate(fs.fd, size)
        else:
            os.truncate(fs.path, size)
        fs.size = size
    except OSError as exc:
        log.error("files: cannot truncate %s back to %d bytes: %s", fs.path, size, exc)

