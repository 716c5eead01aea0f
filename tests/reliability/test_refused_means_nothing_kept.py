"""Promise: "refused" means nothing kept twice — a batch one sink stored is never stored again
because a later sink failed and the client retried; and a poison timestamp costs one partial
success, not a retry loop.

The failing sink is the shipped `FailingSink` (sluice_collector.testing), put after the real file
sink and the real index; the client is the official OpenTelemetry OTLP/gRPC exporter with its own
retry policy, or the harness' raw sender that retries like it.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from sluice_collector import testing
from sluice_collector.query.store import IndexStore
from sluice_collector.testing import FailingSink
from tests.reliability.harness import Sender, make_request, scan_logs

POISON_NS = 2**64 - 1
ADMIN_KEY = "admin-key-0123456789abcdef"


def _settings(logs: Path) -> dict[str, Any]:
    return {"files": {"directory": str(logs)},
            "query": {"api_keys": {"ops": {"key": ADMIN_KEY, "role": "admin"}}}}


def _lines(logs: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(logs.glob("*.log"))
            for line in path.read_text().splitlines() if line]


def _metric(receiver: Any, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{receiver.status_port}/metrics",
                                  timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


def test_poison_timestamp_through_the_official_exporter_is_stored_at_most_once(tmp_path: Path) -> None:
    """A record stamped 2^64−1 ns beside a well-formed one, sent once by the official exporter,
    with a sink after the files that refuses the first two attempts: the exporter retries, the
    poison record is rejected (partial success) and stored nowhere, the neighbour is in the
    files once and in the index once."""
    logs = tmp_path / "logs"
    failing = FailingSink(times=2, retry_after_s=0.1)
    receiver = testing.start_receiver(_settings(logs), extra_sinks=[failing])
    captured = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "poison"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(captured))
    logger = provider.get_logger("poison.test")
    logger.emit(LogRecord(timestamp=POISON_NS, observed_timestamp=POISON_NS, body="poison record"))
    logger.emit(LogRecord(timestamp=1_763_900_000_000_000_000, body="well-formed neighbour"))
    provider.shutdown()
    exporter = OTLPLogExporter(endpoint=receiver.endpoint, insecure=True, timeout=30)
    try:
        result = exporter.export(captured.get_finished_logs())
        resumed = _metric(receiver, "sluice_retries_resumed_total")
    finally:
        exporter.shutdown()
        receiver.stop(10)
    assert result.name == "SUCCESS"
    assert failing.refused == 2  # the exporter really retried, twice
    assert resumed == 2
    bodies = [line["body"] for line in _lines(logs)]
    assert bodies.count("well-formed neighbour") == 1
    assert "poison record" not in bodies
    indexed = [json.loads(row.line)["body"] for row in IndexStore.for_directory(logs).rows()]
    assert indexed == ["well-formed neighbour"]
    assert [ref[2].body.string_value for ref in failing.by_category["app"]] == ["well-formed neighbour"]


def test_a_retry_after_a_later_sink_failed_does_not_store_the_batch_again(tmp_path: Path) -> None:
    """Each of 20 batches is refused three times by a sink after the files and the index, and
    retried until acknowledged: every record is on disk once, in the index once."""
    logs = tmp_path / "logs"
    failing = FailingSink(times=0)
    receiver = testing.start_receiver(_settings(logs), extra_sinks=[failing])
    sender = Sender(receiver.endpoint)
    codes: list[str] = []
    try:
        for n in range(20):
            data = make_request(range(n * 10, n * 10 + 10))
            failing.refuse_next(3)
            for _attempt in range(10):
                out = sender.call(data)
                codes.append(out.code.name)
                if out.code.name == "OK":
                    break
                assert out.code.name == "UNAVAILABLE"
                assert out.retry_delay is not None
    finally:
        sender.close()
        receiver.stop(10)
    assert codes.count("OK") == 20
    assert codes.count("UNAVAILABLE") == 60
    scan = scan_logs(logs)
    assert set(scan.counts) == set(range(200))
    assert not scan.duplicates
    rows = IndexStore.for_directory(logs).rows()
    seqs = [json.loads(row.line)["attributes"]["seq"] for row in rows]
    assert sorted(seqs) == list(range(200))


def test_a_poison_record_alone_is_a_partial_success_and_nothing_is_written(start_receiver: Any) -> None:
    receiver = start_receiver({"query": {"api_keys": {"ops": {"key": ADMIN_KEY, "role": "admin"}}}})
    request = ExportLogsServiceRequest.FromString(make_request([1, 2]))
    records = request.resource_logs[0].scope_logs[0].log_records
    records[0].time_unix_nano = 2**63  # the first nanosecond a signed 64-bit count cannot hold
    records[1].observed_time_unix_nano = POISON_NS
    records[1].time_unix_nano = 0
    sender = Sender(receiver.endpoint)
    try:
        out = sender.call(request.SerializeToString())
    finally:
        sender.close()
    receiver.stop()
    assert out.code.name == "OK"
    response = ExportLogsServiceResponse.FromString(out.response)
    assert response.partial_success.rejected_log_records == 2
    assert "2^63" in response.partial_success.error_message
    assert scan_logs(receiver.logs_dir).counts == {}
