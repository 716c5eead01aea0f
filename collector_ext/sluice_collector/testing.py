"""Test helpers that ship with the receiver, so users and our own tests need no mocks.

- `start_receiver(...)`: a real receiver in this process on a free 127.0.0.1 port, with real
  gRPC, optionally with in-memory sinks instead of files.
- `InMemorySink`: the twin of every sink; keeps copies of what it was given, per category.
- `FailingSink`, `BlockingSink`: destinations that refuse batches or hang, to put beside the
  real sinks (`extra_sinks=`) and see what the receiver does about it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from sluice_collector.service.config import ReceiverConfig, parse_config, with_endpoints
from sluice_collector.service.receiver import Receiver
from sluice_collector.sinks.base import Sink
from sluice_collector.sinks.memory import BlockingSink, FailingSink, InMemorySink

__all__ = ["BlockingSink", "FailingSink", "InMemorySink", "config_from", "start_receiver"]


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


def start_receiver(
    settings: Mapping[str, Any] | str | ReceiverConfig | None = None,
    *,
    sinks: Sequence[Sink] | None = None,
    extra_sinks: Sequence[Sink] = (),
) -> Receiver:
    """Start a receiver in this process; call `.stop()` when done (or use it as a fixture).

    `sinks` replaces the sinks the config asks for; `extra_sinks` runs after them."""
    receiver = Receiver(config_from(settings), sinks=sinks, extra_sinks=extra_sinks)
    receiver.start()
    return receiver
