"""Promise: SIGKILL at any moment loses no acknowledged record; a restart on the same port is
quick; duplicates are limited to batches whose answer the client never got.

Short version of `bench/soak.py kill9`: 5 SIGKILLs at random moments under 3,000 records/s
from 3 senders (100-record batches), a restart on the same port after each; senders retry on
every error. The torn-last-line check is its own test below, because a SIGKILL only tears a
line when it lands inside a multi-page `write(2)` — rare enough that the random kills cannot be
relied on to produce one."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from tests.receiver_process import ReceiverProcess, endpoints
from tests.reliability.harness import LoadRun, Sender, free_port, make_request, scan_logs

KILLS = 5
BATCH = 100
SENDERS = 3


def kill_and_restart_under_load(tmp_path: Path, kills: int, rng: random.Random,
                                rate: float = 3000) -> dict[str, Any]:
    """Run the load, SIGKILL + restart `kills` times; return the figures (used by bench/soak.py)."""
    port = free_port()
    settings = {"receivers": endpoints(f"127.0.0.1:{port}"), "files": {"rotation": {"max_bytes": "1MiB"}}}
    receiver = ReceiverProcess(tmp_path, settings).start()
    restarts: list[float] = []
    load = LoadRun(f"127.0.0.1:{port}", threads=SENDERS, rate=rate, batch=BATCH,
                   duration_s=3600, timeout_s=5.0, backoff_s=0.05).start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.5))
            receiver.kill()  # SIGKILL
            killed_at = time.monotonic()
            receiver = ReceiverProcess(tmp_path, settings).start()
            restarts.append(time.monotonic() - killed_at)
        time.sleep(1.0)
    finally:
        load.stop_event.set()
        stats = load.join()
    receiver.stop()
    scan = scan_logs(receiver.logs_dir)
    lost = stats.acked - set(scan.counts)
    dups = scan.duplicates
    dup_batches = {s // BATCH for s in dups}
    return {"stats": stats, "scan": scan, "restarts": restarts, "lost": lost, "dups": dups,
            "dup_batches": dup_batches, "unexplained_dups": set(dups) - stats.uncertain}


def test_sigkill_under_load_loses_no_acknowledged_record(tmp_path: Path) -> None:
    r = kill_and_restart_under_load(tmp_path, KILLS, random.Random(7))
    stats, scan = r["stats"], r["scan"]
    print(f"\nkill9: {KILLS} kills, {len(stats.acked)} records acked, codes {dict(stats.codes)}, "
          f"lost {len(r['lost'])}, duplicated records {len(r['dups'])} in {len(r['dup_batches'])} "
          f"batches, restarts {[round(x, 2) for x in r['restarts']]} s, bad lines {len(scan.bad_lines)}")
    assert not r["lost"], f"acknowledged records missing: {sorted(r['lost'])[:10]}"
    assert not stats.gave_up
    # Only batches whose answer was lost may be stored twice: at most one per sender per kill.
    assert not r["unexplained_dups"], "a batch with no lost answer is stored twice"
    assert len(r["dup_batches"]) <= KILLS * SENDERS
    # How long a restart takes is measured by `make soak` (bench/soak.py), not asserted here.
    assert not scan.bad_lines, scan.bad_lines[:3]


def test_torn_last_line_is_quarantined_at_startup(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    whole = json.dumps({"timestamp": "2026-11-23T00:00:00Z", "category": "app", "body": "whole",
                        "attributes": {"seq": 1}})
    (logs / "app.log").write_text(whole + "\n" + '{"timestamp": "2026-11-23T00:00:01Z", "bo')
    receiver = ReceiverProcess(tmp_path, {}).start()
    sender = Sender(receiver.endpoint)
    try:
        assert sender.call(make_request([2])).code.name == "OK"
    finally:
        sender.close()
    receiver.stop()
    active = (logs / "app.log").read_bytes().splitlines()
    parsed = []
    for line in active:
        parsed.append(json.loads(line))  # every line of the active file is whole JSON
    assert [p["attributes"]["seq"] for p in parsed] == [1, 2]
    kept = [p for p in logs.rglob("*") if p.is_file() and p.name != "app.log"]
    assert any(b'"bo' in p.read_bytes() for p in kept), "the fragment was not kept aside"
