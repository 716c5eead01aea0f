"""The viewer's first render on a large index: the first API page and the Logs page in Chromium.

N records (default 1,000,000; the same generator as bench/query.py) are written straight into
an index, a real receiver is started on it in-process (query API and viewer on), and then:

- p50/p95 of the Logs view's first API page (`/api/v1/logs?limit=100&since=<24h ago>`, what the
  page asks for when it opens; each call writes its own audit record), for an admin and a user
  key;
- p50/p95 of the same page with a text filter (a scan: the slow case);
- the Logs page in Debian's headless Chromium (Playwright): from navigation start to the first
  page of rows on screen (`performance.mark('sluice:logs-rendered')`), cold (first load) and warm.

Reports; asserts nothing.

    .venv/bin/python bench/viewer.py                   # 1,000,000 records
    .venv/bin/python bench/viewer.py --records 100000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from query import ADMIN, USER, fill

from sluice_collector.query.store import IndexStore
from sluice_collector.service.config import parse_config
from sluice_collector.service.receiver import Receiver
from tests.e2e.viewer_harness import CHROMIUM, CHROMIUM_ARGS


def timed_get(url: str, key: str) -> float:
    t0 = time.perf_counter()
    request = urllib.request.Request(url, headers={"X-Api-Key": key})
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    return (time.perf_counter() - t0) * 1000


def report(label: str, times: list[float]) -> None:
    times = sorted(times)
    print(f"{label:<44} p50 {statistics.median(times):8.1f} ms   p95 "
          f"{times[min(len(times) - 1, int(len(times) * 0.95))]:8.1f} ms   (n={len(times)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        store = IndexStore.for_directory(logs)
        store.open()
        start_ns = time.time_ns() - args.records * 1_000_000 - 60 * 1_000_000_000
        began = time.perf_counter()
        fill(store, args.records, start_ns)
        store.close()
        size = sum(p.stat().st_size for p in store.path.parent.iterdir())
        print(f"index: {args.records:,} records in {time.perf_counter() - began:.1f}s, "
              f"{size / 1e6:,.0f} MB on disk")
        config = parse_config(f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}}}
telemetry: {{listen: "127.0.0.1:0"}}
files: {{directory: {logs}}}
query:
  api_keys:
    ops: {{key: {ADMIN}, role: admin}}
    u7: {{key: {USER}, role: user, user_id: user7}}
""")
        receiver = Receiver(config)
        receiver.start()
        base = f"http://127.0.0.1:{receiver.status_port}"
        try:
            since = time.time_ns() - 86_400 * 1_000_000_000
            first_page = f"{base}/api/v1/logs?limit=100&since={since}"
            for label, url, key in (
                ("first page of 100, admin key", first_page, ADMIN),
                ("first page of 100, user key", first_page, USER),
                ("first page, text filter (scan), admin", first_page + "&text=answered%20299", ADMIN),
            ):
                report(label, [timed_get(url, key) for _ in range(args.requests)])
            browser_loads(base, args.loads)
        finally:
            receiver.stop(5)


def browser_loads(base: str, loads: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_init_script(f"sessionStorage.setItem('sluice.apiKey', '{ADMIN}')")
            marks = []
            for _ in range(loads):
                page = context.new_page()
                page.goto(f"{base}/ui/#/logs")
                page.wait_for_function("performance.getEntriesByName('sluice:logs-rendered').length > 0",
                                       timeout=60_000)
                marks.append(page.evaluate(
                    "performance.getEntriesByName('sluice:logs-rendered')[0].startTime"))
                rows = page.locator("tr.record").count()
                page.close()
            print(f"Logs page in Chromium, navigation → {rows} rows on screen: first (cold) "
                  f"{marks[0]:.0f} ms, then p50 {statistics.median(marks[1:] or marks):.0f} ms "
                  f"(n={len(marks)})")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
