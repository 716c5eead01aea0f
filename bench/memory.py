"""Peak and lasting RSS of a receiver under N parallel big Exports (docs/receiver.md, "Memory").

    python bench/memory.py N [--records 55000] [--pad 1000] [--config '{"queue": {"max_bytes": "64MiB"}}']

Starts `sluice receiver run` as a subprocess (settings as JSON, merged into a test config),
sends N requests of RECORDS records (≈ PAD bytes of body each; the defaults make ~59 MiB) at
once, each from its own thread, samples the receiver's VmRSS every 10 ms, and prints the status
codes, RSS before, peak and 2 s after. The numbers in docs/receiver.md come from here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.receiver_process import ReceiverProcess  # noqa: E402
from tests.reliability.harness import Sender, make_request, rss_kib  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="parallel requests")
    parser.add_argument("--records", type=int, default=55_000)
    parser.add_argument("--pad", type=int, default=1000)
    parser.add_argument("--config", default="{}", help="receiver settings as JSON")
    args = parser.parse_args()
    settings = json.loads(args.config)
    receiver = ReceiverProcess(Path(tempfile.mkdtemp()), settings).start()
    assert receiver.proc is not None
    pid = receiver.proc.pid
    try:
        warm = Sender(receiver.endpoint)
        warm.call(make_request([0]))
        warm.close()
        data = make_request(range(1, args.records + 1), pad=args.pad)
        base = peak = rss_kib(pid)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_kib(pid))
                time.sleep(0.01)

        codes: list[str] = []

        def send() -> None:
            sender = Sender(receiver.endpoint)
            try:
                codes.append(sender.call(data, 300).code.name)
            finally:
                sender.close()

        sampler = threading.Thread(target=sample)
        sampler.start()
        senders = [threading.Thread(target=send) for _ in range(args.n)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        time.sleep(2)
        done.set()
        sampler.join()
        after = rss_kib(pid)
    finally:
        receiver.kill()
    print(f"{args.n} × {len(data) / 2**20:.1f} MiB in parallel ({settings or 'defaults'}): "
          f"{sorted(codes)}; RSS before {base / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, "
          f"2 s after {after / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
