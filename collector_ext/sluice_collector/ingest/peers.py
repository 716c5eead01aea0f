"""Hand-off between `--workers` workers: one connection's requests spread over every core.

SO_REUSEPORT spreads *connections* over the workers, not requests. An upstream Collector (the
documented topology) sends everything over one connection, so one worker did all the work while
the others idled. So each worker also listens on a private Unix socket, `<dir>/<index>.sock` in
a directory only the receiver's user can enter (the supervisor makes it), and a worker whose
turn is taken (`IngestCore`) offers an admitted request's raw bytes to the others. An idle one
takes it whole — decode, stages, its own sinks, under its own admission bound — and answers
with the outcome; the sender answers its client only then, as if it had done the work itself,
so nothing is acknowledged before some worker's sinks returned.

A peer never waits and never passes a request on: busy (its turn taken), over its queue bound
or stopping, it answers `busy` at once, and the sender tries the next one or waits for its own
turn. A peer it cannot reach (not started yet, restarting), or that has not answered within
`OFFER_TIMEOUT_S` (frozen, swapping), is left alone for `DOWN_FOR_S` and the request is
processed locally. Should that peer have stored the request after all, it is stored twice
(at-least-once, like any lost acknowledgement), never not at all.

The wire is gRPC with raw bytes: the request body as sent by the client, with its signal,
encoding and tenant (authenticated by the sender) in the call's metadata; the answer is one JSON
object: ``{"outcome": "ok", "rejected", "message", "dropped", "routed"}``, ``{"outcome":
"busy"}`` or ``{"outcome": "error", "kind", "message", "retry_after_s"}``, the kind being the
name of the typed error (`errors.py`) the sender raises again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import orjson
from prometheus_client import Counter

from sluice_collector.batch import Signal
from sluice_collector.errors import (
    DecodeError,
    DiskFullError,
    InternalError,
    Overloaded,
    RequestTooLarge,
    Retryable,
    SinkError,
    SluiceReceiverError,
)
from sluice_collector.ingest.decode import Encoding

log = logging.getLogger("sluice.receiver")

METHOD = "/sluice.internal.v1.Peer/Export"
DOWN_FOR_S = 1.0
# Longer than any batch takes on a healthy worker (a 64 MiB request: under a second); a peer
# still silent by then is stuck, and the request must not wait on it for ever.
OFFER_TIMEOUT_S = 30.0
# Peer calls carry whole requests; the sender already checked them against max_request_bytes.
_UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
# A restarted worker is offered requests again within about a second, not after gRPC's default
# reconnect backoff (up to two minutes).
_CHANNEL = [*_UNLIMITED, ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
_RETRYABLE: dict[str, type[Retryable]] = {
    cls.__name__: cls for cls in (Retryable, Overloaded, SinkError, DiskFullError, InternalError)
}
_PLAIN: dict[str, type[SluiceReceiverError]] = {
    cls.__name__: cls for cls in (DecodeError, RequestTooLarge)
}


def socket_path(directory: Path, index: int) -> Path:
    return directory / f"{index}.sock"


BUSY = orjson.dumps({"outcome": "busy"})


def encode_outcome(result: Any) -> bytes:
    """The answer to a peer: an `ExportResult`, None (busy) or a typed error."""
    if result is None:
        return BUSY
    if isinstance(result, SluiceReceiverError):
        return orjson.dumps({"outcome": "error", "kind": type(result).__name__,
                             "message": str(result),
                             "retry_after_s": getattr(result, "retry_after_s", 1.0)})
    return orjson.dumps({"outcome": "ok", "rejected": result.rejected, "message": result.message,
                         "dropped": result.dropped, "routed": result.routed})


def decode_outcome(data: bytes) -> dict[str, Any]:
    """The answer of a peer that took the request (not `BUSY`) as the fields of an
    `ExportResult`; raises the typed error it reported."""
    answer = orjson.loads(data)
    if answer["outcome"] == "ok":
        return {key: answer[key] for key in ("rejected", "message", "dropped", "routed")}
    kind, message = answer["kind"], answer["message"]
    if kind in _RETRYABLE:
        raise _RETRYABLE[kind](message, float(answer["retry_after_s"]))
    raise _PLAIN.get(kind, InternalError)(message)


# What a peer server runs: (signal, body, encoding, tenant) → ExportResult, or None when busy.
TakeOver = Callable[[Signal, bytes, Encoding, str], Any]


class PeerServer:
    """This worker's side: takes requests other workers offer, when it is idle."""

    def __init__(self, path: Path, take_over: TakeOver, turns: int) -> None:
        self.path = path
        self._take_over = take_over
        # A thread for each turn (`queue.max_processing`), plus two to answer `busy` at once
        # while every turn is taken: an offer must never queue behind a running batch.
        self._threads = turns + 2
        self._server: grpc.Server | None = None

    def start(self) -> None:
        self.path.unlink(missing_ok=True)  # left by a worker that died
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="sluice-peer"),
            options=_UNLIMITED)
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("sluice.internal.v1.Peer", {"Export": handler}),))
        if not server.add_insecure_port(f"unix:{self.path}"):
            raise OSError(f"cannot listen on {self.path} for the other workers")
        server.start()
        self._server = server

    def stop(self, grace_s: float) -> None:
        if self._server is not None:
            self._server.stop(grace_s).wait(grace_s + 1)
            self._server = None
        self.path.unlink(missing_ok=True)

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        meta = {key: value.decode() if isinstance(value, bytes) else value
                for key, value in context.invocation_metadata()}
        try:
            result = self._take_over(Signal(meta["sluice-signal"]), body,
                                     Encoding(meta["sluice-encoding"]),
                                     meta.get("sluice-tenant-bin", ""))
        except SluiceReceiverError as exc:
            return encode_outcome(exc)
        return encode_outcome(result)


class Peers:
    """This worker's view of the others: offers a request to each idle one in turn."""

    def __init__(self, paths: Sequence[Path], handoffs: Counter) -> None:
        self._channels = [grpc.insecure_channel(f"unix:{path}", options=_CHANNEL)
                          for path in paths]
        self._calls = [channel.unary_unary(METHOD, None, None) for channel in self._channels]
        self._down_until = [0.0] * len(paths)
        self._next = 0
        self._lock = threading.Lock()
        self._handoffs = handoffs

    def offer(self, signal: Signal, body: bytes, encoding: Encoding,
              tenant: str) -> dict[str, Any] | None:
        """The outcome of a peer that took the request (the fields of an `ExportResult`), or
        None when none would; raises the typed error the peer that took it reported."""
        metadata: tuple[tuple[str, str | bytes], ...] = (
            ("sluice-signal", signal.value), ("sluice-encoding", encoding.value))
        if tenant:
            metadata += (("sluice-tenant-bin", tenant.encode()),)
        with self._lock:  # start with a different peer each time: spread, not pile up
            start = self._next
            self._next = (start + 1) % max(1, len(self._calls))
        for step in range(len(self._calls)):
            index = (start + step) % len(self._calls)
            if self._down_until[index] > time.monotonic():
                continue
            try:
                answer = self._calls[index](body, metadata=metadata, timeout=OFFER_TIMEOUT_S)
            except grpc.RpcError as exc:
                self._down_until[index] = time.monotonic() + DOWN_FOR_S
                silent = exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED
                self._handoffs.labels("timeout" if silent else "unreachable").inc()
                log.debug("worker peer %d unreachable: %s", index, exc)
                continue
            if answer == BUSY:
                self._handoffs.labels("busy").inc()
                continue
            self._handoffs.labels("taken").inc()
            return decode_outcome(answer)
        return None

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
