"""`make demo`: start the receiver on its embedded default, run the quickstart, show where
every record went, and stop the receiver cleanly.

The receiver runs with no `--config` from a scratch directory (`.demo/`), so its default
`./logs` lands in `.demo/logs`. It needs 127.0.0.1:4317, :4318 and :8888 free; when one is
taken it says so and leaves the previous run's files alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"


PORTS = {4317: "OTLP/gRPC", 4318: "OTLP/HTTP", 8888: "telemetry"}


def busy_ports() -> list[str]:
    taken = []
    for port, what in PORTS.items():
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                taken.append(f"127.0.0.1:{port} ({what})")
    return taken


def main() -> int:
    taken = busy_ports()
    if taken:
        print(f"make demo needs {', '.join(taken)}: in use (another receiver, or a previous demo "
              "still running?); stop it and run make demo again", file=sys.stderr)
        return 1
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    print("» starting: sluice receiver run   (embedded default: OTLP on 127.0.0.1:4317 and :4318, "
          "files under ./logs, here .demo/logs)")
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
        print("the receiver did not start (see its lines above)", file=sys.stderr)
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
    # Records only: hidden files and directories are the receiver's own state (alerts, locks).
    files = sorted(p for p in logs.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(logs).parts))
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
