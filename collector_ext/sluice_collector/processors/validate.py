"""Stage: refuse records that break the OTLP data model, keep the rest (OTLP partial success).

Today that is ids of the wrong length: a trace id must be 16 bytes and a span id 8 (or empty).
Such a record cannot be correlated and would write garbage ids to disk, so it is removed from
the request and reported to the client in `partial_success.rejected_*` with the reason.
"""

from __future__ import annotations

from typing import Any

from sluice_collector.batch import Batch, Signal


def _bad_ids(item: Any) -> bool:
    return len(item.trace_id) not in (0, 16) or len(item.span_id) not in (0, 8)


class RecordValidator:
    """Removes invalid records in place and counts them in `batch.rejected`."""

    def __call__(self, batch: Batch) -> Batch:
        if batch.signal is Signal.METRICS:
            return batch
        rejected = 0
        if batch.signal is Signal.LOGS:
            for rl in batch.request.resource_logs:  # type: ignore[union-attr]
                for sl in rl.scope_logs:
                    rejected += _remove_bad(sl.log_records)
        else:
            for rs in batch.request.resource_spans:  # type: ignore[union-attr]
                for ss in rs.scope_spans:
                    rejected += _remove_bad(ss.spans)
        if rejected:
            batch.rejected += rejected
            reason = (
                f"{rejected} record(s) rejected: trace_id must be 16 bytes and span_id 8 bytes "
                "(or empty)"
            )
            batch.rejected_reason = "; ".join(filter(None, (batch.rejected_reason, reason)))
        return batch


def _remove_bad(records: Any) -> int:
    # Fast path: most batches have nothing to remove, and one pass of len() checks is cheap.
    bad = [i for i, rec in enumerate(records) if _bad_ids(rec)]
    for i in reversed(bad):
        del records[i]
    return len(bad)
