"""Long versions of the reliability tests (tests/reliability/), printing measured vs pass figures.

    python bench/soak.py [steady|overload|kill9|fuzz|all] [--duration 60] [--rate 10000]
                         [--kills 20] [--fuzz-seconds 60] [--overload-seconds 30]

steady    RATE records/s (default 10,000) for DURATION s (60; use 600 for the 10-minute soak) from
          4 senders, files rotating every 8 MiB: every acknowledged record on disk exactly once
          (active + rotated + .gz), acked rate ≥ 90% of the target, RSS end − RSS after 5 s < 32 MiB.
overload  10 unthrottled senders against `queue: {max_requests: 2, max_bytes: 4MiB}` for 30 s
          (≈5× what the receiver can take): every UNAVAILABLE carries RetryInfo, honouring
          senders get everything stored, 0 duplicates, peak RSS < 256 MiB.
kill9     KILLS SIGKILLs (20) at random moments under 3,000 records/s, restart on the same port:
          0 acknowledged records lost, duplicates only in batches whose answer was lost
          (≤ one per sender per kill), every restart ≤ 5 s, no partial line.
fuzz      hypothesis-generated texts (secret-like fragments mixed with arbitrary unicode) through
          `sluice.masking.Masker().mask_many` for FUZZ_SECONDS: 0 crashes, no input > 1 s.

Exit status 1 when any figure misses its pass figure. Runs on 2 cores; the receiver is one
Python process (one core), the load generator the other.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.receiver_process import ReceiverProcess  # noqa: E402
from tests.reliability.harness import (  # noqa: E402
    LoadRun,
    describe,
    percentile,
    rss_kib,
    scan_logs,
)

RESULTS: list[bool] = []


def report(name: str, measured: Any, pass_figure: str, ok: bool) -> None:
    RESULTS.append(ok)
    print(describe(name, measured, pass_figure, ok), flush=True)


def _sample_rss(load: LoadRun, pid: int, every_s: float = 1.0) -> list[tuple[float, int]]:
    samples = [(0.0, rss_kib(pid))]
    start = time.monotonic()
    while any(t.is_alive() for t in load._threads):
        time.sleep(every_s)
        try:
            samples.append((time.monotonic() - start, rss_kib(pid)))
        except (OSError, RuntimeError):
            break
    return samples


def steady(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sluice-soak-") as tmp:
        receiver = ReceiverProcess(Path(tmp), {"files": {"rotation": {"max_bytes": "8MiB"}}}).start()
        assert receiver.proc is not None
        load = LoadRun(receiver.endpoint, threads=4, rate=args.rate, batch=500,
                       duration_s=args.duration).start()
        rss = _sample_rss(load, receiver.proc.pid)
        stats = load.join(args.duration + 120)
        elapsed = load.finished_at - load.started_at
        receiver.stop(timeout_s=120)
        scan = scan_logs(receiver.logs_dir)
    print(f"steady: {stats.sent_batches} batches, codes {dict(stats.codes)}, p50 "
          f"{percentile(stats.latencies, 0.5) * 1000:.1f} ms, "
          f"p99 {percentile(stats.latencies, 0.99) * 1000:.1f} ms, "
          f"{len(scan.files)} files ({sum(f.endswith('.gz') for f in scan.files)} gz)")
    rate = len(stats.acked) / elapsed
    report("steady acked rate", f"{rate:,.0f} records/s", f"≥ {0.9 * args.rate:,.0f} records/s",
           rate >= 0.9 * args.rate)
    lost = stats.acked - set(scan.counts)
    report("steady acknowledged records lost", len(lost), "0", not lost)
    report("steady duplicates on disk", len(scan.duplicates), "0", not scan.duplicates)
    report("steady partial lines", len(scan.bad_lines), "0", not scan.bad_lines)
    base = next((kib for t, kib in rss if t >= 5.0), rss[-1][1])
    growth = rss[-1][1] - base
    report("steady RSS growth (end − at 5 s)", f"{growth / 1024:.1f} MiB (start {rss[0][1] / 1024:.0f}, "
           f"peak {max(k for _, k in rss) / 1024:.0f}, end {rss[-1][1] / 1024:.0f} MiB)", "< 32 MiB",
           growth < 32 * 1024)


def overload(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sluice-soak-") as tmp:
        receiver = ReceiverProcess(Path(tmp), {
            "queue": {"max_requests": 2, "max_bytes": "4MiB", "retry_after_s": 0.2},
        }).start()
        assert receiver.proc is not None
        load = LoadRun(receiver.endpoint, threads=10, rate=10_000_000, batch=500, pad=100,
                       duration_s=args.overload_seconds, give_up_after_s=120).start()
        rss = _sample_rss(load, receiver.proc.pid, 0.25)
        stats = load.join(args.overload_seconds + 180)
        receiver.stop(timeout_s=60)
        scan = scan_logs(receiver.logs_dir)
    refused = stats.unavailable / max(1, stats.attempts)
    print(f"overload: {stats.sent_batches} batches, {stats.attempts} attempts, codes {dict(stats.codes)}, "
          f"{refused:.0%} of attempts refused")
    report("overload UNAVAILABLE with RetryInfo", f"{stats.with_retry_info}/{stats.unavailable}",
           "all, and > 0", stats.unavailable > 0 and stats.with_retry_info == stats.unavailable)
    others = {c for c in stats.codes if c not in ("OK", "UNAVAILABLE")}
    report("overload other status codes", sorted(others) or "none", "none", not others)
    lost = stats.acked - set(scan.counts)
    report("overload records lost (retrying senders)", len(lost) + len(stats.gave_up) * 500, "0",
           not lost and not stats.gave_up)
    report("overload duplicates on disk", len(scan.duplicates), "0", not scan.duplicates)
    peak = max(k for _, k in rss)
    report("overload peak RSS", f"{peak / 1024:.0f} MiB", "< 256 MiB", peak < 256 * 1024)


def kill9(args: argparse.Namespace) -> None:
    from tests.reliability.test_kill9 import BATCH, SENDERS, kill_and_restart_under_load

    with tempfile.TemporaryDirectory(prefix="sluice-soak-") as tmp:
        r = kill_and_restart_under_load(Path(tmp), args.kills, random.Random(args.seed))
    stats, scan = r["stats"], r["scan"]
    print(f"kill9: {args.kills} kills, {len(stats.acked)} records acked, codes {dict(stats.codes)}")
    report("kill9 acknowledged records lost", len(r["lost"]), "0", not r["lost"] and not stats.gave_up)
    report("kill9 duplicated batches",
           f"{len(r['dup_batches'])} ({len(r['dups'])} records of {BATCH}-record batches)",
           f"≤ {args.kills * SENDERS} (one per sender per kill), none acknowledged before",
           len(r["dup_batches"]) <= args.kills * SENDERS and not r["unexplained_dups"])
    worst = max(r["restarts"])
    report("kill9 restart time (SIGKILL → ready)", f"max {worst:.2f} s, median "
           f"{percentile(r['restarts'], 0.5):.2f} s", "≤ 5 s", worst <= 5.0)
    report("kill9 partial lines", len(scan.bad_lines), "0 (a torn line is not quarantined: see docs)",
           not scan.bad_lines)


SEEDS = [
    "password=hunter2", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "123-45-6789", "user@example.com",
    "10.1.2.3", "2001:db8::1", "AKIAIOSFODNN7EXAMPLE", "ghp_" + "a" * 36, "sk_live_" + "b" * 24,
    "https://user:pw@host/x?token=abc", "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----",
    '{"secret": "v"}', "=" * 50, "%" * 40, "@" * 60, "." * 200, "1" * 500, "a@" * 300,
]


def fuzz(args: argparse.Namespace) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from sluice.masking import Masker

    masker = Masker()
    fragment = st.one_of(st.text(max_size=300), st.sampled_from(SEEDS),
                         st.builds(lambda s, n: s * n, st.sampled_from(SEEDS), st.integers(1, 200)))
    texts = st.lists(st.lists(fragment, max_size=12).map("".join), min_size=1, max_size=30)
    worst = [0.0, ""]
    crashes: list[str] = []
    calls = [0, 0]
    deadline = time.monotonic() + args.fuzz_seconds

    @settings(max_examples=200, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(texts)
    def one(batch: list[str]) -> None:
        if time.monotonic() > deadline:
            return  # out of time: let hypothesis run out its remaining examples for free
        started = time.perf_counter()
        try:
            masker.mask_many(batch)
        except Exception as exc:
            crashes.append(f"{type(exc).__name__}: {exc} on {batch[:2]!r}"[:300])
        took = time.perf_counter() - started
        calls[0] += 1
        calls[1] += len(batch)
        if took > worst[0]:
            worst[0], worst[1] = took, repr(batch)[:120]

    while time.monotonic() < deadline:
        one()
    print(f"fuzz: {calls[0]:,} batches, {calls[1]:,} strings in {args.fuzz_seconds:.0f} s; "
          f"slowest batch {worst[0] * 1000:.1f} ms: {worst[1]}")
    report("fuzz crashes", len(crashes), "0", not crashes)
    for line in crashes[:5]:
        print("   ", line)
    report("fuzz slowest input", f"{worst[0] * 1000:.1f} ms", "≤ 1000 ms", worst[0] <= 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="all",
                        choices=["steady", "overload", "kill9", "fuzz", "all"])
    parser.add_argument("--duration", type=float, default=60.0,
                        help="steady: seconds (600 for the 10-minute soak)")
    parser.add_argument("--rate", type=float, default=10_000.0, help="steady: records/s")
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fuzz-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    steps = {"steady": steady, "overload": overload, "kill9": kill9, "fuzz": fuzz}
    for name, step in steps.items():
        if args.what in (name, "all"):
            print(f"== {name}", flush=True)
            step(args)
    print(f"{sum(RESULTS)}/{len(RESULTS)} figures pass")
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
