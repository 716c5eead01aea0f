"""Test helpers that ship with the receiver, so users and our own tests need no mocks.

- `start_receiver(...)`: a real receiver in this process on a free 127.0.0.1 port, with real
  gRPC, optionally with in-memory sinks instead of files.
- `InMemorySink`: the twin of every sink; keeps copies of what it was given, per category.
- `ManualClock`: a clock that moves only when told, for the alert rules' windows
  (`start_receiver(..., alerts_clock=clock)`), so a test crosses a 5-minute window at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from sluice_collector.service.config import ReceiverConfig, parse_config, with_endpoints
from sluice_collector.service.receiver import Receiver
from sluice_collector.sinks.base import Sink
from sluice_collector.sinks.memory import InMemorySink

__all__ = ["InMemorySink", "ManualClock", "config_from", "start_receiver"]


def config_from(settings: Mapping[str, Any] | str | ReceiverConfig | None) -> ReceiverConfig:
    """A validated config from a dict or YAML text, listening on free loopback ports (OTLP/gRPC,
    OTLP/HTTP and telemetry on 127.0.0.1 port 0, so tests never collide on a port)."""
    if isinstance(settings, ReceiverConfig):
        config = settings
    else:
        text = settings if isinstance(settings, str) else yaml.safe_dump(dict(settings or {}))
        config = parse_config(text, source="<test>")
    return with_endpoints(
        config,
        grpc="127.0.0.1:0" if config.receivers.grpc.endpoint else None,
        http="127.0.0.1:0" if config.receivers.http.endpoint else None,
        telemetry="127.0.0.1:0" if config.telemetry.listen else None,
    )


class ManualClock:
    """`time.time`'s shape, standing still until `advance`d (thread-safe)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now


def start_receiver(
    settings: Mapping[str, Any] | str | ReceiverConfig | None = None,
    *,
    sinks: Sequence[Sink] | None = None,
    alerts_clock: Callable[[], float] = time.time,
) -> Receiver:
    """Start a receiver in this process; call `.stop()` when done (or use it as a fixture).
    `alerts_clock` drives the alert rules' windows and alert times (e.g. a `ManualClock`)."""
    receiver = Receiver(config_from(settings), sinks=sinks, alerts_clock=alerts_clock)
    receiver.start()
    return receiver
