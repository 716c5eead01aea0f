"""The gRPC edge: OTLP status codes for bad, big and too-many requests; partial success."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sluice_collector.batch import Batch
from sluice_collector.errors import SinkError
from sluice_collector.service.receiver import Receiver
from sluice_collector.testing import InMemorySink, start_receiver
from tests.otlp_builders import log_record, logs_request

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class BlockingSink(InMemorySink):
    """A sink that holds every batch until released: stands in for a slow disk."""

    def __init__(self) -> None:
        super().__init__("blocking")
        self.entered = threading.Event()
        self.release = threading.Event()

    def consume(self, batch: Batch) -> None:
        self.entered.set()
        self.release.wait(10)
        super().consume(batch)


class OverlapSink(BlockingSink):
    """A blocking sink that also counts how many batches are inside it at once."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Condition()
        self.inside = 0
        self.most_inside = 0

    def consume(self, batch: Batch) -> None:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self._lock.notify_all()
        try:
            super().consume(batch)
        finally:
            with self._lock:
                self.inside -= 1

    def wait_inside(self, count: int, timeout_s: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self.inside >= count, timeout_s)


class FailingSink(InMemorySink):
    """A sink whose destination is gone."""

    def consume(self, batch: Batch) -> None:
        raise SinkError("disk is on fire", retry_after_s=2.5)


@pytest.fixture
def memory() -> InMemorySink:
    return InMemorySink()


@pytest.fixture
def receiver(memory: InMemorySink) -> Iterator[Receiver]:
    r = start_receiver({"max_request_bytes": "1MiB", "masking": {"enabled": False}}, sinks=[memory])
    yield r
    r.stop(5)


def call(receiver: Receiver, payload: bytes, method: str = LOGS_EXPORT, **kwargs: Any) -> Any:
    with grpc.insecure_channel(receiver.endpoint) as channel:
        stub = channel.unary_unary(method)
        return stub.with_call(payload, timeout=10, **kwargs)


def error_of(receiver: Receiver, payload: bytes, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(receiver, payload, **kwargs)
    return info.value


def good_request() -> bytes:
    return logs_request(log_record("ok")).SerializeToString()


def test_garbage_bytes_get_invalid_argument_and_the_receiver_keeps_serving(
    receiver: Receiver, memory: InMemorySink
) -> None:
    err = error_of(receiver, b"\xff\xfe garbage \x00\x01")
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid OTLP logs Export request" in err.details()
    call(receiver, good_request())
    assert len(memory.by_category["app"]) == 1


def test_truncated_message_gets_invalid_argument(receiver: Receiver) -> None:
    data = logs_request(log_record("x" * 100)).SerializeToString()
    err = error_of(receiver, data[:-20])
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_invalid_utf8_in_a_string_gets_invalid_argument(receiver: Receiver) -> None:
    data = logs_request(log_record("MARKER")).SerializeToString()
    err = error_of(receiver, data.replace(b"MARKER", b"MA\xff\xfeER"))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_deeply_nested_values_get_invalid_argument(receiver: Receiver, memory: InMemorySink) -> None:
    # Encode 200 levels of nested kvlists by hand: Python protobuf refuses to build them.
    inner = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(200):
        kv = b"\x0a\x01k" + b"\x12" + _varint(len(inner)) + inner  # KeyValue{key, value}
        kvlist = b"\x0a" + _varint(len(kv)) + kv  # KeyValueList{values}
        inner = b"\x32" + _varint(len(kvlist)) + kvlist  # AnyValue{kvlist_value = 6}
    record = b"\x2a" + _varint(len(inner)) + inner  # LogRecord{body = 5}
    scope_logs = b"\x12" + _varint(len(record)) + record  # ScopeLogs{log_records = 2}
    resource_logs = b"\x12" + _varint(len(scope_logs)) + scope_logs  # ResourceLogs{scope_logs = 2}
    request = b"\x0a" + _varint(len(resource_logs)) + resource_logs
    err = error_of(receiver, request)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    call(receiver, good_request())
    assert memory.by_category["app"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_gzip_compressed_requests_are_accepted(receiver: Receiver, memory: InMemorySink) -> None:
    call(receiver, logs_request(log_record("zipped " * 100)).SerializeToString(),
         compression=grpc.Compression.Gzip)
    assert memory.by_category["app"][0][2].body.string_value.startswith("zipped")


def test_gzip_bomb_over_the_size_limit_gets_resource_exhausted(
    receiver: Receiver, memory: InMemorySink
) -> None:
    bomb = logs_request(log_record("a" * (8 * 1024 * 1024))).SerializeToString()
    err = error_of(receiver, bomb, compression=grpc.Compression.Gzip)
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    call(receiver, good_request())
    assert len(memory.by_category["app"]) == 1


def test_oversized_request_gets_resource_exhausted(receiver: Receiver) -> None:
    err = error_of(receiver, logs_request(log_record("b" * (2 * 1024 * 1024))).SerializeToString())
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_records_with_bad_ids_are_reported_as_partial_success(
    receiver: Receiver, memory: InMemorySink
) -> None:
    request = logs_request(
        log_record("good", trace_id=b"\x01" * 16, span_id=b"\x02" * 8),
        log_record("bad trace", trace_id=b"\x01" * 5),
        log_record("bad span", span_id=b"\x02" * 3),
        log_record("no ids"),
    )
    response, _ = call(receiver, request.SerializeToString())
    parsed = ExportLogsServiceResponse.FromString(response)
    assert parsed.partial_success.rejected_log_records == 2
    assert "trace_id must be 16 bytes" in parsed.partial_success.error_message
    assert [r[2].body.string_value for r in memory.by_category["app"]] == ["good", "no ids"]


def test_a_clean_export_answers_an_empty_response(receiver: Receiver) -> None:
    response, _ = call(receiver, good_request())
    assert not ExportLogsServiceResponse.FromString(response).HasField("partial_success")


def test_over_capacity_gets_unavailable_with_retry_info() -> None:
    sink = BlockingSink()
    receiver = start_receiver({"queue": {"max_requests": 1, "retry_after_s": 3}}, sinks=[sink])
    try:
        first = threading.Thread(target=call, args=(receiver, good_request()))
        first.start()
        assert sink.entered.wait(5)
        err = error_of(receiver, good_request())
        assert err.code() is grpc.StatusCode.UNAVAILABLE
        assert "at capacity" in err.details()
        trailers = dict(err.trailing_metadata())
        retry = RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert retry.retry_delay.seconds == 3
        sink.release.set()
        first.join(10)
        assert len(sink.by_category["app"]) == 1
    finally:
        sink.release.set()
        receiver.stop(5)


def test_a_failing_sink_gets_unavailable_and_nothing_is_acknowledged() -> None:
    receiver = start_receiver({}, sinks=[FailingSink()])
    try:
        err = error_of(receiver, good_request())
        assert err.code() is grpc.StatusCode.UNAVAILABLE
        assert "disk is on fire" in err.details()
        retry = RetryInfo.FromString(dict(err.trailing_metadata())["google.rpc.retryinfo-bin"])
        assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (2, 500_000_000)
    finally:
        receiver.stop(5)


def test_health_service_reports_serving(receiver: Receiver) -> None:
    with grpc.insecure_channel(receiver.endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "opentelemetry.proto.collector.logs.v1.LogsService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_spans_route_to_traces(receiver: Receiver, memory: InMemorySink) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = "op", b"\x01" * 16, b"\x02" * 8
    call(receiver, request.SerializeToString(), method=TRACES_EXPORT)
    assert [r[2].name for r in memory.by_category["traces"]] == ["op"]


def test_stop_drains_in_flight_batches_before_closing_sinks() -> None:
    sink = BlockingSink()
    receiver = start_receiver({}, sinks=[sink])
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(call(receiver, good_request())))
    first.start()
    assert sink.entered.wait(5)
    stopper = threading.Thread(target=receiver.stop, args=(10,))
    stopper.start()
    threading.Timer(0.5, sink.release.set).start()
    first.join(10)
    stopper.join(15)
    assert results, "the in-flight Export was not acknowledged"
    assert len(sink.by_category["app"]) == 1
    assert sink.stopped


def _two_exports(receiver: Receiver, results: list[Any]) -> list[threading.Thread]:
    threads = [threading.Thread(target=lambda: results.append(call(receiver, good_request())))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    return threads


def _wait_admitted(receiver: Receiver, count: int) -> None:
    registry = receiver.telemetry.registry
    for _ in range(500):
        if (registry.get_sample_value("sluice_queue_batches") or 0) >= count:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{count} requests were never admitted together")


def test_admitted_batches_take_turns_by_default() -> None:
    """One batch at a time per process (queue.max_processing: 1): the second is admitted and
    waits for its turn instead of sharing the GIL with the first; both are acknowledged."""
    sink = OverlapSink()
    receiver = start_receiver({"masking": {"enabled": False}}, sinks=[sink])
    results: list[Any] = []
    try:
        threads = _two_exports(receiver, results)
        assert sink.wait_inside(1, 5)
        _wait_admitted(receiver, 2)
        # Were there no turns, the second batch would be in the sink beside the first by now.
        assert not sink.wait_inside(2, 1.0)
        sink.release.set()
        for thread in threads:
            thread.join(10)
        assert len(results) == 2
        assert len(sink.by_category["app"]) == 2
        assert sink.most_inside == 1
    finally:
        sink.release.set()
        receiver.stop(5)


def test_max_processing_lets_batches_run_side_by_side() -> None:
    sink = OverlapSink()
    receiver = start_receiver({"masking": {"enabled": False}, "queue": {"max_processing": 2}},
                              sinks=[sink])
    results: list[Any] = []
    try:
        threads = _two_exports(receiver, results)
        assert sink.wait_inside(2, 5), "the second batch did not run beside the first"
        sink.release.set()
        for thread in threads:
            thread.join(10)
        assert len(results) == 2
        assert len(sink.by_category["app"]) == 2
    finally:
        sink.release.set()
        receiver.stop(5)
