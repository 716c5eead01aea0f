"""Masking on the wire (processors/wiremask.py) against the walk over the decoded request.

Differential: the same request goes through the masking stage twice after the same raw scan,
once masked on its encoding (`mask_collect` + `splice`) and once by the walk over the decoded
messages, and must come out the same: the request, the counts per detector, the records
dropped. Hypothesis builds the requests from the compiled path's own strategies (every
AnyValue type and nesting, duplicate and empty keys, hostile strings) with secrets, sensitive
and pseudonymised keys mixed in, under configs with `drop` and `hash` actions. The encoding
the wire path leaves (`Batch.raw`) must decode to the request, and must hold no secret that the
request does not: the hand-built encodings below (a field sent twice, two AnyValue members)
are the ones where an old copy could hide, and there the stage must not splice.
"""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sluice_collector.batch import Batch, Signal
from sluice_collector.processors import masking, wiremask
from sluice_collector.processors.masking import SecretMasker
from sluice_collector.service.config import parse_config
from tests.collector import test_fastpath as shapes
from tests.otlp_builders import log_record, logs_request

pytestmark = pytest.mark.skipif(not wiremask.AVAILABLE, reason="compiled path off: nothing to compare")

EMAIL = "jane.roe@example.com"
SECRETS = [f"login {EMAIL}", "password=hunter2Xyz", "card 4111 1111 1111 1111", "from 10.1.2.3",
           "Bearer abcdefghijklmnop12345", "postgres://app:s3cr3tpass@db:5432/x", "ssn=536228874",
           "gh" + "p_aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xYz123", "[REDACTED:email]x@y.io", "(token=abc123)"]
KEYS = ["password", "user.id", "api-key", "note", "auth", "Set-Cookie", EMAIL, ""]
# The hash and pseudonymize key, from a file that lives as long as this module.
_KEY_FILE = tempfile.NamedTemporaryFile(prefix="sluice-test-key-")  # noqa: SIM115
_KEY_FILE.write(b"k" * 32)
_KEY_FILE.flush()
CONFIGS = {
    "default": "masking: {}\n",
    "drop-and-hash": "masking:\n  detectors:\n    email: {action: drop}\n    card: {action: hash}\n"
                     f"  pseudonymize:\n    keys: [user.id]\n    key_file: {_KEY_FILE.name}\n",
    "keys-off": "masking:\n  detectors:\n    sensitive_key: {enabled: false}\n",
}
ENV: dict[str, str] = {}
DIFF = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.one_of(shapes.texts, st.sampled_from(SECRETS))
keys = st.one_of(st.sampled_from(KEYS), shapes.keys)
scalars = st.one_of(texts.map(lambda s: AnyValue(string_value=s)), shapes.scalar_values)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(shapes._array),
        st.lists(st.builds(shapes._kv, keys, st.one_of(st.none(), children)), max_size=4).map(shapes._kvlist),
    ),
    max_leaves=8,
)
attribute_lists = st.lists(st.builds(shapes._kv, keys, st.one_of(st.none(), values)), max_size=5)


def stage(config: str, on_wire: bool) -> SecretMasker:
    masker = SecretMasker(parse_config(config, env=ENV).masking)
    masker._on_wire = on_wire
    return masker


def both(signal: Signal, request: Any, config: str = CONFIGS["default"]) -> tuple[Batch, Batch]:
    """(masked on the wire, masked by the walk), from the same encoding."""
    raw = request.SerializeToString()
    out = []
    for on_wire in (True, False):
        copy = type(request).FromString(raw)
        out.append(stage(config, on_wire)(Batch(signal=signal, request=copy, received_unix_nano=0, raw=raw)))
    return out[0], out[1]


def assert_same(wire: Batch, walk: Batch) -> None:
    assert wire.request == walk.request
    assert wire.masked == walk.masked
    assert wire.dropped == walk.dropped
    # What the later stages read as the encoding is the request, on either path.
    assert type(wire.request).FromString(wire.encoded()) == wire.request


@st.composite
def logs_requests(draw: st.DrawFn) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        rl = request.resource_logs.add()
        rl.resource.attributes.extend(draw(attribute_lists))
        for _ in range(draw(st.integers(0, 2))):
            sl = rl.scope_logs.add()
            sl.scope.name, sl.scope.version = draw(texts), draw(texts)
            sl.scope.attributes.extend(draw(attribute_lists))
            for _ in range(draw(st.integers(0, 4))):
                rec = sl.log_records.add(severity_text=draw(texts), event_name=draw(texts))
                if draw(st.booleans()):
                    rec.body.CopyFrom(draw(values))
                rec.attributes.extend(draw(attribute_lists))
    return request


@st.composite
def traces_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(draw(attribute_lists))
        ss = rs.scope_spans.add()
        ss.scope.name = draw(texts)
        for _ in range(draw(st.integers(0, 3))):
            span = ss.spans.add(name=draw(texts), trace_state=draw(texts))
            span.attributes.extend(draw(attribute_lists))
            if draw(st.booleans()):
                span.status.message = draw(texts)
            for _ in range(draw(st.integers(0, 2))):
                span.events.add(name=draw(texts)).attributes.extend(draw(attribute_lists))
            for _ in range(draw(st.integers(0, 2))):
                span.links.add(trace_state=draw(texts)).attributes.extend(draw(attribute_lists))
    return request


@DIFF
@given(request=logs_requests(), config=st.sampled_from(sorted(CONFIGS)))
def test_logs_masked_on_the_wire_equal_the_walk(request: ExportLogsServiceRequest, config: str) -> None:
    assert_same(*both(Signal.LOGS, request, CONFIGS[config]))


@DIFF
@given(request=traces_requests(), config=st.sampled_from(sorted(CONFIGS)))
def test_traces_masked_on_the_wire_equal_the_walk(request: ExportTraceServiceRequest, config: str) -> None:
    assert_same(*both(Signal.TRACES, request, CONFIGS[config]))


def test_the_wire_path_really_runs_and_rewrites_the_encoding() -> None:
    request = logs_request(log_record(f"mail {EMAIL}", attributes={"password": 7, "ok": "fine"}),
                           log_record("nothing here"))
    wire, walk = both(Signal.LOGS, request)
    assert_same(wire, walk)
    assert wire.raw_current
    assert not walk.raw_current
    assert EMAIL.encode() not in wire.raw
    assert b"[REDACTED:email]" in wire.raw
    assert wire.encoded() is wire.raw  # no second serialisation
    assert wire.masked == {"email": 1, "sensitive_key": 1}


def test_drops_on_the_wire_remove_the_record_and_its_resource_once() -> None:
    config = "masking:\n  detectors:\n    email: {action: drop}\n"
    request = logs_request(log_record(f"mail {EMAIL}"), log_record("kept"), resource={"owner": EMAIL})
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = f"to {EMAIL}"
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "stays"
    wire, walk = both(Signal.LOGS, request, config)
    assert_same(wire, walk)
    assert wire.raw_current
    assert wire.dropped == 3
    bodies = [r.body.string_value for rl in wire.request.resource_logs for sl in rl.scope_logs
              for r in sl.log_records]
    assert bodies == ["stays"]
    assert len(wire.request.resource_logs) == 2  # the second keeps its scope, now empty


def _field(number: int, payload: bytes) -> bytes:
    return wiremask._field(number, payload)


def _logs_with_body(body: bytes, attributes: bytes = b"") -> bytes:
    record = _field(5, body) + attributes
    return _field(1, _field(2, _field(2, record)))


CARD = b"card 4111 1111 1111 1111"


@pytest.mark.parametrize("record", [
    # A value sent as a string and then as an int: protobuf keeps the int (masked by its key),
    # the string stays on the wire.
    _field(6, _field(1, b"password") + _field(2, _field(1, f"mail {EMAIL}".encode()) + b"\x18\x07")),
    # A body sent twice (merged by protobuf: the last string wins), a severity text sent twice.
    _field(5, _field(1, f"mail {EMAIL}".encode())) + _field(5, _field(1, CARD)),
    _field(3, f"WARN {EMAIL}".encode()) + _field(3, CARD),
    # A KeyValue whose key is sent twice.
    _field(6, _field(1, EMAIL.encode()) + _field(1, CARD) + _field(2, _field(1, b"v"))),
])
def test_encodings_that_could_hide_an_old_copy_are_masked_by_the_walk(record: bytes) -> None:
    """Splicing the value protobuf kept would leave the copy it dropped on the wire; these take
    the walk, and the encoding the later stages read is a fresh one."""
    raw = _field(1, _field(2, _field(2, record)))
    batch = stage(CONFIGS["default"], True)(Batch(
        signal=Signal.LOGS, request=ExportLogsServiceRequest.FromString(raw), received_unix_nano=0, raw=raw))
    assert not batch.raw_current
    assert batch.masked
    assert EMAIL.encode() not in batch.encoded()
    assert CARD not in batch.encoded()


def test_a_mark_already_sent_takes_the_walk_which_adds_to_it() -> None:
    request = logs_request(log_record(f"mail {EMAIL}", attributes={"sluice.masked": 2}))
    wire, walk = both(Signal.LOGS, request)
    assert_same(wire, walk)
    assert not wire.raw_current
    marks = [kv for kv in wire.request.resource_logs[0].scope_logs[0].log_records[0].attributes
             if kv.key == "sluice.masked"]
    assert [kv.value.int_value for kv in marks] == [3]


def test_splice_refuses_edits_that_name_no_field() -> None:
    raw = _logs_with_body(_field(1, b"hello"))
    start = raw.index(b"hello")
    with pytest.raises(ValueError):
        wiremask._SPLICE(raw, [(start + 1, start + 3, 0, b"x")])
    with pytest.raises(ValueError):
        wiremask._SPLICE(raw, [(start, start + 5, 0, b"x"), (0, 1, 0, b"")])  # unsorted
    assert wiremask._SPLICE(raw, []) == raw
    spliced = wiremask._SPLICE(raw, [(start, start + 5, 0, b"a longer text")])
    assert ExportLogsServiceRequest.FromString(spliced).resource_logs[0].scope_logs[0].log_records[0] \
        .body.string_value == "a longer text"


def test_per_category_overrides_keep_the_walk() -> None:
    masker = SecretMasker(parse_config("masking:\n  categories:\n    audit: {enabled: false}\n", env={}).masking)
    assert not masker._on_wire
    request = logs_request(log_record(f"mail {EMAIL}", attributes={"log.category": "audit"}),
                           log_record(f"mail {EMAIL}"))
    raw = request.SerializeToString()
    batch = masker(Batch(signal=Signal.LOGS, request=request, received_unix_nano=0, raw=raw))
    bodies = [r.body.string_value for r in batch.request.resource_logs[0].scope_logs[0].log_records]
    assert bodies == [f"mail {EMAIL}", "mail [REDACTED:email]"]
    assert not batch.raw_current


def test_an_encoding_that_would_not_decode_leaves_the_request_to_the_walk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Never a half-decoded request: were a splice ever not valid protobuf, the request is
    decoded again from what arrived and the walk masks it."""
    from collections import Counter

    monkeypatch.setattr(masking, "mask_on_wire",
                        lambda *_args: wiremask.WireMasked(b"\xff\xff\xff", Counter({"email": 1}), 0))
    request = logs_request(log_record(f"mail {EMAIL}"), log_record("kept"))
    wire, walk = both(Signal.LOGS, request)
    assert_same(wire, walk)
    assert not wire.raw_current
    assert wire.masked == {"email": 1}


def test_a_big_request_with_a_secret_here_and_there_takes_the_walk() -> None:
    """Decoding the whole request again costs more than walking a few records."""
    quiet = [log_record(f"order {n} shipped to the warehouse in the north") for n in range(200)]
    sparse = logs_request(log_record(f"mail {EMAIL}"), *quiet)
    dense = logs_request(*[log_record(f"mail {EMAIL}") for _ in range(200)])
    sparse_wire, sparse_walk = both(Signal.LOGS, sparse)
    dense_wire, dense_walk = both(Signal.LOGS, dense)
    assert_same(sparse_wire, sparse_walk)
    assert_same(dense_wire, dense_walk)
    assert len(sparse.SerializeToString()) > masking.WIRE_BYTES_PER_MATCH
    assert not sparse_wire.raw_current
    assert dense_wire.raw_current
    assert sparse_wire.masked == {"email": 1}
