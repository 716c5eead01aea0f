"""Shared pieces of the reliability tests and of `bench/soak.py`.

- `make_request(seqs)`: one OTLP logs Export request (encoded bytes) whose records each carry a
  unique integer attribute `seq`, so "sent == on disk, 0 duplicates" can be checked exactly.
- `Sender`: what an official OTLP/gRPC exporter does on the wire — raw bytes on
  `/opentelemetry.proto.collector.logs.v1.LogsService/Export` — plus its retry policy: retry on
  UNAVAILABLE (after the `google.rpc.retryinfo-bin` delay when there is one).
- `scan_logs(dir)`: every line of every active, rotated and `.gz` file, counted by `seq`, with
  lines that are not whole JSON objects reported separately.
- `rss_kib(pid)`: VmRSS of a process from `/proc/<pid>/status`.
- `LoadRun`: several sender threads at a target aggregate rate, recording which batches were
  acknowledged and which had an attempt with an unknown outcome (a possible duplicate).
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
RETRY_KEY = "google.rpc.retryinfo-bin"
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 300),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def make_request(seqs: Iterable[int], *, service: str = "reliability", category: str | None = None,
                 trace_id: bytes = b"\x01" * 16, span_id: bytes = b"\x02" * 8,
                 pad: int = 0) -> bytes:
    """An encoded ExportLogsServiceRequest, one record per seq (attribute `seq`)."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    sl = rl.scope_logs.add()
    sl.scope.name = "reliability.load"
    filler = "x" * pad
    for seq in seqs:
        rec = sl.log_records.add()
        rec.time_unix_nano = 1_763_900_000_000_000_000 + seq
        rec.severity_number = 9  # type: ignore[assignment]
        rec.severity_text = "INFO"
        rec.trace_id = trace_id
        rec.span_id = span_id
        rec.body.string_value = f"record {seq} of the reliability load {filler}"
        rec.attributes.append(KeyValue(key="seq", value=AnyValue(int_value=seq)))
        rec.attributes.append(KeyValue(key="worker", value=AnyValue(string_value="w")))
        if category:
            rec.attributes.append(KeyValue(key="log.category", value=AnyValue(string_value=category)))
    return req.SerializeToString()


def retry_delay_s(exc: grpc.RpcError) -> float | None:
    """The RetryInfo delay of a failed call, or None when it carries none."""
    for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == RETRY_KEY:
            info = RetryInfo.FromString(value)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


@dataclass
class Outcome:
    code: grpc.StatusCode
    seconds: float
    details: str = ""
    retry_delay: float | None = None
    response: bytes = b""


class Sender:
    """One gRPC channel sending raw Export bytes, like an official exporter."""

    def __init__(self, endpoint: str, *, compression: grpc.Compression | None = None) -> None:
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS, compression=compression)
        self.export = self.channel.unary_unary(LOGS_EXPORT)

    def call(self, data: bytes, timeout_s: float = 10.0, *, wait_for_ready: bool = False) -> Outcome:
        started = time.perf_counter()
        try:
            response = self.export(data, timeout=timeout_s, wait_for_ready=wait_for_ready)
        except grpc.RpcError as exc:
            return Outcome(exc.code(), time.perf_counter() - started, exc.details() or "",  # type: ignore[attr-defined]
                           retry_delay_s(exc))
        return Outcome(grpc.StatusCode.OK, time.perf_counter() - started, response=response)

    def close(self) -> None:
        self.channel.close()


@dataclass
class Scan:
    counts: Counter[int] = field(default_factory=Counter)
    bad_lines: list[tuple[str, int, bytes]] = field(default_factory=list)  # (file, line no, head)
    files: list[str] = field(default_factory=list)
    unterminated: list[str] = field(default_factory=list)  # files whose last line lacks "\n"
    categories: Counter[str] = field(default_factory=Counter)
    torn_files: list[str] = field(default_factory=list)  # <file>.torn: fragments a crash cut

    @property
    def duplicates(self) -> dict[int, int]:
        return {s: n for s, n in self.counts.items() if n > 1}


def scan_logs(directory: Path) -> Scan:
    """Count every record by `seq` over active, rotated and gzipped files (dot-dirs skipped).
    `<file>.torn` holds fragments a crash cut short, moved aside on purpose: listed in
    `torn_files`, never counted as records or bad lines."""
    out = Scan()
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(".tmp") or ".gz.tmp" in name:
                continue
            path = Path(dirpath, name)
            if name.endswith(".torn"):
                out.torn_files.append(str(path.relative_to(directory)))
                continue
            rel = str(path.relative_to(directory))
            raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
            out.files.append(rel)
            if raw and not raw.endswith(b"\n"):
                out.unterminated.append(rel)
            for no, line in enumerate(raw.split(b"\n"), 1):
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    out.bad_lines.append((rel, no, line[:80]))
                    continue
                seq = (obj.get("attributes") or {}).get("seq")
                out.categories[str(obj.get("category"))] += 1
                if seq is not None:
                    out.counts[int(seq)] += 1
    return out


@dataclass
class LoadStats:
    acked: set[int] = field(default_factory=set)          # seqs of acknowledged batches
    uncertain: set[int] = field(default_factory=set)      # seqs of batches with an unknown-outcome attempt
    refused: set[int] = field(default_factory=set)        # seqs of batches refused at least once
    sent_batches: int = 0
    attempts: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    with_retry_info: int = 0
    unavailable: int = 0
    latencies: list[float] = field(default_factory=list)
    gave_up: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


# Codes after which the batch may or may not be on disk (the receiver died or the call timed out).
UNKNOWN_OUTCOME = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                   grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


class LoadRun:
    """`threads` senders, each sending batches of `batch` records at `rate`/threads records/s.

    Every batch is retried until acknowledged (or `deadline_s` after the run ends): after the
    RetryInfo delay when the answer carried one (`honour_retry_info`), else after `backoff_s`.
    UNAVAILABLE without a RetryInfo trailer is what a dead or restarting receiver gives
    (connection refused/reset): the batch's outcome is then unknown if the call may have
    reached the receiver, so it is counted as possibly duplicated.
    """

    def __init__(self, endpoint: str, *, threads: int, rate: float, batch: int, duration_s: float,
                 honour_retry_info: bool = True, backoff_s: float = 0.05, timeout_s: float = 5.0,
                 category: str | None = None, pad: int = 0, seq_base: int = 0,
                 give_up_after_s: float = 60.0,
                 make: Callable[..., bytes] = make_request) -> None:
        self.endpoint = endpoint
        self.threads = threads
        self.rate = rate
        self.batch = batch
        self.duration_s = duration_s
        self.honour = honour_retry_info
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.category = category
        self.pad = pad
        self.seq_base = seq_base
        self.give_up_after_s = give_up_after_s
        self.make = make
        self.stats = LoadStats()
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0
        self.finished_at = 0.0

    def start(self) -> LoadRun:
        self.started_at = time.monotonic()
        for i in range(self.threads):
            t = threading.Thread(target=self._worker, args=(i,), daemon=True, name=f"load-{i}")
            t.start()
            self._threads.append(t)
        return self

    def join(self, timeout_s: float = 120.0) -> LoadStats:
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.finished_at = time.monotonic()
        return self.stats

    def _worker(self, index: int) -> None:
        sender = Sender(self.endpoint)
        per_thread_rate = self.rate / self.threads
        interval = self.batch / per_thread_rate
        next_at = time.monotonic() + interval * index / self.threads
        n = 0
        stats = self.stats
        try:
            while not self.stop_event.is_set() and time.monotonic() - self.started_at < self.duration_s:
                now = time.monotonic()
                if next_at > now:
                    time.sleep(next_at - now)
                next_at += interval
                first = self.seq_base + (index * 10_000_000) + n * self.batch
                n += 1
                seqs = range(first, first + self.batch)
                data = self.make(seqs, category=self.category, pad=self.pad)
                self._deliver(sender, seqs, data)
        finally:
            sender.close()
        del stats

    def _deliver(self, sender: Sender, seqs: range, data: bytes) -> None:
        stats = self.stats
        with stats.lock:
            stats.sent_batches += 1
        give_up_at = time.monotonic() + self.give_up_after_s
        uncertain = refused = False
        while True:
            out = sender.call(data, self.timeout_s)
            with stats.lock:
                stats.attempts += 1
                stats.codes[out.code.name] += 1
                stats.latencies.append(out.seconds)
                if out.code == grpc.StatusCode.UNAVAILABLE:
                    stats.unavailable += 1
                    if out.retry_delay is not None:
                        stats.with_retry_info += 1
            if out.code == grpc.StatusCode.OK:
                with stats.lock:
                    stats.acked.update(seqs)
                    if uncertain:
                        stats.uncertain.update(seqs)
                    if refused:
                        stats.refused.update(seqs)
                return
            if out.code in UNKNOWN_OUTCOME or (
                out.code == grpc.StatusCode.UNAVAILABLE and out.retry_delay is None
            ):
                uncertain = True
            else:
                refused = True
            if time.monotonic() > give_up_at:
                with stats.lock:
                    stats.gave_up.append((seqs[0], out.code.name))
                return
            if out.retry_delay is not None and self.honour:
                time.sleep(out.retry_delay)
            else:
                time.sleep(self.backoff_s)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def describe(name: str, measured: Any, pass_figure: str, ok: bool) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {name}: measured {measured}; pass figure {pass_figure}"
