"""Loaded (via PYTHONPATH) into every Python process of a faked-date test run; see README.md
here. It works around one bug of Debian's libfaketime 0.9.10 and changes nothing else."""

from __future__ import annotations

import os
import threading
import time


def _event_sleep(seconds: float) -> None:
    """`time.sleep` on a timed lock wait (sem_clockwait on CLOCK_MONOTONIC), which libfaketime
    leaves alone: its clock_nanosleep(TIMER_ABSTIME) wrapper shifts a monotonic deadline by the
    faked realtime offset and fails with EINVAL under FAKETIME_DONT_FAKE_MONOTONIC=1."""
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


if "faketime" in os.environ.get("LD_PRELOAD", ""):
    time.sleep = _event_sleep
