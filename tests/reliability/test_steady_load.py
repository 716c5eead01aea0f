"""Promise: at a steady rate, every acknowledged record is on disk exactly once (across active,
rotated and gzipped files) and the receiver's memory stays flat.

Short version of `bench/soak.py steady` (3,000 records/s for 10 s from 4 sender threads,
100-record batches; files rotate every 512 KiB so rotated and `.gz` files are part of the
count)."""

from __future__ import annotations

import time
from typing import Any

from tests.reliability.harness import LoadRun, rss_kib, scan_logs

RATE = 3000
DURATION_S = 10.0


def test_steady_load_every_acknowledged_record_on_disk_once(start_receiver: Any) -> None:
    receiver = start_receiver({"files": {"rotation": {"max_bytes": "512KiB"}}})
    assert receiver.proc is not None
    pid = receiver.proc.pid
    rss_samples: list[int] = [rss_kib(pid)]
    load = LoadRun(receiver.endpoint, threads=4, rate=RATE, batch=100, duration_s=DURATION_S).start()
    while any(t.is_alive() for t in load._threads):
        time.sleep(1.0)
        rss_samples.append(rss_kib(pid))
    stats = load.join()
    elapsed = load.finished_at - load.started_at
    receiver.stop()  # SIGTERM: drain, then let the gzip thread finish
    scan = scan_logs(receiver.logs_dir)

    sent = stats.sent_batches * 100
    achieved = len(stats.acked) / elapsed
    print(f"\nsteady: {sent} records sent in {elapsed:.1f} s ({achieved:.0f} acked records/s), "
          f"codes {dict(stats.codes)}; files {len(scan.files)} "
          f"({sum(f.endswith('.gz') for f in scan.files)} gz); RSS start {rss_samples[1]} KiB, "
          f"peak {max(rss_samples)} KiB, end {rss_samples[-1]} KiB")
    assert not stats.gave_up
    assert len(stats.acked) == sent
    assert achieved > 0.8 * RATE, "the receiver did not keep up with the steady rate"
    assert not scan.bad_lines
    assert not scan.unterminated
    assert set(scan.counts) == stats.acked, "records lost or invented"
    assert not scan.duplicates
    assert any(f.endswith(".gz") for f in scan.files), "rotation/gzip not exercised"
    # Flat memory: after the first second (imports, caches, first files) RSS grows < 20 MiB.
    assert rss_samples[-1] - rss_samples[1] < 20 * 1024, rss_samples
