"""`job()`: a background unit of work as one span, a start and a finish record, and metrics.

Jobs have no HTTP request to hang telemetry on, so this gives them the same shape: a trace per run,
a `job.id` that links the records, `job.duration` (histogram, seconds) and `job.runs` counted by
outcome. Exceptions are recorded on the span and in the failure record, then re-raised unchanged:
telemetry reports failures, it never swallows them.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from sluice import _health
from sluice._categories import Category, get_logger

__all__ = ["job"]

P = ParamSpec("P")
R = TypeVar("R")

_tracer = trace.get_tracer("sluice.jobs")
_meter = metrics.get_meter("sluice.jobs")
_duration = _meter.create_histogram("job.duration", unit="s", description="Duration of job runs")
_runs = _meter.create_counter("job.runs", unit="{run}", description="Job runs by outcome")
_succeeded = _meter.create_counter("job.succeeded", unit="{run}", description="Job runs that succeeded")
_failed = _meter.create_counter("job.failed", unit="{run}", description="Job runs that raised")


class job(AbstractContextManager["job"]):  # noqa: N801 - used like a function: `with sluice.job(...)`
    """Run a block or a function as a named job: `with sluice.job("msi.generate", job_id=id):`.

    As a decorator (`@sluice.job("nightly.cleanup")`) each call is its own run with its own id.
    """

    def __init__(self, name: str, *, job_id: str | None = None, **attributes: Any) -> None:
        self.name = name
        self.job_id = job_id
        self.attributes = attributes
        self.span: Span | None = None
        self._span_cm: Any = None
        self._start = 0.0
        self._log = get_logger(Category.APP)

    def _attrs(self) -> dict[str, Any]:
        return {"job.name": self.name, "job.id": self.job_id, **self.attributes}

    def __enter__(self) -> job:
        self.job_id = self.job_id or uuid.uuid4().hex
        try:
            self._span_cm = _tracer.start_as_current_span(
                f"job {self.name}", kind=SpanKind.INTERNAL, attributes=self._attrs(),
                record_exception=False, set_status_on_exception=False)
            self.span = self._span_cm.__enter__()
            self._log.info("job %s started", self.name, extra={**self._attrs(), "event.name": "job.start"})
        except Exception as exc:
            _health.report_once("job", "could not start job telemetry", exc)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        duration_s = time.perf_counter() - self._start
        outcome = "success" if exc is None else "failure"
        try:
            attrs = {"job.name": self.name, "job.outcome": outcome}
            _duration.record(duration_s, attrs)
            _runs.add(1, attrs)
            (_succeeded if exc is None else _failed).add(1, {"job.name": self.name})
            extra = {**self._attrs(), "job.outcome": outcome,
                     "job.duration_ms": round(duration_s * 1000, 3),
                     "event.name": "job.finish" if exc is None else "job.fail"}
            if exc is None:
                self._log.info("job %s finished in %.3fs", self.name, duration_s, extra=extra)
            else:
                if self.span is not None:
                    self.span.record_exception(exc)
                    self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                exc_info = (exc_type, exc, tb) if exc_type is not None else None
                self._log.log(logging.ERROR, "job %s failed after %.3fs", self.name, duration_s, extra=extra,
                              exc_info=exc_info)
        except Exception as err:
            _health.report_once("job", "could not finish job telemetry", err)
        finally:
            if self._span_cm is not None:
                self._span_cm.__exit__(None, None, None)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        name, job_id, attributes = self.name, self.job_id, self.attributes
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with job(name, job_id=job_id, **attributes):
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with job(name, job_id=job_id, **attributes):
                return func(*args, **kwargs)

        return run
