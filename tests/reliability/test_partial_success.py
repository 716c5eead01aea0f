"""Promise: records that break the data model are dropped and counted exactly in
`partial_success.rejected_log_records`, with a reason that quotes no record content; the rest of
the request is stored."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from tests.reliability.harness import Sender, make_request, scan_logs

SECRET = "hunter2-SECRET-7f3a"


def test_partial_success_counts_exactly_and_leaks_nothing(start_receiver: Any) -> None:
    receiver = start_receiver({})
    req = ExportLogsServiceRequest.FromString(make_request(range(1000)))
    bad = set()
    for i, rec in enumerate(req.resource_logs[0].scope_logs[0].log_records):
        if i % 7 == 3:
            rec.trace_id = b"\x01" * 15          # 15 bytes: invalid
            bad.add(i)
        elif i % 11 == 5:
            rec.span_id = b"\x02" * 9            # 9 bytes: invalid
            bad.add(i)
        if i in bad:
            rec.body.string_value = f"password={SECRET} record {i}"
    sender = Sender(receiver.endpoint)
    try:
        out = sender.call(req.SerializeToString())
    finally:
        sender.close()
    assert out.code.name == "OK"
    response = ExportLogsServiceResponse.FromString(out.response)
    print(f"\npartial success: rejected {response.partial_success.rejected_log_records} of 1000, "
          f"reason {response.partial_success.error_message!r}")
    assert response.partial_success.rejected_log_records == len(bad)
    reason = response.partial_success.error_message
    assert reason
    assert SECRET not in reason
    assert "password" not in reason
    assert "record" in reason
    receiver.stop()
    scan = scan_logs(receiver.logs_dir)
    assert set(scan.counts) == set(range(1000)) - bad
    assert not scan.duplicates
    for path in receiver.logs_dir.rglob("*.log"):
        assert SECRET not in path.read_text()
