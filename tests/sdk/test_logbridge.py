"""The stdlib logging bridge: what it captures, what it ignores, and what it leaves alone."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger as an unconfigured app has it: no handlers (not even pytest's), WARNING."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    for h in saved_handlers:
        root.removeHandler(h)
    root.setLevel(logging.WARNING)
    try:
        yield root
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in saved_handlers:
            root.addHandler(h)
        root.setLevel(saved_level)


def test_bridge_is_no_root_handler_so_app_logging_configuration_works_as_without_it() -> None:
    """basicConfig() and dictConfig() after attach configure what they would without sluice, and
    checks such as werkzeug's and Flask's (is any handler there?) see what they would see."""
    with bare_root() as root:
        items: list[Item] = []
        handler = SluiceHandler()
        handler.sinks.append(items.append)
        attach(handler)
        try:
            assert root.handlers == []
            assert not logging.getLogger("werkzeug").hasHandlers()
            stream = io.StringIO()
            logging.basicConfig(stream=stream, format="%(message)s")
            assert len(root.handlers) == 1  # basicConfig did its job: the root had no handler
            logging.getLogger("app").warning("to both")
            assert stream.getvalue() == "to both\n"
            logging.config.dictConfig({"version": 1, "handlers": {"s": {"class": "logging.StreamHandler",
                                                                          "stream": "ext://sys.stdout"}},
                                       "root": {"handlers": ["s"]}, "disable_existing_loggers": False})
            logging.getLogger("app").warning("after dictConfig")
            assert [i[4] for i in items] == ["to both", "after dictConfig"]
        finally:
            detach(handler)
        logging.getLogger("app").warning("after detach")
        assert [i[4] for i in items] == ["to both", "after dictConfig"]
        from sluice import _logbridge

        if not _logbridge._attached:  # another test's sluice.init() may legitimately keep the hooks
            assert logging.Logger.callHandlers is _logbridge._next_call_handlers


def test_unconfigured_app_still_gets_its_warnings_from_logging_last_resort() -> None:
    """An app with no logging configuration prints warnings to stderr via `logging.lastResort`;
    a root handler would have silenced that, the bridge must not."""
    with bare_root():
        items: list[Item] = []
        handler = SluiceHandler()
        handler.sinks.append(items.append)
        last_resort, stream = logging.lastResort, io.StringIO()
        logging.lastResort = logging.StreamHandler(stream)
        logging.lastResort.setLevel(logging.WARNING)
        attach(handler)
        try:
            logging.getLogger("app").warning("printed as before")
        finally:
            detach(handler)
            logging.lastResort = last_resort
        assert stream.getvalue() == "printed as before\n"
        assert [i[4] for i in items] == ["printed as before"]


def test_bridge_level_below_the_root_ships_info_without_showing_it_to_the_app_handlers() -> None:
    """With the root at WARNING and the bridge at INFO, `log.info()` is shipped and the console
    prints exactly what it printed before; explicit logger levels and propagate=False are kept."""
    with bare_root() as root:
        items: list[Item] = []
        handler = SluiceHandler(level=logging.INFO)
        handler.sinks.append(items.append)
        stream = io.StringIO()
        app_handler = logging.StreamHandler(stream)
        root.addHandler(app_handler)
        quiet = logging.getLogger("floor.quiet")
        quiet.setLevel(logging.ERROR)
        private = logging.getLogger("floor.private")
        private.propagate = False
        verbose = logging.getLogger("floor.verbose")
        verbose.setLevel(logging.DEBUG)
        attach(handler, logging.INFO)
        try:
            logging.getLogger("floor.app").info("shipped, not printed")
            logging.getLogger("floor.app").debug("below the bridge")
            logging.getLogger("floor.app").warning("shipped and printed")
            logging.info("root info, shipped")
            quiet.warning("quiet logger keeps its level")
            private.info("never reaches the root")
            verbose.debug("printed by the app, below the bridge")
            assert logging.getLogger("floor.app").getEffectiveLevel() == logging.WARNING  # levels untouched
        finally:
            detach(handler)
            for logger in (quiet, private, verbose):
                logger.setLevel(logging.NOTSET)
                logger.propagate = True
        assert [i[4] for i in items] == ["shipped, not printed", "shipped and printed", "root info, shipped"]
        assert stream.getvalue() == "shipped and printed\nprinted by the app, below the bridge\n"
