"""How much `sluice run`'s output capture slows a program that floods its output.

    python bench/run_capture.py [--mb 100] [--repeat 3] [--line-bytes 100 4096] [--modes pipe pty]

A shell script writes `--mb` MB with `yes LINE | head -c N` and measures its own time (`date
+%s%N` before and after): that is "child speed", the thing the capture must not hurt. It runs
without sluice and under `sluice run` against a real receiver (`sluice receiver run`, masking
off, files in a temporary directory), with its stdout on a pipe drained by a fast reader (as
`| cat > /dev/null`) or on a pty drained the same way (a terminal). Best of `--repeat` each.
Also shown: sluice run's whole wall time (the child plus the final flush, bounded by
exit_timeout_s) and how many lines were shipped and how many dropped — under a flood, lines
past the bounded queue are dropped and counted by design; the child is never held up for them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.receiver_process import ReceiverProcess  # noqa: E402

FLOOD_SH = """#!/bin/sh
t0=$(date +%s%N)
yes "$LINE" | head -c "$BYTES"
t1=$(date +%s%N)
echo $((t1 - t0)) > "$OUT"
"""


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 1 << 20):
                return
        except OSError:
            return


def run_once(argv: list[str], env: dict[str, str], mode: str, out_file: Path) -> tuple[float, float, str]:
    """(child seconds, wall seconds, sluice's stderr)."""
    if mode == "pty":
        master, slave = os.openpty()
        reader = threading.Thread(target=_drain, args=(master,), daemon=True)
        reader.start()
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=slave,
                              stderr=subprocess.PIPE, check=False)
        wall = time.perf_counter() - start
        os.close(slave)
        reader.join(30)
        os.close(master)
    else:
        start = time.perf_counter()
        popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        assert popen.stdout is not None
        reader = threading.Thread(target=_drain, args=(popen.stdout.fileno(),), daemon=True)
        reader.start()
        stderr_bytes = popen.stderr.read() if popen.stderr else b""
        popen.wait()
        wall = time.perf_counter() - start
        reader.join(30)
        proc = subprocess.CompletedProcess(argv, popen.returncode, b"", stderr_bytes)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return int(out_file.read_text()) / 1e9, wall, proc.stderr.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--line-bytes", type=int, nargs="+", default=[100, 4096])
    parser.add_argument("--modes", nargs="+", default=["pipe", "pty"], choices=["pipe", "pty"])
    args = parser.parse_args()
    total = args.mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="sluice-bench-run-") as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "flood.sh"
        script.write_text(FLOOD_SH)
        receiver = ReceiverProcess(tmp, {"masking": {"enabled": False}}).start()
        print(f"sluice run capture: a shell script writing {args.mb} MB (yes | head -c), "
              f"best of {args.repeat}; {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        print(f"{'mode':5} {'line':>6}  {'child alone':>12} {'child under sluice':>19} {'ratio':>6}"
              f"  {'sluice wall':>11}  shipped / dropped lines")
        try:
            for mode in args.modes:
                for line_bytes in args.line_bytes:
                    env = dict(os.environ, LINE="x" * (line_bytes - 1), BYTES=str(total),
                               OUT=str(tmp / "t"), SLUICE_SPILL_DIR=str(tmp / "spill"),
                               SLUICE_RUNTIME_METRICS="false")
                    alone = min(run_once(["sh", str(script)], env, mode, tmp / "t")[0]
                                for _ in range(args.repeat))
                    best: tuple[float, float, str] | None = None
                    for _ in range(args.repeat):
                        shutil.rmtree(tmp / "logs", ignore_errors=True)
                        result = run_once([sys.executable, "-m", "sluice_collector", "run", "--endpoint",
                                           f"http://{receiver.endpoint}", "--service-name", "bench", "--",
                                           "sh", str(script)], env, mode, tmp / "t")
                        if best is None or result[0] < best[0]:
                            best = result
                    assert best is not None
                    lines = total // line_bytes
                    match = re.search(r"(\d+) lines and (\d+) records were not shipped", best[2])
                    dropped = int(match.group(1)) + int(match.group(2)) if match else 0
                    print(f"{mode:5} {line_bytes:>5}B  {alone:>8.3f} s {total / alone / 1e6:>4.0f}MB/s"
                          f" {best[0]:>8.3f} s {total / best[0] / 1e6:>4.0f}MB/s {best[0] / alone:>5.2f}x"
                          f"  {best[1]:>9.3f} s  {lines - dropped} / {dropped}")
        finally:
            receiver.stop()


if __name__ == "__main__":
    main()
