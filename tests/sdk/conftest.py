from __future__ import annotations

from collections.abc import Iterator

import pytest

from sluice.testing import Captured, capture
from tests.sdk.otlp_sink import Sink, start_sink


@pytest.fixture
def tel() -> Iterator[Captured]:
    """In-process telemetry capture (sluice initialised once per test process with exporter="none")."""
    with capture() as captured:
        yield captured


@pytest.fixture
def sink() -> Iterator[Sink]:
    """A real OTLP/gRPC server on 127.0.0.1 collecting what sluice in a subprocess exports."""
    server = start_sink()
    try:
        yield server
    finally:
        server.stop()
