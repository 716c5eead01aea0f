"""The raw-bytes walker: which records of an encoded request a byte span falls in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_collector.processors.wirescan import locate
from tests.otlp_builders import log_record, logs_request

MARK = "MARKED-VALUE"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 100, 120, 130, 300, 5000, 17000, 70000]), st.booleans()),
                min_size=1, max_size=8))
def test_a_span_marks_exactly_the_record_that_holds_it_whatever_its_size(
    records: list[tuple[int, bool]],
) -> None:
    """Records whose encoded length takes one, two or three bytes (short lines, ordinary ones,
    stack traces) are all walked to the right index."""
    request = logs_request(*(log_record(("x" * size) + (MARK if marked else "")) for size, marked in records))
    buf = request.SerializeToString()
    spans, pos = [], 0
    while (at := buf.find(MARK.encode(), pos)) >= 0:
        spans.append((at, at + len(MARK)))
        pos = at + 1
    found = locate(buf, spans)
    assert found.records == {(0, 0, i) for i, (_, marked) in enumerate(records) if marked}
