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
JSON canonicalisation can hide an edit. The first record of a file set links to `GENESIS`.

The chain is per file set (``audit.log`` with its rotated ``.N``/``.N.gz`` files; one set per
tenant) and runs across rotation, gzip and restarts: the head is re-read from the newest
non-empty file of the set. A crash can leave a torn last line; it is kept as evidence, never
silently skipped: the next record carries ``"audit.torn_prev": sha256(fragment)`` so `verify`
can tell a crash the receiver saw from a line someone cut.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from sluice_collector.sinks.files.naming import ROTATED_RE, backups_of

__all__ = [
    "GENESIS", "SEAL_BYTES", "AuditChainWriter", "ChainBreak", "ChainHasher", "ChainKeyError", "ChainReport",
    "audit_sets", "chain_files", "load_key", "seal_lines", "verify_directory", "verify_set",
]

log = logging.getLogger("sluice.files")

GENESIS = "0" * 64
MIN_KEY_BYTES = 16
_HASH_MEMBER_RE = re.compile(rb',"audit\.hash":"([0-9a-f]{64})"\}$')
_PREV_MEMBER_RE = re.compile(
    rb'(?:,"audit\.torn_prev":"(?P<torn>[0-9a-f]{64})")?,"audit\.prev_hash":"(?P<prev>[0-9a-f]{64})"\}$'
)
_AUDIT_MARK = b'"audit.hash":"'
_TAIL_BLOCK = 64 * 1024
_RELIST_ATTEMPTS = 20
# What sealing adds to a line: ``,"audit.prev_hash":"<64 hex>","audit.hash":"<64 hex>"``.
SEAL_BYTES = len(',"audit.prev_hash":"","audit.hash":""') + 128


class ChainKeyError(ValueError):
    """A chain key that cannot be used; the message says which source and why."""


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


@dataclass(frozen=True, slots=True)
class _Sealed:
    content: bytes  # what the hash covers
    hash: str
    prev: str
    torn_prev: str | None


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
    return _Sealed(content, m.group(1).decode(), p.group("prev").decode(),
                   torn.decode() if torn else None)


def seal_lines(lines: list[bytes], prev: str, hasher: ChainHasher,
               torn: bytes | None = None) -> tuple[list[bytes], str]:
    """Chain JSON lines (each ``{…}\\n``) onto `prev`; returns them and the new head hash.
    `torn`: a cut fragment before them, acknowledged by the first line."""
    out: list[bytes] = []
    for index, line in enumerate(lines):
        body = line.rstrip(b"\n")
        ack = b""
        if torn is not None and index == 0:
            ack = b',"audit.torn_prev":"' + hashlib.sha256(torn).hexdigest().encode() + b'"'
        content = body[:-1] + ack + b',"audit.prev_hash":"' + prev.encode() + b'"}'
        prev = hasher(content)
        out.append(content[:-1] + b',"audit.hash":"' + prev.encode() + b'"}\n')
    return out, prev


# -- file sets ------------------------------------------------------------------------------

def chain_files(active: Path) -> list[Path]:
    """The files of `active`'s set in chain order: rotated oldest first (by their set-wide
    rotation sequence, see `retention.Backup`), then the active one. A backup present both
    plain and gzipped (mid-compression) counts once, as the plain file."""
    backups: dict[tuple[int, str], Path] = {}
    for backup in backups_of(active.parent, active.name):
        key = (backup.seq, backup.period)
        if key not in backups or not backup.gz:
            backups[key] = active.parent / backup.name
    files = list(backups.values())
    if active.exists():
        files.append(active)
    return files


def _open(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        yield from f


@dataclass(frozen=True, slots=True)
class _Tail:
    head: str  # the hash the next record links to
    fragment: bytes  # bytes after the last newline of the newest file ("" when it ends cleanly)
    in_active: bool  # the fragment is in the file the next write appends to


def _last_lines(path: Path) -> tuple[bytes, bytes]:
    """(last complete line without newline, bytes after the last newline)."""
    if path.name.endswith(".gz"):
        last, fragment = b"", b""
        for raw in _open(path):
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
    """The head the next record links to, and the torn bytes it must acknowledge.

    The fragment is whatever follows the last newline of the newest non-empty file. The head
    is the last complete record of the set: when a crash tore the very first record of a file
    (just after a rotation), that file holds no complete line and the head is in an older one.
    A file that vanishes while we read (the gzip thread replaced `x.1` by `x.1.gz`) makes us
    list the set again: skipping it would take the head from an older file.
    """
    for _attempt in range(_RELIST_ATTEMPTS):
        try:
            return _read_tail_once(active)
        except FileNotFoundError:
            continue
    return _read_tail_once(active)


def _read_tail_once(active: Path) -> _Tail:
    fragment, in_active, newest = b"", False, True
    for path in reversed(chain_files(active)):
        if path.stat().st_size == 0:
            continue
        last, tail = _last_lines(path)
        if newest:
            newest = False
            in_active = path == active
            whole = _parse_sealed(tail) if tail else None
            if whole is not None:  # a crash cut only the newline: the record itself is intact
                return _Tail(whole.hash, b"" if not in_active else b"\n", in_active)
            fragment = tail
        if not last:
            continue
        record = _parse_sealed(last)
        if record is None:
            log.warning("files: audit chain: the last line of %s is not a chained record "
                        "(written with the chain off?); the chain restarts here and "
                        "`sluice audit verify` will report this point", path)
        return _Tail(record.hash if record else GENESIS, fragment, in_active)
    return _Tail(GENESIS, fragment, in_active)


@dataclass(slots=True, eq=False)
class AuditChainWriter:
    """Seals audit lines for the file sink. Call `seal` and `commit` while holding the sink's
    lock and (with `--workers`) the cross-process flock: the head is then read from the file
    itself whenever another writer may have appended, so all workers extend one chain."""

    hasher: ChainHasher
    # active path → ((dev, inode, size) after our last write, head hash then)
    _heads: dict[Path, tuple[tuple[int, int, int], str]] = field(default_factory=dict)

    def seal(self, active: Path, lines: list[bytes]) -> tuple[list[bytes], str]:
        """`lines` chained onto the set's head; returns them and the head after them."""
        try:
            st = os.stat(active)
            key: tuple[int, int, int] | None = (st.st_dev, st.st_ino, st.st_size)
        except FileNotFoundError:
            key = None
        cached = self._heads.get(active)
        if cached is not None and key is not None and cached[0] == key:
            return seal_lines(lines, cached[1], self.hasher)
        tail = _read_tail(active)
        fragment = tail.fragment
        if fragment == b"\n":  # only the newline was lost: restore it, nothing to acknowledge
            sealed, head = seal_lines(lines, tail.head, self.hasher)
            return [b"\n", *sealed], head
        if not fragment:
            return seal_lines(lines, tail.head, self.hasher)
        log.warning("files: audit chain: %s ends in a torn record of %d bytes (a write cut "
                    "short by a crash); it is kept, and the next record acknowledges it in "
                    "audit.torn_prev", active if tail.in_active else "the newest rotated file of "
                    f"{active}", len(fragment))
        sealed, head = seal_lines(lines, tail.head, self.hasher, torn=fragment)
        if tail.in_active:
            sealed.insert(0, b"\n")  # the fragment stays a line of its own, as evidence
        return sealed, head

    def commit(self, active: Path, head: str) -> None:
        """Remember the head once the batch is on disk (a rolled-back batch is never committed)."""
        try:
            st = os.stat(active)
        except FileNotFoundError:
            self._heads.pop(active, None)
            return
        self._heads[active] = ((st.st_dev, st.st_ino, st.st_size), head)


# -- verification ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ChainBreak:
    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(slots=True)
class ChainReport:
    """One file set's verdict: `broken` is the first broken link, None when intact."""

    active: Path
    files: list[Path]
    records: int = 0
    torn: int = 0  # crash-torn records acknowledged by the receiver
    head: str = GENESIS
    broken: ChainBreak | None = None


def audit_sets(directory: Path) -> list[Path]:
    """Active paths of every audit file set under `directory` (tenant directories included):
    sets whose file name starts with ``audit`` or whose files hold chained records."""
    sets: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or ".gz.tmp" in name:
                continue
            m = ROTATED_RE.match(name)
            base = m.group("base") if m else name
            if m is None and name.endswith(".gz"):
                continue
            sets.setdefault(Path(dirpath, base), []).append(Path(dirpath, name))
    return sorted(active for active, files in sets.items()
                  if active.name.startswith("audit") or any(_holds_chain(f) for f in files))


def _holds_chain(path: Path) -> bool:
    try:
        for raw in _open(path):
            return _AUDIT_MARK in raw
    except (OSError, EOFError, zlib.error):
        return False
    return False


def verify_set(active: Path, hasher: ChainHasher,
               progress: Callable[[int, int], None] | None = None) -> ChainReport:
    """Walk one set in chain order; stop at the first broken link. `progress(lines, bytes)` is
    told what was read."""
    report = ChainReport(active, chain_files(active))
    prev = GENESIS
    pending: ChainBreak | None = None  # an unchained line, fine only if the next acknowledges it
    pending_digest = ""
    unterminated = False  # the previous line had no newline (a crash cut it)
    hint = "" if hasher.keyed else " (or the chain is keyed: pass --key-env or --key-file)"
    for file_index, path in enumerate(report.files):
        lineno = 0
        seen_bytes = 0
        try:
            for raw in _open(path):
                lineno += 1
                if progress is not None:
                    seen_bytes += len(raw)
                    if lineno % 4096 == 0:
                        progress(4096, seen_bytes)
                        seen_bytes = 0
                complete = raw.endswith(b"\n")
                line = raw[:-1] if complete else raw
                if not line and complete and (pending is not None or unterminated):
                    unterminated = False
                    continue  # the newline the receiver adds after a torn record
                unterminated = not complete
                record = _parse_sealed(line)
                if record is None:
                    if pending is not None:
                        report.broken = pending
                        return report
                    what = ("the record is cut short (truncated)" if not complete else
                            "not a chained audit record (no valid audit.prev_hash/audit.hash): "
                            "inserted, edited, or written with the chain off")
                    pending = ChainBreak(path, lineno, what)
                    pending_digest = hashlib.sha256(line).hexdigest()
                    continue
                if not hmac.compare_digest(hasher(record.content), record.hash):
                    report.broken = ChainBreak(path, lineno, "audit.hash does not match the "
                                               f"record's content: the record was modified{hint}")
                    return report
                if pending is not None:
                    if record.torn_prev != pending_digest:
                        report.broken = pending
                        return report
                    report.torn += 1
                    pending = None
                elif record.torn_prev is not None:
                    report.broken = ChainBreak(path, lineno, "acknowledges a torn record that is "
                                               "not there: the line before was removed or edited")
                    return report
                if record.prev != prev:
                    where = ("the previous file of the set ends with another record: a rotated "
                             "file was removed, truncated or swapped" if lineno == 1 and file_index
                             else "records before this line were deleted, reordered or inserted")
                    report.broken = ChainBreak(
                        path, lineno, f"audit.prev_hash does not link to the previous record: {where}")
                    return report
                prev = record.hash
                report.records += 1
        except (OSError, EOFError, zlib.error) as exc:
            report.broken = ChainBreak(path, lineno + 1, f"cannot read the file: {exc}")
            return report
        if progress is not None and (lineno % 4096 or seen_bytes):
            progress(lineno % 4096, seen_bytes)
    if pending is not None:
        report.broken = pending
    report.head = prev
    return report


def verify_directory(directory: Path, hasher: ChainHasher,
                     progress: Callable[[int, int], None] | None = None) -> list[ChainReport]:
    """A report for every audit file set under `directory`."""
    return [verify_set(active, hasher, progress) for active in audit_sets(directory)]
