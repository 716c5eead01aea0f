"""The stdlib logging bridge: what it captures, what it ignores, and what it leaves alone."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from sluice._logbridge import (
    SluiceHandler,
    attach,
    detach,
    install_record_factory,
    to_item,
    uninstall_record_factory,
)
from sluice._shipper import Item


@pytest.fixture
def bridge() -> Iterator[tuple[SluiceHandler, list[Item]]]:
    items: list[Item] = []
    handler = SluiceHandler()
    handler.sinks.append(items.append)
    logger = logging.getLogger("bridge.test")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler, items
    finally:
        logger.removeHandler(handler)


def test_record_becomes_item_with_message_level_location_and_extras(bridge: tuple[SluiceHandler, list[Item]]) -> None:
    _, items = bridge
    logging.getLogger("bridge.test").debug("x=%d", 5, extra={"order.id": "o-1"})
    [it] = items
    assert it[1:5] == (logging.DEBUG, "DEBUG", "bridge.test", "x=5")
    assert it[6] == "test_record_becomes_item_with_message_level_location_and_extras"
    assert it[11] == {"order.id": "o-1"}


def test_otel_grpc_and_sluice_internal_loggers_are_never_shipped(bridge: tuple[SluiceHandler, list[Item]]) -> None:
    handler, items = bridge
    for name in ("opentelemetry.sdk", "grpc._channel", "sluice.internal"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        try:
            logger.error("internal")
        finally:
            logger.removeHandler(handler)
    assert items == []


def test_a_sink_that_logs_does_not_recurse(bridge: tuple[SluiceHandler, list[Item]]) -> None:
    handler, items = bridge
    calls: list[Item] = []

    def chatty(item: Item) -> None:
        calls.append(item)
        logging.getLogger("bridge.test").warning("exporter says hi")

    handler.sinks.append(chatty)
    logging.getLogger("bridge.test").warning("app line")
    assert len(calls) == 1
    assert len(items) == 1


def test_a_failing_sink_never_raises_into_the_app(bridge: tuple[SluiceHandler, list[Item]]) -> None:
    handler, _ = bridge

    def broken(item: Item) -> None:
        raise RuntimeError("sink down")

    handler.sinks.insert(0, broken)
    logging.getLogger("bridge.test").warning("still fine")


def test_handler_filters_still_apply(bridge: tuple[SluiceHandler, list[Item]]) -> None:
    handler, items = bridge
    handler.addFilter(lambda r: "secret" not in r.getMessage())
    logging.getLogger("bridge.test").warning("a secret")
    logging.getLogger("bridge.test").warning("public")
    assert [i[4] for i in items] == ["public"]


def test_exception_details_are_attributes() -> None:
    try:
        raise KeyError("missing")
    except KeyError:
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, "f.py", 1, "failed", (), None)
        import sys

        record.exc_info = sys.exc_info()
    attrs = to_item(record)[11]
    assert attrs is not None
    assert attrs["exception.type"] == "KeyError"
    assert attrs["exception.message"] == "'missing'"
    assert "raise KeyError" in attrs["exception.stacktrace"]


def test_record_factory_adds_trace_ids_and_keeps_the_previous_factory() -> None:
    previous = logging.getLogRecordFactory()

    def tagging(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)  # type: ignore[arg-type]
        record.tagged = True
        return record

    logging.setLogRecordFactory(tagging)
    try:
        install_record_factory()
        provider = TracerProvider()
        with provider.get_tracer("t").start_as_current_span("s") as span:
            record = logging.getLogRecordFactory()("n", logging.INFO, "p", 1, "m", (), None)
        assert record.tagged is True  # type: ignore[attr-defined]
        assert record.trace_id == format(span.get_span_context().trace_id, "032x")  # type: ignore[attr-defined]
        assert to_item(record)[8] == span.get_span_context().trace_id
        outside = logging.getLogRecordFactory()("n", logging.INFO, "p", 1, "m", (), None)
        assert outside.trace_id == "0" * 32  # type: ignore[attr-defined]
    finally:
        uninstall_record_factory()
        logging.setLogRecordFactory(previous)
    assert trace.get_current_span().get_span_context().is_valid is False


def test_basicconfig_and_dictconfig_after_attach_keep_both_the_app_handler_and_the_bridge() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    for h in saved:
        root.removeHandler(h)
    handler = SluiceHandler()
    attach(handler)
    try:
        stream = io.StringIO()
        logging.basicConfig(stream=stream, format="%(message)s")
        assert handler in root.handlers
        assert len(root.handlers) == 2
        logging.config.dictConfig({"version": 1, "handlers": {"s": {"class": "logging.StreamHandler"}},
                                   "root": {"handlers": ["s"]}, "disable_existing_loggers": False})
        assert handler in root.handlers
        assert len(root.handlers) == 2
    finally:
        detach(handler)
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
    from sluice import _logbridge

    if not _logbridge._attached:  # another test's sluice.init() may legitimately keep the wrappers
        assert getattr(logging.basicConfig, "__wrapped__", None) is None
