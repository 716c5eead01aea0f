"""Tamper-evident audit files: every audit record carries its predecessor's hash and its own.

Why a hash chain: the audit category is kept forever and is what people reach for after an
incident, so an edit made later — a changed field, a removed or reordered record — must show.
A chain makes every record vouch for all records before it: changing any byte changes that
record's hash, which no longer matches the `audit.prev_hash` of the next one.

Line format. The file sink appends two members, last, to each audit record's JSON object:

    {...record..., "audit.prev_hash": "<64 hex>", "audit.hash": "<64 hex>"}

(without spaces). `audit.hash` is hex(SHA-256(content)) — HMAC-SHA256(key, content) when a chain
key is configured — where `content` is the line's exact bytes with the trailing
``,"audit.hash":"…"`` member removed, i.e. ending in ``"audit.prev_hash":"…"}``. Hashing bytes,
not a re-serialised object, means any verifier in any language gets the same answer and no
JSON canonicalisation can hide an edit.

The set's identity. The chain is per file set (``audit.log`` with its rotated ``.N``/``.N.gz``
files; one set per tenant and per rendered path) and its first record links to the set's
*genesis*: the hash of ``sluice.audit.genesis/v2`` and the set's path relative to
`files.directory` (``tenants/acme/audit.log``, ``audit/shop.log``). So a set copied or swapped
under another tenant's or path's name fails at its first record. Sets begun before this link to
64 zeros (`LEGACY_GENESIS`) and still verify, without that binding.

The head. Beside each set's active file, ``.<name>.audit-head`` records the newest record as
the receiver wrote it: which file holds it (the set's rotation count then), the byte offset
where its line ends, its hash and a running count — MAC'd like the records. It is rewritten in place
after every sealed batch, *after* the batch is on disk, so a crash can only leave the file ahead
of its head (authentic records that chain from it), never behind. A set whose files no longer
reach their head has lost its newest records: that is what closes the gap a chain alone has at
its end. A brand-new set gets its head (at its genesis) before its first byte, so a crash inside
the first write is covered too.

Gaps. When the writer finds the set no longer matching its head (records cut off or replaced,
the head missing, forged or rolled back) it does not adopt what is left: its next write begins
with a *gap record* (``"audit.gap": "<what was found>"``), sealed like every record, so the
evidence stays in the chain whatever happens to the head afterwards, and `verify` reports it.

Torn lines. A crash can leave a torn last line; it is kept as evidence, never silently skipped:
the next record carries ``"audit.torn_prev": sha256(the torn lines)`` (several lines joined by
``\\n`` when crashes followed each other) so `verify` can tell a crash the receiver saw from a
line someone cut. Only lines past the head can be acknowledged that way.

`ChainWalk` holds these rules once, for `verify`, the receiver's periodic check and the writer's
recovery alike (see `auditverify`).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import hmac
import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from sluice_collector.encode import rfc3339
from sluice_collector.sinks.files.naming import backups_of

__all__ = [
    "HEAD_SUFFIX", "LEGACY_GENESIS", "MANIFEST_NAME", "SEAL_BYTES", "AuditChainWriter", "ChainBreak",
    "ChainHasher", "ChainHead", "ChainKeyError", "ChainWalk", "HeadError", "SealedBatch", "SetFile",
    "chain_files", "genesis", "head_file_index", "head_path", "is_fragment", "is_temp_name", "load_key",
    "max_seq",
    "open_lines", "read_head", "read_manifest", "record_at", "record_templates", "seal_lines",
    "set_files", "torn_digest", "write_head",
]

log = logging.getLogger("sluice.files")

LEGACY_GENESIS = "0" * 64  # what the first record of a set begun before set identities links to
MIN_KEY_BYTES = 16
HEAD_SUFFIX = ".audit-head"
MANIFEST_NAME = ".audit-manifest"
_GENESIS_DOMAIN = b"sluice.audit.genesis/v2\n"
_HEAD_DOMAIN = b"sluice.audit.head/v1\n"
_MANIFEST_DOMAIN = b"sluice.audit.manifest/v1\n"
_HASH_MEMBER_RE = re.compile(rb',"audit\.hash":"([0-9a-f]{64})"\}$')
_PREV_MEMBER_RE = re.compile(
    rb'(?:,"audit\.torn_prev":"(?P<torn>[0-9a-f]{64})")?,"audit\.prev_hash":"(?P<prev>[0-9a-f]{64})"\}$'
)
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_TAIL_BLOCK = 64 * 1024
_RELIST_ATTEMPTS = 20
_MAX_STATES = 65536
_HEAD_BLOCK = 256
_HEAD_REREAD_S = (0.001, 0.01, 0.1)
# What sealing adds to a line: ``,"audit.prev_hash":"<64 hex>","audit.hash":"<64 hex>"``.
SEAL_BYTES = len(',"audit.prev_hash":"","audit.hash":""') + 128


class ChainKeyError(ValueError):
    """A chain key that cannot be used; the message says which source and why."""


class HeadError(ValueError):
    """A head or manifest file that cannot be trusted; the message says why."""


def load_key(*, env: str | None = None, file: str | os.PathLike[str] | None = None) -> bytes | None:
    """The HMAC key from an environment variable or a file (trailing whitespace stripped, as
    editors add a newline), or None for plain SHA-256. Short keys are refused: a guessable key
    is no better than none and would give false confidence."""
    if env is not None and file is not None:
        raise ChainKeyError("give a key from an environment variable or a file, not both")
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise ChainKeyError(f"environment variable {env} is not set or empty")
        key = value.encode("utf-8")
        source = f"environment variable {env}"
    elif file is not None:
        try:
            key = Path(file).read_bytes().rstrip()
        except OSError as exc:
            raise ChainKeyError(f"cannot read {str(file)!r}: {exc.strerror or exc}") from exc
        source = str(file)
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise ChainKeyError(f"the key in {source} has {len(key)} bytes; expected at least "
                            f"{MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)")
    return key


class ChainHasher:
    """SHA-256, or HMAC-SHA256 with a key: with a key, someone who can edit the files but not
    read the key cannot re-hash the chain after an edit."""

    def __init__(self, key: bytes | None = None) -> None:
        self.keyed = key is not None
        self._key = key

    def __call__(self, content: bytes) -> str:
        if self._key is not None:
            return hmac.new(self._key, content, hashlib.sha256).hexdigest()
        return hashlib.sha256(content).hexdigest()

    @property
    def hint(self) -> str:
        """What to add to a hash mismatch when the cause may be a missing key."""
        return "" if self.keyed else " (or the chain is keyed: pass --key-env or --key-file)"


def genesis(rel: str, hasher: ChainHasher) -> str:
    """What the first record of the set whose active file is `rel` (relative to
    `files.directory`, tenant prefix included) links to: binds the chain to its tenant and path."""
    return hasher(_GENESIS_DOMAIN + rel.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class _Sealed:
    content: bytes  # what the hash covers
    hash: str
    prev: str
    torn_prev: str | None
    gap: str | None  # a gap record's finding


def _parse_sealed(line: bytes) -> _Sealed | None:
    """A chained record (`line` without its newline), or None when it is not one."""
    m = _HASH_MEMBER_RE.search(line)
    if m is None:
        return None
    content = line[: m.start()] + b"}"
    p = _PREV_MEMBER_RE.search(content)
    if p is None:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    torn = p.group("torn")
    gap = obj.get("audit.gap")
    return _Sealed(content, m.group(1).decode(), p.group("prev").decode(),
                   torn.decode() if torn else None, gap if isinstance(gap, str) else None)


def is_fragment(line: bytes) -> bool:
    """Whether an unchained line can be what a crash tore (a cut-off line is never a whole JSON
    object), rather than a whole record written with the chain off, or by someone else."""
    try:
        return not isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return True


def torn_digest(lines: Iterable[bytes]) -> str:
    """What `audit.torn_prev` holds for unchained lines (without their newlines)."""
    return hashlib.sha256(b"\n".join(lines)).hexdigest()


def seal_lines(lines: list[bytes], prev: str, hasher: ChainHasher,
               torn: list[bytes] | bytes | None = None) -> tuple[list[bytes], str]:
    """Chain JSON lines (each ``{…}\\n``) onto `prev`; returns them and the new head hash.
    `torn`: cut lines before them (one fragment, or several), acknowledged by the first line."""
    out: list[bytes] = []
    if isinstance(torn, bytes):
        torn = [torn]
    for index, line in enumerate(lines):
        body = line.rstrip(b"\n")
        ack = b""
        if torn and index == 0:
            ack = b',"audit.torn_prev":"' + torn_digest(torn).encode() + b'"'
        content = body[:-1] + ack + b',"audit.prev_hash":"' + prev.encode() + b'"}'
        prev = hasher(content)
        out.append(content[:-1] + b',"audit.hash":"' + prev.encode() + b'"}\n')
    return out, prev


# -- file sets ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SetFile:
    """One file of a set in chain order. `seq` is its rotation sequence (None: the active
    file); `twin` is the ``.gz`` of a rotated file also present plain (mid-compression, or a
    copy someone made): the chain is read from the plain one and the two must agree."""

    path: Path
    seq: int | None
    twin: Path | None = None


def set_files(active: Path) -> list[SetFile]:
    """The files of `active`'s set in chain order: rotated oldest first (by their set-wide
    rotation sequence, see `naming.Backup`), then the active one."""
    grouped: dict[tuple[int, str], list[tuple[str, bool]]] = {}
    for backup in backups_of(active.parent, active.name):
        grouped.setdefault((backup.seq, backup.period), []).append((backup.name, backup.gz))
    out: list[SetFile] = []
    for (seq, _period), names in grouped.items():
        plain = next((n for n, gz in names if not gz), None)
        packed = next((n for n, gz in names if gz), None)
        main = plain if plain is not None else packed
        assert main is not None
        twin = active.parent / packed if plain is not None and packed is not None else None
        out.append(SetFile(active.parent / main, seq, twin))
    if active.exists():
        out.append(SetFile(active, None))
    return out


def chain_files(active: Path) -> list[Path]:
    """The paths `set_files` reads the chain from, in order."""
    return [f.path for f in set_files(active)]


def max_seq(active: Path) -> int:
    """The set's rotation count: the highest rotation sequence present (0 before any)."""
    return max((b.seq for b in backups_of(active.parent, active.name)), default=0)


def open_lines(path: Path) -> Iterator[bytes]:
    """The raw lines of a set file (decompressed when it is a ``.gz``), newlines kept."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        yield from f


def record_at(path: Path, size: int) -> tuple[_Sealed | None, str]:
    """The chained record whose line ends at byte `size` of `path` (decompressed), or None and
    what is there instead."""
    if path.name.endswith(".gz"):
        offset = 0
        for raw in open_lines(path):
            offset += len(raw)
            if offset == size:
                return (_parse_sealed(raw[:-1]), "") if raw.endswith(b"\n") else (
                    None, f"byte {size} is inside a line")
            if offset > size:
                return None, f"byte {size} is inside a line"
        return None, f"the file ends at byte {offset}"
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        if end < size:
            return None, f"the file ends at byte {end}"
        data, pos = b"", size
        while pos > 0 and b"\n" not in data[:-1]:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    if not data.endswith(b"\n"):
        return None, f"byte {size} is inside a line"
    return _parse_sealed(data[:-1].rpartition(b"\n")[2]), ""


def _lines_after(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """(offset, raw line) of `path` from byte `start` on (a line boundary)."""
    if path.name.endswith(".gz"):
        offset = 0
        for raw in open_lines(path):
            if offset >= start:
                yield offset, raw
            offset += len(raw)
        return
    with path.open("rb") as f:
        f.seek(start)
        offset = start
        for raw in f:
            yield offset, raw
            offset += len(raw)


# -- the head and the manifest --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a set's newest record is, as the receiver last wrote it (see the module docs)."""

    set: str  # the set's path relative to files.directory (its identity)
    gen: int  # rotations of the set before the file holding the record: it is the active file,
    #           or the rotated file with sequence gen + 1 once the set has rotated again
    size: int  # where the record's line ends in that file (decompressed); 0 = no record yet
    hash: str  # the record's audit.hash (the set's genesis when size is 0)
    seq: int  # records sealed since the head began (a new set's: its record count)

    def _body(self) -> bytes:
        return orjson.dumps({"v": 1, "set": self.set, "gen": self.gen, "size": self.size,
                             "hash": self.hash, "seq": self.seq})

    def encode(self, hasher: ChainHasher) -> bytes:
        body = self._body()
        return body[:-1] + b',"mac":"' + hasher(_HEAD_DOMAIN + body).encode() + b'"}\n'


def head_path(active: Path) -> Path:
    """Where the head of `active`'s set is kept: a hidden file beside it."""
    return active.with_name(f".{active.name}{HEAD_SUFFIX}")


def read_head(path: Path, hasher: ChainHasher) -> ChainHead | None:
    """The head at `path`, None when there is none; `HeadError` when it cannot be trusted.

    A head is rewritten in place while others read it: a read that catches a write half done
    does not check out, so that is read again (a write takes microseconds) before it counts."""
    for delay_s in _HEAD_REREAD_S:
        try:
            return _read_head_once(path, hasher)
        except HeadError:
            time.sleep(delay_s)
    return _read_head_once(path, hasher)


def _read_head_once(path: Path, hasher: ChainHasher) -> ChainHead | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HeadError(f"cannot read it: {exc.strerror or exc}") from exc
    if not data:
        return None  # created, and the process died before its first write
    try:
        obj = orjson.loads(data.partition(b"\n")[0])
    except orjson.JSONDecodeError:
        obj = None
    fields = ("set", str), ("gen", int), ("size", int), ("hash", str), ("seq", int), ("mac", str)
    if not isinstance(obj, dict) or obj.get("v") != 1 or not all(
            isinstance(obj.get(k), t) and not isinstance(obj.get(k), bool) for k, t in fields):
        raise HeadError("it is not a head file (damaged or replaced)")
    if not _HEX64_RE.fullmatch(obj["hash"]) or obj["gen"] < 0 or obj["size"] < 0 or obj["seq"] < 0:
        raise HeadError("it is not a head file (damaged or replaced)")
    head = ChainHead(obj["set"], obj["gen"], obj["size"], obj["hash"], obj["seq"])
    if not hmac.compare_digest(hasher(_HEAD_DOMAIN + head._body()), obj["mac"]):
        raise HeadError(f"its MAC does not match: it was modified{hasher.hint}")
    return head


def _replace_file(path: Path, data: bytes, *, fsync: bool) -> None:
    """Write `data` to `path` atomically (a temp name, then rename): a crash leaves the old
    file or the new one, never half of one."""
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o640)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise OSError(errno.EIO, "short write")
            view = view[written:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def write_head(active: Path, head: ChainHead, hasher: ChainHasher, *, fsync: bool = False) -> None:
    """Overwrite the head in place with one write at offset 0.

    Why not a temp file and a rename: ext4 starts writeback of the new file on every rename over
    an existing one (its replace-via-rename heuristic), which costs milliseconds per batch. One
    write of less than a page cannot be torn by a crash of the process (the kernel copies a page
    whole before it looks at signals), and it stays within one 512-byte sector. The line is
    padded with spaces to a multiple of 256 bytes; readers take the first line, so what a
    shorter head leaves behind it is ignored."""
    line = head.encode(hasher)
    data = line[:-1] + b" " * (-len(line) % _HEAD_BLOCK) + b"\n"
    fd = os.open(head_path(active), os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o640)
    try:
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(errno.EIO, "short write")
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(root: Path, hasher: ChainHasher) -> list[str] | None:
    """The audit path templates recorded in `root`'s manifest, None when there is none;
    `HeadError` when it cannot be trusted."""
    try:
        data = (root / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HeadError(f"cannot read it: {exc.strerror or exc}") from exc
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    templates = obj.get("templates") if isinstance(obj, dict) else None
    if (not isinstance(obj, dict) or obj.get("v") != 1 or not isinstance(templates, list)
            or not all(isinstance(t, str) for t in templates) or not isinstance(obj.get("mac"), str)):
        raise HeadError("it is not an audit manifest (damaged or replaced)")
    body = orjson.dumps({"v": 1, "templates": templates})
    if not hmac.compare_digest(hasher(_MANIFEST_DOMAIN + body), obj["mac"]):
        raise HeadError(f"its MAC does not match: it was modified{hasher.hint}")
    return list(templates)


def record_templates(root: Path, templates: Iterable[str], hasher: ChainHasher) -> None:
    """Add the path templates audit records are written under to `root`'s manifest, so
    `verify` finds every set by name even when its content gives nothing away. A manifest that
    cannot be trusted is left as it is (it is evidence) and reported by `verify`."""
    try:
        known = read_manifest(root, hasher) or []
    except HeadError as exc:
        log.error("files: audit chain: %s: %s; leaving it for `sluice audit verify` to report",
                  root / MANIFEST_NAME, exc)
        return
    merged = known + [t for t in dict.fromkeys(templates) if t not in known]
    if merged == known and (root / MANIFEST_NAME).exists():
        return
    body = orjson.dumps({"v": 1, "templates": merged})
    data = body[:-1] + b',"mac":"' + hasher(_MANIFEST_DOMAIN + body).encode() + b'"}\n'
    _replace_file(root / MANIFEST_NAME, data, fsync=True)


def head_file_index(files: list[SetFile], gen: int) -> int | None:
    """Index in `files` of the file a head of generation `gen` points into: the rotated file
    with sequence gen + 1 once the set has rotated since, else the active file."""
    later = [i for i, f in enumerate(files) if f.seq is not None and f.seq > gen]
    if later:
        return next((i for i in later if files[i].seq == gen + 1), None)
    return len(files) - 1 if files and files[-1].seq is None else None


# -- the rules ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ChainBreak:
    path: Path
    line: int  # 0: the file as a whole
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.line else f"{self.path}: {self.reason}"


@dataclass(frozen=True, slots=True)
class _Pending:
    """Where the first unchained line since the last record is."""

    path: Path
    line: int
    file_index: int
    offset: int
    complete: bool

    def breaks(self) -> ChainBreak:
        return ChainBreak(self.path, self.line, "the record is cut short (truncated)" if not self.complete
                          else "not a chained audit record (no valid audit.prev_hash/audit.hash): "
                               "inserted, edited, or written with the chain off")


@dataclass(slots=True)
class ChainWalk:
    """The chain's rules over a set's lines, fed one at a time in chain order.

    Each record must hash to its `audit.hash` and link to the record before it (the first one
    to the set's genesis, or to `LEGACY_GENESIS`); unchained lines are held as *pending* until
    the next record acknowledges exactly them in `audit.torn_prev`; a gap record is a break.
    `prev` is None before the first record. Cheap to `copy`, so a verifier can resume.
    """

    hasher: ChainHasher
    genesis: str
    prev: str | None = None
    records: int = 0
    torn: int = 0  # unchained lines acknowledged as torn by a crash
    legacy: bool = False  # the first record links to LEGACY_GENESIS: not bound to its set
    unterminated: bool = False  # the last line had no newline (a crash cut it)
    pending: list[bytes] = field(default_factory=list)
    pending_at: _Pending | None = None
    broken: ChainBreak | None = None

    def copy(self) -> ChainWalk:
        return replace(self, pending=list(self.pending))

    def feed(self, raw: bytes, path: Path, lineno: int, *, file_index: int = 0, offset: int = 0) -> bool:
        """Take one raw line (with its newline, if it has one); False once broken."""
        if self.broken is not None:
            return False
        complete = raw.endswith(b"\n")
        line = raw[:-1] if complete else raw
        if not line and complete and (self.pending or self.unterminated):
            self.unterminated = False
            return True  # the newline the receiver adds after a torn line
        self.unterminated = not complete
        record = _parse_sealed(line)
        if record is None:
            if not self.pending:
                self.pending_at = _Pending(path, lineno, file_index, offset, complete)
            self.pending.append(line)
            return True
        if not hmac.compare_digest(self.hasher(record.content), record.hash):
            return self._break(path, lineno, "audit.hash does not match the record's content: the "
                                             f"record was modified{self.hasher.hint}")
        if self.pending:
            if record.torn_prev != torn_digest(self.pending):
                assert self.pending_at is not None
                self.broken = self.pending_at.breaks()
                return False
            self.torn += len(self.pending)
            self.pending.clear()
            self.pending_at = None
        elif record.torn_prev is not None:
            return self._break(path, lineno, "acknowledges a torn record that is not there: the line "
                                             "before was removed or edited")
        if self.prev is None:
            if record.prev == LEGACY_GENESIS:
                self.legacy = True
            elif record.prev != self.genesis:
                return self._break(path, lineno, "audit.prev_hash is not the start of this set's chain: "
                                   "the records belong to another tenant's or path's set (moved or "
                                   "swapped here), or the set's oldest records were removed")
        elif record.prev != self.prev:
            where = ("the previous file of the set ends with another record: a rotated file was "
                     "removed, truncated or swapped" if lineno == 1 and file_index
                     else "records before this line were deleted, reordered or inserted")
            return self._break(path, lineno, f"audit.prev_hash does not link to the previous record: {where}")
        self.prev = record.hash
        self.records += 1
        if record.gap is not None:
            return self._break(path, lineno, f"the receiver found the chain cut here: {record.gap}")
        return True

    def _break(self, path: Path, lineno: int, reason: str) -> bool:
        self.broken = ChainBreak(path, lineno, reason)
        return False


# -- writing --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SealedBatch:
    """One batch's lines for one set, chained, and the head to record once they are on disk."""

    active: Path
    lines: list[bytes]
    head: ChainHead  # `size` is filled in by `commit`


@dataclass(frozen=True, slots=True)
class _Start:
    """Where the next batch of a set continues the chain."""

    prev: str
    seq: int
    torn: list[bytes] = field(default_factory=list)  # unchained lines the first record acknowledges
    newline: bool = False  # the active file ends without one: add it first
    gap: str = ""  # what the writer found instead of its head: write a gap record first
    new: bool = False  # a set with nothing in it yet: record its head before the first byte


@dataclass(frozen=True, slots=True)
class _SetState:
    key: tuple[int, int, int]  # (dev, inode, size) of the active file after our last write
    head: ChainHead


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size


class AuditChainWriter:
    """Seals audit lines for the file sink. Call `seal` and `commit` while holding the sink's
    lock and (with `--workers`) the cross-process flock, `commit` once the batch is written:
    the head then always trails the data, and whenever another writer may have appended the
    chain is resumed from the head file, so all workers extend one chain."""

    def __init__(self, hasher: ChainHasher, *, fsync: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.hasher = hasher
        self._fsync = fsync
        self._clock = clock
        self._states: dict[Path, _SetState] = {}
        self._head_error = ""

    def seal(self, active: Path, rel: str, lines: list[bytes]) -> SealedBatch:
        """`lines` chained onto the set's head. `rel` is the set's identity: `active` relative
        to files.directory."""
        state = self._states.get(active)
        key = _stat_key(active)
        if state is not None and key == state.key:
            sealed, last = seal_lines(lines, state.head.hash, self.hasher)
            head = state.head
            return SealedBatch(active, sealed, ChainHead(head.set, head.gen, 0, last, head.seq + len(lines)))
        gen = max_seq(active)
        if state is not None and self._rotated_untouched(active, state, key):
            start = _Start(state.head.hash, state.head.seq)
        else:
            start = self._recover(active, rel, state)
        if start.new:
            write_head(active, ChainHead(rel, gen, 0, start.prev, 0), self.hasher, fsync=self._fsync)
        body = lines
        if start.gap:
            log.error("files: audit chain of %s: %s; writing a gap record (sluice audit verify "
                      "will report this set)", active, start.gap)
            body = [self._gap_line(start.gap), *lines]
        sealed, last = seal_lines(body, start.prev, self.hasher, torn=start.torn)
        if start.torn:
            log.warning("files: audit chain: %s ends in a torn record (%d line(s): a write cut "
                        "short by a crash); it is kept, and the next record acknowledges it in "
                        "audit.torn_prev", active, len(start.torn))
        if start.newline:
            sealed.insert(0, b"\n")  # a torn line stays a line of its own, as evidence
        return SealedBatch(active, sealed, ChainHead(rel, gen, 0, last, start.seq + len(body)))

    def commit(self, batch: SealedBatch) -> None:
        """Record the head once the batch is on disk (a rolled-back batch is never committed)."""
        key = _stat_key(batch.active)
        if key is None:
            self._states.pop(batch.active, None)
            return
        head = batch.head
        head = ChainHead(head.set, head.gen, key[2], head.hash, head.seq)
        if len(self._states) >= _MAX_STATES:
            self._states.clear()  # the head files hold the truth; this is only a cache
        self._states[batch.active] = _SetState(key, head)
        try:
            write_head(batch.active, head, self.hasher, fsync=self._fsync)
        except OSError as exc:
            # The records are on disk and chained; the head only trails further behind, which
            # verify allows. The next batch writes it again.
            message = f"cannot write the audit head of {batch.active}: {exc.strerror or exc}"
            if message != self._head_error:
                log.warning("files: %s", message)
            self._head_error = message

    # -- recovery ----------------------------------------------------------------------------
    def _rotated_untouched(self, active: Path, state: _SetState, key: tuple[int, int, int] | None) -> bool:
        """This sink rotated the set since its last write and nobody wrote since: the newest
        rotated file is the very file it left (no need to re-read it, maybe gzipped)."""
        if key is not None and key[2]:
            return False
        backups = backups_of(active.parent, active.name)
        if not backups or backups[-1].gz or backups[-1].seq != state.head.gen + 1:
            return False
        return _stat_key(active.parent / backups[-1].name) == state.key

    def _recover(self, active: Path, rel: str, state: _SetState | None) -> _Start:
        """Where to continue when the file changed behind this writer's back: after a restart,
        another worker's write, a crash — or tampering, which becomes a gap record."""
        name = head_path(active).name
        problem = ""
        try:
            head = read_head(head_path(active), self.hasher)
        except HeadError as exc:
            head, problem = None, f"the head file {name} cannot be trusted: {exc}"
        if head is not None and head.set != rel:
            problem = f"the head file {name} belongs to another set ({head.set})"
        elif head is not None and state is not None and head.seq < state.head.seq:
            problem = (f"the head file {name} went back from record #{state.head.seq} to "
                       f"#{head.seq} (an older copy was put back)")
        if problem:
            head = None
        for _attempt in range(_RELIST_ATTEMPTS):
            try:
                if head is not None:
                    resumed = _resume(active, rel, head, self.hasher)
                    if isinstance(resumed, _Start):
                        return resumed
                    problem = resumed
                elif not problem:
                    first, anything = _first_record(active)
                    if first is None and not anything:
                        return _Start(genesis(rel, self.hasher), 0, new=True)
                    if first is not None and first.prev == LEGACY_GENESIS:
                        tail = _read_tail(active)
                        log.info("files: audit chain: %s has no head file (written by an older "
                                 "version); it is created now", active)
                        return _Start(tail.head or genesis(rel, self.hasher), 0, tail.torn, tail.newline)
                    problem = f"the head file {name} is missing"
                tail = _read_tail(active)
                seq = head.seq if head is not None else (state.head.seq if state is not None else 0)
                return _Start(tail.head or genesis(rel, self.hasher), seq, tail.torn, tail.newline,
                              gap=problem)
            except FileNotFoundError:
                continue  # the gzip thread replaced `x.N` by `x.N.gz` while we read: list again
        raise OSError(errno.EAGAIN, f"the files of {active} kept changing while the audit chain read them")

    def _gap_line(self, finding: str) -> bytes:
        stamp = rfc3339(int(self._clock() * 1e9))
        return orjson.dumps({
            "timestamp": stamp, "observed_timestamp": stamp, "severity": "ERROR", "severity_number": 17,
            "body": f"audit chain cut: {finding}", "category": "audit",
            "service.name": "sluice-receiver", "trace_id": "", "span_id": "",
            "attributes": {"audit.action": "audit.chain.gap", "audit.gap.reason": finding},
            "resource": {"service.name": "sluice-receiver"}, "scope": {"name": "sluice.files"},
            "event_name": "audit.chain.gap", "audit.gap": finding,
        }) + b"\n"


def _resume(active: Path, rel: str, head: ChainHead, hasher: ChainHasher) -> _Start | str:
    """Continue from a trusted head: the set must still hold the head record where the head
    says, and whatever follows it may only be records chaining from it (the one batch a crash
    between the data and the head write leaves) and torn lines. Else: what is wrong."""
    files = set_files(active)
    index = head_file_index(files, head.gen)
    if index is None:
        return (f"the file holding the head record #{head.seq} (rotation {head.gen + 1}, or the "
                "active file) is gone: the newest files of the set were removed")
    target = files[index].path
    if head.size:
        record, why = record_at(target, head.size)
        if record is None or record.hash != head.hash or not hmac.compare_digest(
                hasher(record.content), record.hash):
            return (f"the set no longer holds its head record #{head.seq} ({head.hash[:16]}…, ending "
                    f"at byte {head.size} of {target.name}): {why or 'another record is there'}; its "
                    "newest records were removed or replaced")
    elif head.hash != genesis(rel, hasher):
        return f"the head file points at no record of this set (genesis {head.hash[:16]}…)"
    walk = ChainWalk(hasher, genesis(rel, hasher), prev=head.hash if head.size else None)
    for i in range(index, len(files)):
        path = files[i].path
        for lineno, (offset, raw) in enumerate(_lines_after(path, head.size if i == index else 0), 1):
            if not walk.feed(raw, path, lineno, file_index=i, offset=offset):
                assert walk.broken is not None
                return (f"what follows the head record #{head.seq} in {path.name} does not chain from "
                        f"it (line {lineno} after byte {head.size if i == index else 0}: "
                        f"{walk.broken.reason})")
    whole = next((line for line in walk.pending if not is_fragment(line)), None)
    if whole is not None:
        return (f"a whole unchained record follows the head record #{head.seq} (written with the "
                "chain off, or by someone else)")
    return _Start(walk.prev or genesis(rel, hasher), head.seq + walk.records, list(walk.pending),
                  _ends_unterminated(active))


def _ends_unterminated(active: Path) -> bool:
    try:
        with active.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            if not end:
                return False
            f.seek(end - 1)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _first_record(active: Path) -> tuple[_Sealed | None, bool]:
    """The set's first chained record, and whether the set holds any bytes at all."""
    anything = False
    for f in set_files(active):
        try:
            for raw in open_lines(f.path):
                anything = True
                record = _parse_sealed(raw.rstrip(b"\n"))
                if record is not None:
                    return record, True
        except (EOFError, zlib.error, gzip.BadGzipFile):
            anything = True
    return None, anything


@dataclass(frozen=True, slots=True)
class _Tail:
    head: str | None  # the hash of the set's last complete record (None: there is none)
    torn: list[bytes]  # bytes after it, when a crash left a fragment ([] when it ends cleanly)
    newline: bool  # the fragment is in the active file: the next write starts a new line


def _last_lines(path: Path) -> tuple[bytes, bytes]:
    """(last complete line without newline, bytes after the last newline)."""
    if path.name.endswith(".gz"):
        last, fragment = b"", b""
        for raw in open_lines(path):
            if raw.endswith(b"\n"):
                last = raw[:-1]
            else:
                fragment = raw
        return last, fragment
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        pos = end
        # Read backwards until the last complete line is whole (audit lines can be long).
        while pos > 0 and data.count(b"\n") < 2:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    cut = data.rfind(b"\n")
    if cut < 0:
        return b"", data
    return data[:cut].rpartition(b"\n")[2], data[cut + 1:]


def _read_tail(active: Path) -> _Tail:
    """The set's last record and a torn fragment after it, read from the files alone (sets
    without a head: written by an older version, or to chain a gap record onto what is left).

    The fragment is whatever follows the last newline of the newest non-empty file. The last
    record may be in an older file: when a crash tore the very first record of a file (just
    after a rotation), that file holds no complete line.
    """
    fragment, in_active, newest = b"", False, True
    for f in reversed(set_files(active)):
        path = f.path
        if path.stat().st_size == 0:
            continue
        last, tail = _last_lines(path)
        if newest:
            newest = False
            in_active = path == active
            whole = _parse_sealed(tail) if tail else None
            if whole is not None:  # a crash cut only the newline: the record itself is intact
                return _Tail(whole.hash, [], in_active)
            fragment = tail
        if not last:
            continue
        record = _parse_sealed(last)
        if record is None:
            log.warning("files: audit chain: the last line of %s is not a chained record "
                        "(written with the chain off?); the chain restarts here and "
                        "`sluice audit verify` will report this point", path)
        return _Tail(record.hash if record else None, [fragment] if fragment else [],
                     bool(fragment) and in_active)
    return _Tail(None, [fragment] if fragment else [], bool(fragment) and in_active)


def is_temp_name(name: str) -> bool:
    """Whether `name` is a manifest temp file (``<name>.tmp.<pid>``) a crash may leave."""
    return name.startswith(f"{MANIFEST_NAME}.tmp.")
