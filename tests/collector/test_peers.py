"""Hand-off between workers (`ingest/peers.py`): a worker whose turn is taken gives an admitted
request to an idle fellow worker over its Unix socket, and answers the client with that
worker's outcome — acknowledged only after its sinks took the records, refused with the same
status it would have given itself. Two receivers in this process stand in for two workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo

from sluice_collector.ingest import peers
from sluice_collector.service.receiver import Receiver
from sluice_collector.sinks.base import Sink
from sluice_collector.testing import InMemorySink, config_from
from tests.collector.test_server import (
    BlockingSink,
    FailingSink,
    OverlapSink,
    call,
    good_request,
)

SETTINGS = {"masking": {"enabled": False}, "query": {"enabled": False},
            "telemetry": {"listen": ""}}


class Workers:
    """Receivers started as workers 0..n-1 of one peer directory; `sinks[i]` is worker i's."""

    def __init__(self, directory: Path, sinks: Sequence[Sink | None],
                 settings: Sequence[dict[str, Any]]) -> None:
        self.receivers: list[Receiver] = []
        for index, sink in enumerate(sinks):
            if sink is None:  # a worker that is not running
                continue
            receiver = Receiver(config_from(settings[index]), sinks=[sink], worker_index=index,
                                peers=(directory, len(sinks)))
            receiver.start()
            self.receivers.append(receiver)

    def stop(self) -> None:
        for receiver in self.receivers:
            receiver.stop(5)


@pytest.fixture
def blocked() -> BlockingSink:
    """Worker 0's sink: holds every batch (so worker 0's turn stays taken) until released."""
    return BlockingSink()


@pytest.fixture
def start_workers(tmp_path: Path, blocked: BlockingSink) -> Iterator[Any]:
    started: list[Workers] = []

    def start(*sinks: Sink | None, settings: dict[str, Any] = SETTINGS,
              **per_worker: dict[str, Any]) -> list[Receiver]:
        """`settings` for every worker; `w1={...}` for worker 1 alone."""
        directory = tmp_path / "peers"
        directory.mkdir()
        started.append(Workers(directory, sinks, [per_worker.get(f"w{index}", settings)
                                                  for index in range(len(sinks))]))
        return started[-1].receivers

    yield start
    blocked.release.set()
    for workers in started:
        workers.stop()


def sample(receiver: Receiver, name: str, **labels: str) -> float:
    return receiver.telemetry.registry.get_sample_value(name, labels) or 0.0


def handoffs(receiver: Receiver, outcome: str) -> float:
    return sample(receiver, "sluice_worker_handoffs_total", outcome=outcome)


def requests(receiver: Receiver, outcome: str) -> float:
    return sample(receiver, "sluice_requests_total", signal="logs", outcome=outcome)


class Clients:
    """Export calls running on threads of their own; `results` holds answers and errors."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.threads: list[threading.Thread] = []

    def send(self, receiver: Receiver, payload: bytes | None = None,
             authorization: str = "") -> None:
        metadata = (("authorization", authorization),) if authorization else None

        def run() -> None:
            try:
                self.results.append(call(receiver, payload or good_request(), metadata=metadata))
            except grpc.RpcError as exc:
                self.results.append(exc)

        self.threads.append(threading.Thread(target=run))
        self.threads[-1].start()

    def all_acknowledged(self, blocked: BlockingSink, count: int) -> bool:
        """Release the held batches; True when all `count` calls were acknowledged."""
        blocked.release.set()
        for thread in self.threads:
            thread.join(10)
        return len(self.results) == count and not any(
            isinstance(r, grpc.RpcError) for r in self.results)


def holding(busy: Receiver, blocked: BlockingSink) -> Clients:
    """Clients with one request sent to `busy`, held in its sink: its turn is now taken."""
    clients = Clients()
    clients.send(busy)
    assert blocked.entered.wait(5)
    return clients


def wait_for(condition: Any, what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"never happened: {what}")


def test_a_busy_worker_hands_a_request_to_an_idle_one(start_workers: Any,
                                                      blocked: BlockingSink) -> None:
    idle = InMemorySink()
    busy, other = start_workers(blocked, idle)
    clients = holding(busy, blocked)
    # Worker 0's turn is taken: this one is processed and acknowledged by worker 1 while the
    # first still waits in worker 0's sink.
    call(busy, good_request())
    assert len(idle.by_category["app"]) == 1
    assert not clients.results
    assert handoffs(busy, "taken") == 1
    assert requests(busy, "OK") == 1
    assert requests(other, "OK") == 0  # counted once, by the worker that answered the client
    assert clients.all_acknowledged(blocked, 1)
    assert len(blocked.by_category["app"]) == 1


def test_the_client_gets_the_peers_refusal_as_its_own(start_workers: Any,
                                                      blocked: BlockingSink) -> None:
    failing = FailingSink()
    busy, _ = start_workers(blocked, failing)
    clients = holding(busy, blocked)
    with pytest.raises(grpc.RpcError) as bad:
        call(busy, b"\xff\xfe garbage \x00\x01")
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid OTLP logs Export request" in (bad.value.details() or "")
    with pytest.raises(grpc.RpcError) as failed:
        call(busy, good_request())
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    trailer = dict(failed.value.trailing_metadata() or ())
    assert RetryInfo.FromString(trailer["google.rpc.retryinfo-bin"]).retry_delay.seconds >= 1
    assert handoffs(busy, "taken") == 2
    assert requests(busy, "INVALID_ARGUMENT") == 1
    assert requests(busy, "UNAVAILABLE") == 1
    assert not failing.by_category, "a refused request was kept"
    assert clients.all_acknowledged(blocked, 1)


def test_when_every_worker_is_busy_the_request_waits_for_its_turn(
        start_workers: Any, blocked: BlockingSink) -> None:
    other = BlockingSink()
    other.release = blocked.release  # one switch for both
    busy, also_busy = start_workers(blocked, other)
    clients = holding(busy, blocked)
    clients.send(also_busy)
    assert other.entered.wait(5)
    clients.send(busy)
    wait_for(lambda: handoffs(busy, "busy") == 1, "worker 1 answered busy")
    assert not clients.results
    assert clients.all_acknowledged(blocked, 3)
    assert len(blocked.by_category["app"]) == 2
    assert len(other.by_category["app"]) == 1
    assert handoffs(busy, "taken") == 0


def test_an_unreachable_worker_is_skipped_and_nothing_is_lost(
        start_workers: Any, blocked: BlockingSink) -> None:
    (busy,) = start_workers(blocked, None)  # worker 1 never started (or is restarting)
    clients = holding(busy, blocked)
    clients.send(busy)
    wait_for(lambda: handoffs(busy, "unreachable") == 1, "worker 1 found unreachable")
    assert clients.all_acknowledged(blocked, 2)
    assert len(blocked.by_category["app"]) == 2


def test_a_stopping_worker_takes_nothing_more(start_workers: Any, blocked: BlockingSink) -> None:
    idle = InMemorySink()
    busy, stopping = start_workers(blocked, idle)
    stopping.ingest.admission.close(0)  # what `stop` does first, before its sinks close
    clients = holding(busy, blocked)
    clients.send(busy)
    wait_for(lambda: handoffs(busy, "busy") == 1, "the stopping worker answered busy")
    assert clients.all_acknowledged(blocked, 2)
    assert not idle.by_category
    assert len(blocked.by_category["app"]) == 2


def test_a_silent_worker_is_given_up_on_and_the_request_runs_here(
        start_workers: Any, blocked: BlockingSink, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that takes the call and never answers (frozen, swapping) holds no request for
    ever: after the offer's timeout the request runs where it arrived."""
    monkeypatch.setattr(peers, "OFFER_TIMEOUT_S", 0.5)
    (busy,) = start_workers(blocked, None)
    frozen = threading.Event()
    server = grpc.server(ThreadPoolExecutor(2))
    never = grpc.unary_unary_rpc_method_handler(lambda body, context: frozen.wait(30) and b"")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("sluice.internal.v1.Peer", {"Export": never}),))
    server.add_insecure_port(f"unix:{peers.socket_path(tmp_path / 'peers', 1)}")
    server.start()
    try:
        clients = holding(busy, blocked)
        clients.send(busy)
        wait_for(lambda: handoffs(busy, "timeout") == 1, "the offer to the frozen worker timed out")
        assert clients.all_acknowledged(blocked, 2)
        assert len(blocked.by_category["app"]) == 2
    finally:
        frozen.set()
        server.stop(0)


def test_the_tenant_goes_with_the_request(start_workers: Any, blocked: BlockingSink) -> None:
    """Auth happens where the request arrived; the worker that stores it files it under the
    tenant the token named."""
    token = "acme-token-0123456789abcdef"
    idle = InMemorySink()
    settings = {**SETTINGS, "auth": {"tenants": {"acme": {"token": token}}}}
    busy, _ = start_workers(blocked, idle, settings=settings)
    clients = Clients()
    clients.send(busy, authorization=f"Bearer {token}")
    assert blocked.entered.wait(5)
    call(busy, good_request(), metadata=(("authorization", f"Bearer {token}"),))
    assert [batch.tenant for batch in idle.batches] == ["acme"]
    assert handoffs(busy, "taken") == 1
    assert clients.all_acknowledged(blocked, 1)


def test_an_idle_worker_takes_as_many_requests_as_it_has_turns(
        start_workers: Any, blocked: BlockingSink) -> None:
    """Worker 1 runs 5 batches at once (`queue.max_processing: 5`): five offers made while its
    sink holds them are all taken, none waits behind a running batch for a thread."""
    idle = OverlapSink()
    idle.release = blocked.release
    busy, _ = start_workers(blocked, idle,
                            w1={**SETTINGS, "queue": {"max_processing": 5}})
    clients = holding(busy, blocked)
    for _ in range(5):
        clients.send(busy)
    assert idle.wait_inside(5, 10), f"only {idle.inside} of 5 offers were taken at once"
    assert clients.all_acknowledged(blocked, 6)
    assert handoffs(busy, "taken") == 5
