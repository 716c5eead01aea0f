"""Stage: refuse records that break the data model, keep the rest (OTLP partial success).

Two things make a record unstorable:

- **ids of the wrong length**: a trace id must be 16 bytes and a span id 8 (or empty). Such a
  record cannot be correlated and would write garbage ids to disk.
- **a timestamp at or after 2^63 ns** (2262-04-11T23:47:16Z). OTLP carries times as unsigned
  64-bit nanoseconds, but nothing downstream can hold such a time: the index (SQLite), the
  files' readers, the Go and Java consumers a record is forwarded to all count nanoseconds in a
  signed 64-bit integer. It is always a broken clock or a crafted request — and one such record
  once made the index fail after the files had stored its batch, so every retry stored it again.

Such records are **rejected, not clamped**: a record is removed from the request and reported to
the client in `partial_success.rejected_*` with the reason (no record content), and the rest of
the request is stored. Clamping would store a time the sender never sent, and the receiver
changes no record except to mask it; the sender learns of its broken clock from the reason.
A partial success is not retried by exporters, so a poison record costs one request, once.

Checked: logs' `time_unix_nano` and `observed_time_unix_nano`; spans' start, end and event
times; metric data points' `time_unix_nano` and `start_time_unix_nano` (a bad point is removed
from its metric and counted as a rejected data point).

Nearly every batch is valid, and proving that costs a walk of every decoded record (0.7 ms per
1,000 log records). On the compiled path the encoded request is read instead (`count_invalid`
in `_fastpath.c`, the same fields as the Python checks); only when it finds a bad record, or
cannot read the encoding, does the walk below run and remove it. Masking and dropping never
change ids or times and only remove records, so the request as received (`raw`) answers for
the request as it is now.
"""

from __future__ import annotations

from typing import Any

from sluice_collector import fastpath
from sluice_collector.batch import Batch, Signal

_COUNT_INVALID = fastpath.compiled_function("count_invalid")
_WIRE_SIGNALS = {Signal.LOGS: 0, Signal.TRACES: 1}

MAX_TIME_NS = 2**63 - 1  # the last nanosecond a signed 64-bit count can hold
BAD_IDS = "trace_id must be 16 bytes and span_id 8 bytes (or empty)"
BAD_TIME = "a timestamp at or after 2^63 ns (2262-04-11) cannot be stored"


def _log_problem(rec: Any) -> str:
    if len(rec.trace_id) not in (0, 16) or len(rec.span_id) not in (0, 8):
        return BAD_IDS
    if rec.time_unix_nano > MAX_TIME_NS or rec.observed_time_unix_nano > MAX_TIME_NS:
        return BAD_TIME
    return ""


def _span_problem(span: Any) -> str:
    if len(span.trace_id) not in (0, 16) or len(span.span_id) not in (0, 8):
        return BAD_IDS
    if span.start_time_unix_nano > MAX_TIME_NS or span.end_time_unix_nano > MAX_TIME_NS:
        return BAD_TIME
    for event in span.events:
        if event.time_unix_nano > MAX_TIME_NS:
            return BAD_TIME
    return ""


def _point_problem(point: Any) -> str:
    if point.time_unix_nano > MAX_TIME_NS or point.start_time_unix_nano > MAX_TIME_NS:
        return BAD_TIME
    return ""


class RecordValidator:
    """Removes invalid records in place and counts them in `batch.rejected`."""

    def __call__(self, batch: Batch) -> Batch:
        if _COUNT_INVALID is not None and batch.raw and batch.signal in _WIRE_SIGNALS:
            try:
                if _COUNT_INVALID(_WIRE_SIGNALS[batch.signal], batch.raw) == 0:
                    return batch
            except fastpath.Unsupported:
                pass  # an encoding the compiled reader leaves to protobuf: walk the messages
        reasons: dict[str, int] = {}
        if batch.signal is Signal.LOGS:
            for rl in batch.request.resource_logs:  # type: ignore[union-attr]
                for sl in rl.scope_logs:
                    _remove_bad(sl.log_records, _log_problem, reasons)
        elif batch.signal is Signal.TRACES:
            for rs in batch.request.resource_spans:  # type: ignore[union-attr]
                for ss in rs.scope_spans:
                    _remove_bad(ss.spans, _span_problem, reasons)
        else:
            for rm in batch.request.resource_metrics:  # type: ignore[union-attr]
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        if kind is not None:
                            _remove_bad(getattr(metric, kind).data_points, _point_problem, reasons)
        if reasons:
            rejected = sum(reasons.values())
            batch.rejected += rejected
            what = "data point(s)" if batch.signal is Signal.METRICS else "record(s)"
            reason = f"{rejected} {what} rejected: " + "; ".join(
                reason if len(reasons) == 1 else f"{reason} ({n})"
                for reason, n in sorted(reasons.items())
            )
            batch.rejected_reason = "; ".join(filter(None, (batch.rejected_reason, reason)))
        return batch


def _remove_bad(items: Any, problem_of: Any, reasons: dict[str, int]) -> None:
    # Fast path: most batches have nothing to remove, and one pass of cheap checks finds that.
    bad: list[int] = []
    for i, item in enumerate(items):
        problem = problem_of(item)
        if problem:
            bad.append(i)
            reasons[problem] = reasons.get(problem, 0) + 1
    for i in reversed(bad):
        del items[i]
