"""The capture process of `sluice run`: frames in on stdin, records out through the SDK's shipper.

Started by `sluice run` before the program, at a lower CPU priority (nice 10), in its own process
group and with the forwarded signals still blocked, so neither a terminal's Ctrl-C nor a signal
meant for the program can end it before the output is shipped: it ends when its input does (after
`X`, or when `sluice run` has gone), flushing within the time it was given. Its last act is one
JSON line of counts on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from typing import Any

from sluice._capture.assembler import LineAssembler
from sluice._capture.frames import CLOSE, CONFIG, DATA, EXPECT, GAP, NAMES, TORN, read_frames
from sluice._capture.records import RecordBuilder

__all__ = ["main"]


def _config_from(payload: bytes) -> dict[str, Any]:
    config = json.loads(payload)
    if not isinstance(config, dict):
        raise ValueError("config frame is not an object")
    return config


def main() -> int:
    from sluice._capture.run import quiet_internal_log, settings_for
    from sluice._runtime import build_log_shipper

    quiet_internal_log(lambda line: print(line, file=sys.stderr, flush=True))
    # A background process group writing to a terminal with `stty tostop` would be stopped by
    # SIGTTOU, and with it the shipping; ignored, the write simply goes through.
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        # The program and the pump come first: on a busy machine, parsing waits (and what does
        # not fit in the pipe meanwhile is dropped and counted), the program does not.
        os.nice(10)
    fd = sys.stdin.fileno()
    buffer = bytearray()
    assembler: LineAssembler | None = None
    shipper = None
    timeout_s: float | None = None
    while True:
        wait = assembler.next_tick_s() if assembler is not None else None
        ready, _, _ = select.select([fd], [], [], wait)
        if ready:
            data = os.read(fd, 1 << 20)
            if not data:
                break
            buffer += data
        closing = False
        for kind, stream, flags, payload in read_frames(buffer):
            if kind == CONFIG and assembler is None:
                config = _config_from(payload)
                settings = settings_for(config["service_name"], config["endpoint"],
                                        config["resource_attributes"])
                shipper = build_log_shipper(settings, config["resource"], spill_all=True)
                timeout_s = settings.exit_timeout_s
                builder = RecordBuilder(
                    stdout_level=config["stdout_level"], stderr_level=config["stderr_level"],
                    record_attributes=settings.resource_attributes)
                assembler = LineAssembler(builder, shipper.submit)
            elif assembler is None:
                continue
            elif kind == DATA and stream in NAMES:
                assembler.data(NAMES[stream], payload, gap=bool(flags & GAP), torn=bool(flags & TORN))
            elif kind == EXPECT and stream in NAMES:
                assembler.expect(NAMES[stream], payload)
            elif kind == CLOSE:
                timeout_s = float(json.loads(payload).get("timeout_s", timeout_s or 3.0))
                closing = True
        if closing:
            break
        if assembler is not None:
            assembler.tick()
    counts: dict[str, int] = {"records": 0, "lines_dropped": 0, "lines_skipped": 0, "records_dropped": 0}
    if assembler is not None and shipper is not None:
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else 3.0)
        assembler.finish()
        shipper.shutdown(max(0.1, deadline - time.monotonic()))
        counts = {"records": assembler.records, "lines_dropped": assembler.lines_dropped,
                  "lines_skipped": assembler.lines_skipped, "records_dropped": shipper.dropped}
    with contextlib.suppress(OSError):  # sluice run may be gone (SIGKILL): nobody to tell
        print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
