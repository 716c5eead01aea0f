"""Promise: over its bounded queue the receiver answers UNAVAILABLE with a RetryInfo trailer
(never grows memory), senders that honour the delay get everything stored, and nothing refused
is stored twice.

Short version of `bench/soak.py overload`: `queue: {max_requests: 2, max_bytes: 4MiB}`, 8
senders sending 500-record batches as fast as they are answered (about 4x what the receiver
can take on this 2-core machine) for 8 s."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.reliability.harness import LoadRun, Sender, make_request, rss_kib, scan_logs

RSS_BOUND_KIB = 200 * 1024  # the receiver never exceeds 200 MiB under this overload


def test_overload_unavailable_with_retry_info_and_no_loss(start_receiver: Any) -> None:
    receiver = start_receiver({
        "queue": {"max_requests": 2, "max_bytes": "4MiB", "retry_after_s": 0.2},
    })
    assert receiver.proc is not None
    pid = receiver.proc.pid
    rss = [rss_kib(pid)]
    load = LoadRun(receiver.endpoint, threads=8, rate=1_000_000, batch=500, duration_s=8.0,
                   pad=100, give_up_after_s=30.0).start()
    while any(t.is_alive() for t in load._threads):
        time.sleep(0.25)
        rss.append(rss_kib(pid))
    stats = load.join()
    receiver.stop()
    scan = scan_logs(receiver.logs_dir)
    print(f"\noverload: {stats.sent_batches} batches, {stats.attempts} attempts, codes "
          f"{dict(stats.codes)}, {stats.with_retry_info}/{stats.unavailable} UNAVAILABLE with "
          f"RetryInfo; RSS start {rss[0]} KiB, peak {max(rss)} KiB, end {rss[-1]} KiB")
    assert stats.unavailable > 0, "the load never went over the queue"
    assert stats.with_retry_info == stats.unavailable, "an UNAVAILABLE came without RetryInfo"
    assert set(stats.codes) <= {"OK", "UNAVAILABLE"}
    assert not stats.gave_up
    assert set(scan.counts) == stats.acked
    assert not scan.duplicates, "a refused request was stored, then stored again on retry"
    assert not scan.bad_lines
    assert max(rss) < RSS_BOUND_KIB


def test_overload_past_concurrent_rpc_limit_is_still_retryable(start_receiver: Any) -> None:
    receiver = start_receiver({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0", "threads": 2}}}},
        "queue": {"max_requests": 2, "max_bytes": "4MiB", "retry_after_s": 0.2},
    })
    data = make_request(range(3000), pad=200)
    codes: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def one() -> None:
        sender = Sender(receiver.endpoint)
        try:
            out = sender.call(data, 20.0)
        finally:
            sender.close()
        with lock:
            codes.append((out.code.name, out.retry_delay is not None))

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("\nconcurrent-limit codes:", sorted(set(codes)))
    for code, has_retry in codes:
        assert code in {"OK", "UNAVAILABLE"}, f"{code} (RetryInfo: {has_retry})"
        assert code == "OK" or has_retry
