"""Verification of audit file sets: `sluice audit verify` and the receiver's periodic check.

Which sets. Every audit set under the directory is found by its name, never only by what its
first line happens to hold (one junk line must not hide a set):

- head files (``.<name>.audit-head``): every set a receiver of this version has written;
- the path templates in the manifest (``.audit-manifest`` in `files.directory`, where the
  receiver records `categories.audit.path` and the fallback path with its first audit record)
  and any given on the command line (`--config`), with ``{category}`` as ``audit`` and any
  other field as one path component, under ``tenants/<tenant>/`` or not;
- file names starting with ``audit`` (the default ``audit.log``, the last-resort fallback);
- sets whose first line is a chained record (sets written by older versions under a custom path).

A set found by any of these is verified; a head without files, a manifest that is missing
while heads exist, or one whose MAC does not match, are reported like a broken link.

What is checked, per set: the `ChainWalk` rules over its files in order (rotated oldest first,
then the active file); a rotated file present both plain and gzipped must be the same bytes
twice; the first record links to the set's own genesis (or is a legacy set); the set still holds
its head record where the head file says, and anything after the head is records that chain
from it plus, at the very end, lines torn by a crash the receiver has not written past yet.

`ChainVerifier` keeps, per set, where it got to: a rotated file whose name, inode, size, mtime and
ctime are unchanged is not read again (ctime cannot be set back by a file's owner), and the
active file is parsed on from where it was left once the part verified before hashes the same
(one SHA-256 pass, no parsing), so the receiver's periodic run parses only what was written
since the last one and reads one active file per set. Reading while the
receiver writes is safe without its lock: the head is read before the files, and it only ever
trails the data; a set whose file list changed during a run (a rotation, a gzip finishing) is
read again before anything is reported.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from sluice_collector.sinks.files.auditchain import (
    HEAD_SUFFIX,
    MANIFEST_NAME,
    ChainBreak,
    ChainHasher,
    ChainHead,
    ChainWalk,
    HeadError,
    SetFile,
    genesis,
    head_file_index,
    head_path,
    is_fragment,
    open_lines,
    read_head,
    read_manifest,
    record_at,
    set_files,
)
from sluice_collector.sinks.files.naming import ROTATED_RE, backups_of
from sluice_collector.sinks.files.retention import TENANTS_DIR, template_regex

__all__ = ["AUDIT_CATEGORY", "ChainReport", "ChainVerifier", "audit_sets", "find_root",
           "verify_directory", "verify_set"]

AUDIT_CATEGORY = "audit"
_HEAD_NAME_RE = re.compile(rf"^\.(?P<name>.+){re.escape(HEAD_SUFFIX)}$")
_TENANT_PREFIX_RE = re.compile(rf"^{TENANTS_DIR}/[^/]+/(?P<rest>.+)$")
_AUDIT_MARK = b'"audit.hash":"'
_ATTEMPTS = 5
_READ_BYTES = 1024 * 1024


@dataclass(slots=True)
class ChainReport:
    """One file set's verdict: `broken` is the first broken link, None when intact."""

    active: Path
    rel: str  # the set's identity: its active path relative to files.directory
    files: list[Path]
    records: int = 0
    torn: int = 0  # crash-torn lines acknowledged by the receiver
    torn_unacknowledged: int = 0  # torn lines after the head: a crash not yet written past
    head: str = ""  # the hash of the newest record
    head_file: ChainHead | None = None
    legacy: bool = False  # begun before set identities and heads: bound to no set, no head
    broken: ChainBreak | None = None


def find_root(directory: Path) -> Path:
    """The `files.directory` that `directory` belongs to — the nearest directory, itself or
    above, holding the manifest — since set identities are paths relative to it."""
    absolute = Path(os.path.abspath(directory))
    for candidate in (absolute, *absolute.parents):
        if (candidate / MANIFEST_NAME).is_file():
            return candidate
    return absolute


def _rel(active: Path, root: Path) -> str:
    try:
        return Path(os.path.abspath(active)).relative_to(root).as_posix()
    except ValueError:
        return active.name


def audit_sets(directory: Path, templates: Iterable[str] = (), *, root: Path | None = None) -> list[Path]:
    """Active paths of every audit file set under `directory` (see the module docs)."""
    root = find_root(directory) if root is None else root
    patterns = [template_regex(t, AUDIT_CATEGORY) for t in templates]
    sets: dict[Path, list[Path]] = {}
    found: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            head = _HEAD_NAME_RE.match(name)
            if head is not None:
                found.add(Path(dirpath, head.group("name")))
                continue
            if name.startswith(".") or ".gz.tmp" in name:
                continue
            m = ROTATED_RE.match(name)
            if m is None and name.endswith(".gz"):
                continue
            sets.setdefault(Path(dirpath, m.group("base") if m else name), []).append(Path(dirpath, name))
    for active, files in sets.items():
        if active in found:
            continue
        rel = _rel(active, root)
        tenant = _TENANT_PREFIX_RE.match(rel)
        candidates = [rel, tenant.group("rest")] if tenant else [rel]
        if (active.name.startswith(AUDIT_CATEGORY)
                or any(p.fullmatch(c) for p in patterns for c in candidates)
                or any(_holds_chain(f) for f in files)):
            found.add(active)
    return sorted(found)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _holds_chain(path: Path) -> bool:
    try:
        for raw in open_lines(path):
            return _AUDIT_MARK in raw
    except (OSError, EOFError, zlib.error):
        return False
    return False


def verify_directory(directory: Path, hasher: ChainHasher, templates: Iterable[str] = (), *,
                     progress: Callable[[int, int], None] | None = None) -> list[ChainReport]:
    """A report for every audit file set under `directory` (and for a manifest in trouble).
    `progress(records, bytes)` is told about each set once it is verified."""
    return ChainVerifier(directory, hasher, templates).run(progress)


def verify_set(active: Path, hasher: ChainHasher, root: Path | None = None) -> ChainReport:
    """Walk one set in chain order; stop at the first broken link."""
    return ChainVerifier(active.parent if root is None else root, hasher).verify(active)


# -- the verifier ---------------------------------------------------------------------------

Fingerprint = tuple[tuple[str, int, int, int, int, int], ...]


@dataclass(slots=True)
class _Mark:
    """A rotated file verified whole: as it was, and the walk after it."""

    fingerprint: Fingerprint
    walk: ChainWalk
    lines: int


@dataclass(slots=True)
class _ActiveMark:
    """How far the active file was verified: up to `offset` (a line end)."""

    dev: int
    ino: int
    offset: int
    lines: int
    digest: str  # SHA-256 of the bytes before `offset`, to see they are still the same
    walk: ChainWalk


@dataclass(slots=True)
class _Progress:
    marks: list[_Mark] = field(default_factory=list)
    active: _ActiveMark | None = None
    head_seq: int = -1  # the highest head count seen: a head never goes back


class _Changed(Exception):
    """The set changed while it was read (a rotation, a gzip finishing): read it again."""


def _fingerprint(f: SetFile) -> Fingerprint:
    out = []
    for path in (f.path, f.twin):
        if path is not None:
            st = os.stat(path)
            out.append((path.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


def _listing(active: Path) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    try:
        st = os.stat(active)
        ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except FileNotFoundError:
        ident = None
    return tuple(b.name for b in backups_of(active.parent, active.name)), ident


def _compare(packed: Path, plain: Path) -> ChainBreak | None:
    """The first line where a rotated file's ``.gz`` and plain copies differ."""
    try:
        for lineno, (a, b) in enumerate(zip_longest(open_lines(packed), open_lines(plain)), 1):
            if a != b:
                return ChainBreak(packed, lineno, f"differs from the plain copy {plain.name} of the same "
                                  "rotated file from this line on: one of the two copies was edited")
    except FileNotFoundError:
        raise _Changed() from None
    except (OSError, EOFError, zlib.error) as exc:
        return ChainBreak(packed, 0, f"cannot read the file: {exc}")
    return None


class ChainVerifier:
    """Verifies the audit sets under `directory`, resuming each from where the previous
    `run` left it (see the module docs); a fresh instance verifies everything."""

    def __init__(self, directory: Path, hasher: ChainHasher, templates: Iterable[str] = ()) -> None:
        self.directory = Path(directory)
        self.root = find_root(self.directory)
        self.hasher = hasher
        self.templates = list(templates)
        self._progress: dict[Path, _Progress] = {}

    def run(self, progress: Callable[[int, int], None] | None = None) -> list[ChainReport]:
        """Every set under the directory, and the manifest when it is in trouble."""
        reports: list[ChainReport] = []
        manifest = self.root / MANIFEST_NAME
        try:
            recorded = read_manifest(self.root, self.hasher)
        except HeadError as exc:
            recorded = None
            reports.append(ChainReport(manifest, MANIFEST_NAME, [], broken=ChainBreak(
                manifest, 0, f"the audit manifest cannot be trusted: {exc}")))
        sets = audit_sets(self.directory, [*self.templates, *(recorded or [])], root=self.root)
        if recorded is None and not reports and any(head_path(a).exists() for a in sets):
            reports.append(ChainReport(manifest, MANIFEST_NAME, [], broken=ChainBreak(
                manifest, 0, "the audit manifest is missing (removed?): it names the paths audit "
                             "sets are written under, so that none can be hidden")))
        for gone in set(self._progress) - set(sets):
            del self._progress[gone]
        for active in sets:
            report = self.verify(active)
            reports.append(report)
            if progress is not None:
                progress(report.records, sum(_size(p) for p in report.files))
        return reports

    def forget(self, active: Path) -> None:
        """Verify `active` from its start next time (what its head was is still remembered)."""
        progress = self._progress.get(active)
        if progress is not None:
            self._progress[active] = _Progress(head_seq=progress.head_seq)

    def verify(self, active: Path) -> ChainReport:
        """One set, resumed from its last verified point; read again when it changed meanwhile."""
        progress = self._progress.setdefault(active, _Progress())
        report: ChainReport | None = None
        for _attempt in range(_ATTEMPTS):
            before = _listing(active)
            try:
                report = self._check(active, progress)
            except (_Changed, FileNotFoundError):
                continue
            if report.broken is None or _listing(active) == before:
                return report
        if report is None:
            report = ChainReport(active, _rel(active, self.root), [], broken=ChainBreak(
                active, 0, "the set's files kept changing while they were read; try again"))
        return report

    def _check(self, active: Path, progress: _Progress) -> ChainReport:
        rel = _rel(active, self.root)
        hpath = head_path(active)
        head: ChainHead | None = None
        head_problem = ""
        try:  # before the files: the head only ever trails what they hold
            head = read_head(hpath, self.hasher)
        except HeadError as exc:
            head_problem = str(exc)
        files = set_files(active)
        report = ChainReport(active, rel, [f.path for f in files], head_file=head)
        if not files:
            report.broken = ChainBreak(hpath if (head or head_problem) else active, 0,
                                       "the set's files are gone, its head file is still here: "
                                       "the set was removed")
            return report
        walk = ChainWalk(self.hasher, genesis(rel, self.hasher))
        lines: list[int] = []
        reusing = True
        for index, f in enumerate(files):
            if f.seq is None:
                break
            fingerprint = _fingerprint(f)
            marks = progress.marks
            if reusing and index < len(marks) and marks[index].fingerprint == fingerprint:
                walk = marks[index].walk.copy()
                lines.append(marks[index].lines)
                continue
            if reusing:
                del marks[index:]
                progress.active = None
                reusing = False
            count = self._walk_file(walk, f.path, index, report)
            if report.broken is not None:
                return report
            if walk.broken is not None:
                report.broken = walk.broken
                return report
            if f.twin is not None:
                report.broken = _compare(f.twin, f.path)
                if report.broken is not None:
                    return report
            marks.append(_Mark(fingerprint, walk.copy(), count))
            lines.append(count)
        rotated = len(files) - (1 if files[-1].seq is None else 0)
        if reusing and len(progress.marks) != rotated:  # a rotated file at the end was removed
            del progress.marks[rotated:]
            progress.active = None
            reusing = False
        if files[-1].seq is None:
            walk, count = self._walk_active(active, len(files) - 1, walk, progress, reusing)
            lines.append(count)
        if walk.broken is not None:
            report.broken = walk.broken
            return report
        report.records, report.torn, report.legacy = walk.records, walk.torn, walk.legacy
        report.head = walk.prev or genesis(rel, self.hasher)
        report.broken = self._judge(report, walk, files, lines, head, head_problem)
        if head is not None and report.broken is None:
            if head.seq < progress.head_seq:
                report.broken = ChainBreak(hpath, 0, (
                    f"the head file went back from record #{progress.head_seq} to #{head.seq}: an "
                    "older copy of the set and its head was put back"))
            else:
                progress.head_seq = head.seq
        return report

    def _walk_file(self, walk: ChainWalk, path: Path, index: int, report: ChainReport) -> int:
        lineno, offset = 0, 0
        try:
            for raw in open_lines(path):
                lineno += 1
                if not walk.feed(raw, path, lineno, file_index=index, offset=offset):
                    break
                offset += len(raw)
        except FileNotFoundError:
            raise _Changed() from None
        except (OSError, EOFError, zlib.error) as exc:
            report.broken = ChainBreak(path, lineno + 1, f"cannot read the file: {exc}")
        return lineno

    def _walk_active(self, active: Path, index: int, walk: ChainWalk, progress: _Progress,
                     reusing: bool) -> tuple[ChainWalk, int]:
        """Complete lines are verified and remembered; a last line without its newline (a
        write in progress, or torn by a crash) is judged but not remembered. What was verified
        before is hashed again (one plain SHA-256 pass, no parsing): the active file's change
        time moves with every append, so only its bytes can tell an edit."""
        with active.open("rb") as f:
            st = os.fstat(f.fileno())
            mark = progress.active
            start, lineno = 0, 0
            prefix = hashlib.sha256()
            if reusing and mark is not None and (mark.dev, mark.ino) == (st.st_dev, st.st_ino) \
                    and st.st_size >= mark.offset:
                left = mark.offset
                while left > 0:
                    chunk = f.read(min(_READ_BYTES, left))
                    if not chunk:
                        break
                    prefix.update(chunk)
                    left -= len(chunk)
                if prefix.hexdigest() == mark.digest:
                    walk, start, lineno = mark.walk.copy(), mark.offset, mark.lines
                else:
                    prefix = hashlib.sha256()
                    f.seek(0)
            offset, partial = start, b""
            for raw in f:
                if not raw.endswith(b"\n"):
                    partial = raw
                    break
                lineno += 1
                if not walk.feed(raw, active, lineno, file_index=index, offset=offset):
                    return walk, lineno
                prefix.update(raw)
                offset += len(raw)
        progress.active = _ActiveMark(st.st_dev, st.st_ino, offset, lineno, prefix.hexdigest(), walk.copy())
        if partial:
            lineno += 1
            walk.feed(partial, active, lineno, file_index=index, offset=offset)
        return walk, lineno

    def _judge(self, report: ChainReport, walk: ChainWalk, files: list[SetFile], lines: list[int],
               head: ChainHead | None, head_problem: str) -> ChainBreak | None:
        """The walk is intact: hold the set against its head."""
        hpath = head_path(report.active)
        pending = walk.pending_at
        if head_problem:
            return ChainBreak(hpath, 0, f"the head file cannot be trusted: {head_problem}")
        if head is None:
            if walk.records and not walk.legacy:
                return ChainBreak(hpath, 0, "the head file is missing (removed?): without it, "
                                            "removing the set's newest records cannot be detected")
            return pending.breaks() if pending is not None else None
        if head.set != report.rel:
            return ChainBreak(hpath, 0, f"the head file belongs to the set {head.set!r}, not "
                                        f"{report.rel!r}: files were moved or swapped")
        index = head_file_index(files, head.gen)
        if index is None:
            return ChainBreak(files[-1].path, 0, f"the file that held the head record #{head.seq} "
                              f"(rotation {head.gen + 1}, or the active file) is gone: the newest "
                              "files of the set were removed")
        target = files[index].path
        if head.size == 0:
            if head.hash != genesis(report.rel, self.hasher):
                return ChainBreak(hpath, 0, "the head file points at no record of this set")
        else:
            try:
                record, why = record_at(target, head.size)
            except FileNotFoundError:
                raise _Changed() from None
            except (OSError, EOFError, zlib.error) as exc:
                record, why = None, f"it cannot be read ({exc})"
            if record is None or record.hash != head.hash:
                line = (pending.line if pending is not None and pending.file_index == index
                        else lines[index] + 1)
                return ChainBreak(target, line, (
                    f"the newest records were removed: the head file {hpath.name} says record "
                    f"#{head.seq} ({head.hash[:16]}…) ends at byte {head.size} of {target.name}, but "
                    f"{why or 'another record is there'}"))
        if pending is not None:
            past_head = (pending.file_index, pending.offset) >= (index, head.size)
            if past_head and all(is_fragment(line) for line in walk.pending):
                report.torn_unacknowledged = len(walk.pending)
            else:
                return pending.breaks()
        return None
