"""Clean-up of rotated files: by age per category, and by disk pressure as a last resort.

Which category a rotated file belongs to is read from its *name*, never from a side index that
could drift from the disk: a rotated file is ``<active path>.<period>.<seq>[.gz]`` and its active
path (relative to `files.directory`) is matched against each category's path template with
``{category}`` replaced by the category's own name and every other field matching one path
component. The fallback template is tried the same way. When several categories match one
name, the longest retention wins (and "forever" beats everything), so an ambiguous file is
kept rather than removed early. A file that matches no category — e.g. one of a category that
was removed from the config — is never touched. Files of an authenticated tenant live under
``tenants/<tenant>/`` and are matched with that prefix removed, so they keep their category.

Two sweeps:

- `sweep_age()`: removes rotated files whose mtime is older than their category's
  `retention_days`. Categories with `retention_days: forever` (None) are never swept. Ages are
  measured on the clock that stamped the files — the file system's (`fsclock.fs_now`), not this
  process's — so a stepped clock, an NFS server with another time, or a test under libfaketime
  cannot make fresh files look old.
- `relieve_pressure()`: when `files.directory` is over `files.disk.max_used_percent`, removes
  rotated files of the shortest-retention categories first, oldest first, re-probing the disk
  after each removal, until it is under the threshold. Forever categories (audit) and active
  files are never removed: the record of truth beats free space; the sink then answers
  `DiskFullError` and clients retry.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import string
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice_collector.sinks.files.fsclock import file_clock
from sluice_collector.sinks.files.naming import ROTATED_RE
from sluice_collector.telemetry import ReceiverTelemetry

if TYPE_CHECKING:
    from sluice_collector.sinks.files.config import FilePolicy, FilesConfig

log = logging.getLogger("sluice.retention")

DiskUsage = Callable[[Path], tuple[int, int]]  # path → (used_bytes, total_bytes)
Clock = Callable[[], float]

_DAY_S = 86400.0
# Where the file sink puts each authenticated tenant's files: `tenants/<tenant id>/<path>`.
TENANTS_DIR = "tenants"
_TENANT_PREFIX_RE = re.compile(rf"^{TENANTS_DIR}/[A-Za-z0-9_-]{{1,64}}/(?P<rest>.+)$")


def disk_usage(path: Path) -> tuple[int, int]:
    """The real probe: (used bytes, total bytes) of the file system holding `path`.

    "Used" is everything the receiver cannot write to: total minus the space available to an
    unprivileged process (`statvfs` f_bavail), so the blocks reserved for root count as used
    and 100 % means the next write fails. This is the one definition of disk use: the guard
    (`files.disk.max_used_percent`), `sluice_files_disk_used_percent` and `/healthz` all use it.
    It reads a few points above `df`'s Use%, which leaves the reserved blocks out.
    """
    usage = shutil.disk_usage(path)
    return usage.total - usage.free, usage.total


def used_percent(probe: DiskUsage, path: Path) -> float:
    used, total = probe(path)
    return 100.0 * used / total if total else 0.0


def disk_report(probe: DiskUsage, directory: Path, max_used_percent: float) -> dict[str, Any]:
    """`/healthz`'s `disk` object: the file system holding `directory` (or, before it exists,
    its nearest existing parent), by the definition of `disk_usage`."""
    path = Path(directory)
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        used, total = probe(path)
    except OSError as exc:
        return {"path": str(directory), "error": str(exc), "max_used_percent": max_used_percent}
    return {
        "path": str(Path(directory).resolve()),
        "used_percent": round(100.0 * used / total, 2) if total else 0.0,
        "available_bytes": total - used,
        "max_used_percent": max_used_percent,
    }


@dataclass(frozen=True, slots=True)
class RotatedFile:
    path: Path
    category: str
    retention_days: int | None
    mtime: float
    period: str
    seq: int


def template_regex(template: str, category: str) -> re.Pattern[str]:
    """A regex matching the active paths `template` can produce for `category`."""
    parts: list[str] = []
    for literal, field_name, _spec, _conv in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field_name is None:
            continue
        parts.append(re.escape(category) if field_name == "category" else r"[^/]+")
    return re.compile("".join(parts))


class RetentionSweeper:
    """Removes rotated files by age and under disk pressure; see the module docstring.

    `categories` is read at every sweep (the router adds dynamic categories at runtime).
    """

    def __init__(
        self,
        config: FilesConfig,
        categories: Mapping[str, FilePolicy],
        telemetry: ReceiverTelemetry,
        *,
        clock: Clock = time.time,
        fs_clock: Clock | None = None,
        disk_usage: DiskUsage = disk_usage,
        is_busy: Callable[[Path], bool] | None = None,
    ) -> None:
        self._config = config
        self._directory = Path(config.directory)
        self._categories = categories
        self._telemetry = telemetry
        # Ages compare mtimes with the file system's clock (see `fs_now`).
        self._fs_clock = fs_clock or file_clock(self._directory, clock)
        self._disk_usage = disk_usage
        # Files the sink is still compressing: removing them would race the compressor.
        self._is_busy = is_busy or (lambda _p: False)
        self._regex_cache: dict[tuple[str, str], re.Pattern[str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_error = ""

    # -- mapping files to categories -------------------------------------------------------
    def _regex(self, template: str, category: str) -> re.Pattern[str]:
        key = (template, category)
        rx = self._regex_cache.get(key)
        if rx is None:
            rx = self._regex_cache[key] = template_regex(template, category)
        return rx

    def category_of(self, active_relpath: str) -> tuple[str, int | None] | None:
        """(category, retention_days) owning an active path, or None when no category does."""
        best: tuple[str, int | None] | None = None
        candidates = [active_relpath]
        tenant = _TENANT_PREFIX_RE.match(active_relpath)
        if tenant is not None:
            candidates.append(tenant.group("rest"))
        for name, cat in list(self._categories.items()):
            for template in (cat.path, self._config.fallback_path):
                if any(self._regex(template, name).fullmatch(c) for c in candidates):
                    if cat.retention_days is None:
                        return name, None
                    if best is None or (best[1] is not None and cat.retention_days > best[1]):
                        best = (name, cat.retention_days)
                    break
        return best

    def rotated_files(self) -> list[RotatedFile]:
        """Every rotated file under the directory with its category (unowned files left out)."""
        out: list[RotatedFile] = []
        root = self._directory
        if not root.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(root):
            # Hidden directories hold the receiver's own state (e.g. .spool), never log files.
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for filename in filenames:
                m = ROTATED_RE.match(filename)
                if m is None:
                    continue
                path = Path(dirpath, filename)
                rel = path.relative_to(root).parent / m.group("base")
                owner = self.category_of(rel.as_posix())
                if owner is None:
                    continue
                try:
                    mtime = path.stat().st_mtime
                except FileNotFoundError:
                    continue
                out.append(RotatedFile(path, owner[0], owner[1], mtime, m.group("period"),
                                       int(m.group("seq"))))
        return out

    # -- sweeps ----------------------------------------------------------------------------
    def _remove(self, f: RotatedFile, reason: str) -> bool:
        if self._is_busy(f.path):
            return False
        try:
            f.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            self.last_error = f"cannot remove {f.path}: {exc.strerror or exc}"
            log.warning("retention: %s", self.last_error)
            return False
        self._telemetry.retention_removed.labels(category=f.category, reason=reason).inc()
        return True

    def sweep_age(self) -> list[Path]:
        """Remove rotated files older than their category's retention; returns what went."""
        now = self._fs_clock()
        removed: list[Path] = []
        with self._lock:
            for f in self.rotated_files():
                if f.retention_days is None:
                    continue
                if now - f.mtime > f.retention_days * _DAY_S and self._remove(f, "age"):
                    removed.append(f.path)
        return removed

    def relieve_pressure(self) -> list[Path]:
        """Remove rotated files until the disk is under the threshold; returns what went."""
        limit = self._config.disk.max_used_percent
        removed: list[Path] = []
        with self._lock:
            if used_percent(self._disk_usage, self._directory) <= limit:
                return removed
            candidates = [f for f in self.rotated_files() if f.retention_days is not None]
            candidates.sort(key=lambda f: (f.retention_days, f.mtime, f.seq, f.period))
            for f in candidates:
                if self._remove(f, "disk_pressure"):
                    removed.append(f.path)
                    if used_percent(self._disk_usage, self._directory) <= limit:
                        break
            else:
                if used_percent(self._disk_usage, self._directory) > limit:
                    self.last_error = (
                        f"disk over {limit:g}% and no rotated file left that retention may remove"
                    )
        if removed:
            log.warning("retention: disk over %g%%, removed %d rotated files", limit, len(removed))
        return removed

    def run_once(self) -> list[Path]:
        return self.sweep_age() + self.relieve_pressure()

    # -- background ------------------------------------------------------------------------
    def start(self) -> None:
        """Sweep now, then in a daemon thread: by age every `retention_check_interval_s`, by
        disk pressure every `disk.check_interval_s`."""
        if self._thread is not None:
            return
        self._safe(self.run_once)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sluice-retention", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        age_every = self._config.retention_check_interval_s
        disk_every = self._config.disk.check_interval_s
        next_age = time.monotonic() + age_every
        while not self._stop.wait(disk_every):
            self._safe(self.relieve_pressure)
            if time.monotonic() >= next_age:
                next_age = time.monotonic() + age_every
                self._safe(self.sweep_age)

    def _safe(self, fn: Callable[[], Any]) -> None:
        # A failing sweep must not kill the thread nor the receiver: log once per distinct error.
        try:
            fn()
        except Exception as exc:
            message = f"retention sweep failed: {exc}"
            if message != self.last_error:
                log.exception("retention: sweep failed")
            self.last_error = message

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
