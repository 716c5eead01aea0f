"""Promise: when the disk fills under load the receiver stops acknowledging at once (UNAVAILABLE
+ RetryInfo, the batch rolled back), loses nothing it acknowledged, never drops audit records,
and accepts again by itself once space returns.

Fault injection: `files.directory` is a 4 MiB tmpfs mounted for the test (we run as root); a
filler file takes all the remaining space under load, then is deleted. Skipped where mounting
is not permitted."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import LoadRun, scan_logs


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> int:
    """Write to `path` until the filesystem is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                n = os.write(fd, chunk if len(chunk) else b"\0")
            except OSError:
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
                continue
            written += n
    finally:
        os.close(fd)
    return written


def test_disk_full_stops_acks_keeps_audit_and_recovers(tmp_path: Path, start_receiver: Any) -> None:
    with small_tmpfs(tmp_path / "logs") as logs:
        receiver = start_receiver({"files": {"directory": str(logs)},
                                   "queue": {"retry_after_s": 0.2}})
        app = LoadRun(receiver.endpoint, threads=1, rate=300, batch=30, duration_s=6.0,
                      give_up_after_s=30.0).start()
        audit = LoadRun(receiver.endpoint, threads=1, rate=50, batch=5, duration_s=6.0,
                        category="audit", seq_base=500_000_000, give_up_after_s=30.0).start()
        time.sleep(1.0)
        filler = logs / "filler.bin"
        full_at = time.monotonic()
        fill(filler)
        first_refusal = None
        while time.monotonic() - full_at < 3.0:
            if first_refusal is None and (app.stats.unavailable or audit.stats.unavailable):
                first_refusal = time.monotonic() - full_at
            time.sleep(0.01)
        acked_full = len(app.stats.acked) + len(audit.stats.acked)
        time.sleep(1.0)
        acked_later = len(app.stats.acked) + len(audit.stats.acked)
        health_full = receiver.stderr
        filler.unlink()  # space returns
        freed_at = time.monotonic()
        while (app.stats.unavailable or audit.stats.unavailable) and any(
                t.is_alive() for t in app._threads + audit._threads):
            before = len(app.stats.acked) + len(audit.stats.acked)
            time.sleep(0.05)
            if len(app.stats.acked) + len(audit.stats.acked) > before:
                break
        recovered_in = time.monotonic() - freed_at
        app_stats, audit_stats = app.join(), audit.join()
        receiver.stop()
        scan = scan_logs(logs)
        acked = app_stats.acked | audit_stats.acked
        print(f"\ndisk full: first UNAVAILABLE {first_refusal and first_refusal * 1000:.0f} ms after "
              f"the disk filled; acks while full {acked_later - acked_full}; accepting again "
              f"{recovered_in * 1000:.0f} ms after space returned; codes app {dict(app_stats.codes)} "
              f"audit {dict(audit_stats.codes)}")
        assert first_refusal is not None, "never refused while the disk was full"
        assert acked_later == acked_full, "acknowledged while the disk was full"
        assert "no space left" in health_full or app_stats.unavailable
        assert not app_stats.gave_up
        assert not audit_stats.gave_up
        assert acked <= set(scan.counts), "acknowledged records lost"
        assert audit_stats.acked == {s for s in scan.counts if s >= 500_000_000}
        assert len(audit_stats.acked) == audit_stats.sent_batches * 5, "audit records dropped"
        assert not scan.duplicates
        assert not scan.bad_lines
        assert not scan.unterminated
        assert scan.categories["audit"] == len(audit_stats.acked)
