"""How rotated files are named, and the order a file set was written in.

A rotated file is ``<active name>.<period>.<seq>[.gz]``: `period` is the clock-aligned day
(``2026-11-23``) or hour (``2026-11-23-09``) its content began in, `seq` counts the rotations
of the set. The file sink names files, retention finds them, the audit chain orders them —
all through this module, so the three cannot disagree.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

# `<active name>.<period>.<seq>` with an optional `.gz`; period is a day or a day-and-hour.
ROTATED_RE = re.compile(
    r"^(?P<base>.+)\.(?P<period>\d{4}-\d{2}-\d{2}(?:-\d{2})?)\.(?P<seq>\d+)(?P<gz>\.gz)?$"
)

@dataclass(frozen=True, slots=True, order=True)
class Backup:
    """One rotated file of a set; instances sort in the order the set was written.

    Why `seq` and not the period: `seq` counts the rotations of the whole set (the next
    rotation takes the highest `seq` present plus one), while the period is a label for people
    and comes from a clock — the writer's at the first write, or a file's mtime after a
    restart. Clocks step (NTP, a VM resumed), mtimes lie (a restored backup, a second worker
    reopening the file), so periods need not grow in write order; the sequence does. Sets
    written before the sequence became set-wide restarted it every period: the period breaks
    those ties.
    """

    seq: int
    period: str
    name: str = field(compare=False)
    gz: bool = field(compare=False)


def backups_of(directory: Path, base: str) -> list[Backup]:
    """Every rotated file of the set whose active file is `directory/base`, oldest first.
    A backup present both plain and gzipped (mid-compression) is listed twice."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if not name.startswith(base + "."):
            continue
        m = ROTATED_RE.match(name)
        if m is not None and m.group("base") == base:
            out.append(Backup(int(m.group("seq")), m.group("period"), name, bool(m.group("gz"))))
    out.sort()
    return out


def period_key(now: float, interval: str, utc: bool) -> str:
    """The clock-aligned period `now` falls in: ``2026-11-23`` or ``2026-11-23-09`` (hourly)."""
    t = time.gmtime(now) if utc else time.localtime(now)
    return time.strftime("%Y-%m-%d-%H" if interval == "hourly" else "%Y-%m-%d", t)
