"""The in-memory sink that tests and embeddings read: copies of what it was given, in linear
space (a record's resource and scope are copied once per batch, not once per record)."""

from __future__ import annotations

import grpc

from sluice_collector.testing import InMemorySink, start_receiver
from tests.otlp_builders import log_record, logs_request

EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def test_records_of_a_batch_share_one_copy_of_their_resource_and_scope() -> None:
    memory = InMemorySink()
    receiver = start_receiver({"masking": {"enabled": False}}, sinks=[memory])
    try:
        with grpc.insecure_channel(receiver.endpoint) as channel:
            request = logs_request(*(log_record(f"r{i}") for i in range(50)))
            channel.unary_unary(EXPORT)(request.SerializeToString(), timeout=10)
    finally:
        receiver.stop(5)
    refs = memory.by_category["app"]
    assert [record.body.string_value for _, _, record in refs] == [f"r{i}" for i in range(50)]
    assert len({id(resource) for resource, _, _ in refs}) == 1
    assert len({id(scope) for _, scope, _ in refs}) == 1
    resource, scope, _ = refs[0]
    assert len(scope.log_records) == 50  # the whole scope, copied once
    assert resource.scope_logs[0] == scope
