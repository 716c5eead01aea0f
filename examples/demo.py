"""`make demo`: start the receiver on its embedded default, run the quickstart, show where
every record went, and stop the receiver cleanly.

The receiver runs with no `--config` from a scratch directory (`.demo/`), so its default
`./logs` lands in `.demo/logs`. It needs 127.0.0.1:4317 and :8888 free.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    print("» starting: sluice receiver run   (embedded default: 127.0.0.1:4317, files under ./logs)")
    receiver = subprocess.Popen(
        [sys.executable, "-m", "sluice_collector", "receiver", "run"],
        cwd=WORK, stderr=subprocess.PIPE, text=True,
    )
    assert receiver.stderr is not None
    status_url = ""
    deadline = time.monotonic() + 30
    for line in receiver.stderr:
        sys.stderr.write("  receiver| " + line)
        match = re.search(r"telemetry on (\S+?),", line)
        if "sluice receiver ready" in line:
            status_url = match.group(1) if match else ""
            break
        if time.monotonic() > deadline:
            break
    if receiver.poll() is not None or not status_url:
        print("the receiver did not start (is 127.0.0.1:4317 or :8888 in use?)", file=sys.stderr)
        receiver.kill()
        return 1
    try:
        print("» running: examples/quickstart.py")
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317")
        subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], env=env,
                       check=True, timeout=60)
        health = json.loads(urllib.request.urlopen(status_url + "/healthz", timeout=5).read())
        print(f"» receiver health: {health['status']}, sinks: {', '.join(health['sinks'])}")
    finally:
        receiver.send_signal(signal.SIGTERM)
        rest = receiver.stderr.read()
        code = receiver.wait(60)
        for line in rest.splitlines():
            print("  receiver| " + line, file=sys.stderr)
        print(f"» receiver stopped (exit {code})")
    return summarise(WORK / "logs")


def summarise(logs: Path) -> int:
    files = sorted(p for p in logs.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        print("no files were written", file=sys.stderr)
        return 1
    print(f"\nWhere every record went (under {logs}):")
    print(f"  {'file':<24} {'records':>7}  first record")
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        first = json.loads(lines[0]) if lines else {}
        what = first.get("body") or first.get("name") or ""
        print(f"  {path.relative_to(logs)!s:<24} {len(lines):>7}  {str(what)[:60]}")
    print("\nLook inside: less .demo/logs/security.log   (the password in it was masked by the receiver)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
