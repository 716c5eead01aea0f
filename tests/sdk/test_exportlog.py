"""The OTLP exporters' own log lines become one sluice line per signal."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import pytest

from sluice import _health
from sluice._exportlog import EXPORTER_LOGGERS, ExporterLogFilter, attach


@pytest.fixture
def grpc_logger() -> Iterator[logging.Logger]:
    """The exporter loggers with our filter alone: an exporter made by an earlier test leaves
    OTel's own DuplicateFilter there, which would hide repeated lines from ours."""
    _health.reset()
    saved = {name: list(logging.getLogger(name).filters) for name in EXPORTER_LOGGERS}
    for name in EXPORTER_LOGGERS:
        logging.getLogger(name).filters.clear()
    logger = logging.getLogger(EXPORTER_LOGGERS[0])
    attach(ExporterLogFilter("http://127.0.0.1:9", "grpc"))
    yield logger
    for name, filters in saved.items():
        logging.getLogger(name).filters[:] = filters
    _health.reset()


def test_retries_of_one_signal_are_one_line_and_the_aftermath_is_only_counted(
    grpc_logger: logging.Logger, caplog: pytest.LogCaptureFixture,
) -> None:
    # The exporter's own logger at DEBUG too: an earlier test's init() may have set its level.
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger=grpc_logger.name):
        for _ in range(3):
            grpc_logger.warning("Transient error %s encountered while exporting %s to %s, retrying in %.2fs. "
                                "Error details: %s", grpc.StatusCode.UNAVAILABLE, "metrics", "127.0.0.1:9",
                                0.93, "failed to connect to all addresses")
        grpc_logger.warning("Shutdown in progress, aborting retry.")
        grpc_logger.debug("Reinitializing gRPC channel for %s exporter due to UNAVAILABLE error", "metrics")
    raw = [r for r in caplog.records if r.name == grpc_logger.name]
    assert [r.levelno for r in raw] == [logging.DEBUG]  # only the debug line passes as it was
    [said] = [r.getMessage() for r in caplog.records if r.name == "sluice.internal"]
    assert said.startswith("sluice: cannot deliver metrics to http://127.0.0.1:9 over gRPC: UNAVAILABLE "
                           "(failed to connect to all addresses); is a receiver listening there?")
    assert _health.counters["errors.metric_export"] == 3
    assert _health.counters["errors.exporter_log"] == 1


def test_attaching_again_replaces_the_earlier_handles_filter(grpc_logger: logging.Logger) -> None:
    attach(ExporterLogFilter("http://other:4317", "grpc"))
    assert [f.endpoint for f in grpc_logger.filters if isinstance(f, ExporterLogFilter)] == ["http://other:4317"]
