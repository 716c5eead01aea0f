"""The SDK's own health: counters and log-once reporting.

Telemetry must never break its host, so failures after `init()` are swallowed; but a silent
failure is worse than a noisy one, so each kind is logged once (to the `sluice.internal` logger,
which the bridge never ships, so an exporter failure cannot feed itself) and counted. The counters
are exported as metrics by the runtime-metrics module.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter

__all__ = ["counters", "increment", "report_once", "reset"]

internal_logger = logging.getLogger("sluice.internal")

_lock = threading.Lock()
counters: Counter[str] = Counter()
_reported: set[str] = set()


def increment(name: str, amount: int = 1) -> None:
    """Count an event; a plain Counter update is atomic enough under the GIL for our purposes."""
    counters[name] += amount


def report_once(kind: str, message: str, exc: BaseException | None = None) -> None:
    """Log `message` the first time `kind` happens in this process, and count every occurrence."""
    increment(f"errors.{kind}")
    with _lock:
        if kind in _reported:
            return
        _reported.add(kind)
    with contextlib.suppress(Exception):  # reporting must never raise into the app
        internal_logger.warning("sluice: %s (further %r errors are counted, not logged)", message, kind,
                                exc_info=exc is not None and (type(exc), exc, exc.__traceback__))


def reset() -> None:
    """Forget counts and reported kinds (after fork, the child starts its own accounting)."""
    with _lock:
        counters.clear()
        _reported.clear()
