"""Handing memory back to the OS after big requests (glibc malloc; elsewhere a no-op).

Measured with one receiver, a 10 MiB attribute value, a 100,000-attribute request and a
16 MiB+ oversized one (tests/reliability/test_hostile_input.py), RSS after minus RSS before:

- +100 MiB after ten 10 MiB requests: grpc.aio kept every message a stream-unary handler had
  read from its request iterator (fixed in receivers/otlp_grpc.py: `context.read()`);
- +23 MiB: glibc's *dynamic* mmap threshold. A freed mmapped block (the first 10 MiB message)
  raises the threshold to its size, so later blocks of that size come from the heap, where
  fragmentation keeps them. A fixed threshold (`mallopt(M_MMAP_THRESHOLD)`) keeps big buffers
  in mmaps, unmapped the moment they are freed: +13.6 MiB;
- the rest is heap freed but not returned (+12 MiB after a 100,000-attribute request, +2.7 MiB
  after a trim): `malloc_trim(0)` once the receiver is idle again after at least
  `TRIM_AFTER_BYTES` of requests, at most once per `TRIM_INTERVAL_S` (≈ 20 ms on a fragmented
  200 MiB heap, so not after every request under load, when the memory is in use anyway). It
  runs `TRIM_DELAY_S` later, on a thread of its own (ctypes lets go of the GIL meanwhile):
  when the last request gives back its admission place, its decoded batch, its message and
  gRPC's buffers are not all freed yet, and a trim then would find little to return.

Result: +1.3 MiB after the three requests (was +26 MiB before this module, +45 MiB with the
iterator leak).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time

log = logging.getLogger("sluice.receiver")

MiB = 1024 * 1024
TRIM_AFTER_BYTES = 1 * MiB  # a 1.5 MB request of 100,000 attributes leaves 12 MiB of heap
MMAP_THRESHOLD_BYTES = 1 * MiB
TRIM_DELAY_S = 0.25
TRIM_INTERVAL_S = 1.0  # at most one trim a second, however bursty the load
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - only glibc has it
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None  # not glibc: nothing to do
    return libc


_LIBC = _libc()


def tune_malloc() -> None:
    """Fix glibc's mmap threshold (once per process, before big requests come in)."""
    if _LIBC is not None and not _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; big buffers may stay resident")


def trim() -> None:
    """Return free heap memory to the OS (`malloc_trim(0)`) now."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class _Trimmer:
    """One daemon thread that trims `TRIM_DELAY_S` after the last `soon()`."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._due = 0.0
        self._last = float("-inf")
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def soon(self) -> None:
        if _LIBC is None:
            return
        with self._lock:
            self._due = max(time.monotonic() + TRIM_DELAY_S, self._last + TRIM_INTERVAL_S)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sluice-trim", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while (left := self._due - time.monotonic()) > 0:
                time.sleep(left)
            trim()
            self._last = time.monotonic()


_trimmer = _Trimmer()


def trim_soon() -> None:
    """Return free heap memory to the OS shortly (see the module docstring), off this thread."""
    _trimmer.soon()

