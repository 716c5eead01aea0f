"""`sluice audit verify` against files written by a real `sluice receiver run` (OTLP over gRPC,
restarts, `--workers 2`, tenants, SIGKILL), with the real CLI in a subprocess; and the running
receiver's own periodic check (its /metrics and its `system` records)."""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from tests.otlp_builders import log_record, logs_request
from tests.receiver_process import ReceiverProcess

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TOKEN = "acme-token-0123456789abcdef"


T = TypeVar("T")


def send_audit(endpoint: str, *bodies: str, token: str | None = None, service: str = "svc") -> None:
    payload = logs_request(
        *(log_record(b, attributes={"log.category": "audit", "actor": "u1"}) for b in bodies),
        service=service,
    ).SerializeToString()
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(endpoint) as channel:
        channel.unary_unary(LOGS_EXPORT).with_call(payload, timeout=10, metadata=metadata)


def verify(logs: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice_collector", "audit", "verify", str(logs), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )


def run_receiver(workdir: Path, settings: dict[str, Any], *, extra_args: list[str] | None = None,
                 send: list[tuple[str, ...]], token: str | None = None) -> ReceiverProcess:
    proc = ReceiverProcess(workdir, settings, extra_args=extra_args).start()
    try:
        for bodies in send:
            send_audit(proc.endpoint, *bodies, token=token)
    finally:
        assert proc.stop() == 0
    return proc


def test_chain_survives_restarts_and_workers_and_verify_finds_an_edit(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"files": {"rotation": {"max_bytes": "2KiB", "compress": True}}}
    run_receiver(tmp_path, settings, send=[("a1", "a2"), ("a3",), ("a4", "a5", "a6")])
    proc = run_receiver(tmp_path, settings, extra_args=["--workers", "2"],
                        send=[(f"b{i}",) for i in range(8)])
    logs = proc.logs_dir
    assert len(list(logs.glob("audit.log.*.gz"))) >= 1  # it did rotate and compress
    ok = verify(logs)
    assert ok.returncode == 0, ok.stderr
    assert "intact: 14 audit records in 1 file set(s)" in ok.stdout
    active = logs / "audit.log"
    active.write_bytes(active.read_bytes().replace(b'"actor":"u1"', b'"actor":"u9"', 1))
    broken = verify(logs)
    assert broken.returncode == 1
    assert f"BROKEN {active}:1: audit.hash does not match" in broken.stderr


def test_keyed_tenant_chain_needs_the_key_to_verify(tmp_path: Path) -> None:
    key_file = tmp_path / "chain.key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    settings = {"auth": {"tenants": {"acme": {"token": TOKEN}}},
                "files": {"audit_chain": {"key_file": str(key_file)}}}
    proc = run_receiver(tmp_path, settings, send=[("k1", "k2")], token=TOKEN)
    logs = proc.logs_dir
    assert (logs / "tenants" / "acme" / "audit.log").exists()
    ok = verify(logs, "--key-file", str(key_file))
    assert ok.returncode == 0, ok.stderr
    assert "intact: 2 audit records in 1 file set(s) (keyed)" in ok.stdout
    keyed_env = verify(logs, "--key-env", "CHAIN_KEY", env={"CHAIN_KEY": key_file.read_text().strip()})
    assert keyed_env.returncode == 0, keyed_env.stderr
    unkeyed = verify(logs)
    assert unkeyed.returncode == 1
    assert "pass --key-env or --key-file" in unkeyed.stderr


def test_verify_refuses_a_directory_without_audit_files(tmp_path: Path) -> None:
    """Deleting every audit file must not read as "intact"."""
    result = verify(tmp_path)
    assert result.returncode == 1
    assert "no audit files" in result.stderr


# -- issue 13, items 7 and 9: sets verify cannot miss, tails that cannot be cut ----------------

def edit_lines(path: Path, edit: Callable[[list[bytes]], list[bytes]]) -> None:
    packed = path.name.endswith(".gz")
    data = gzip.decompress(path.read_bytes()) if packed else path.read_bytes()
    out = b"".join(edit(data.splitlines(keepends=True)))
    path.write_bytes(gzip.compress(out) if packed else out)


def test_verify_reports_a_tampered_templated_set(tmp_path: Path) -> None:
    """With `categories.audit.path` templated, one junk first line used to make `verify` skip
    the set and call the rest intact."""
    settings = {"categories": {"audit": {"path": "audit/{service.name}.log"}}}
    proc = ReceiverProcess(tmp_path, settings).start()
    try:
        send_audit(proc.endpoint, "s1", "s2", service="shop")
        send_audit(proc.endpoint, "p1", "p2", service="pay")
    finally:
        assert proc.stop() == 0
    logs = proc.logs_dir
    ok = verify(logs)
    assert ok.returncode == 0, ok.stderr
    assert "intact: 4 audit records in 2 file set(s)" in ok.stdout
    shop = logs / "audit" / "shop.log"
    edit_lines(shop, lambda ls: [b'{"body":"nothing to see"}\n', *ls[1:]])
    broken = verify(logs)
    assert broken.returncode == 1, broken.stdout
    assert f"BROKEN {shop}:1: not a chained audit record" in broken.stderr
    assert "(set audit/shop.log)" in broken.stderr
    assert f"ok {logs / 'audit' / 'pay.log'}: 2 records" in broken.stdout


def test_verify_reports_swapped_tenant_sets(tmp_path: Path) -> None:
    tokens = {"acme": TOKEN, "globex": "globex-token-0123456789abcdef"}
    settings = {"auth": {"tenants": {t: {"token": tok} for t, tok in tokens.items()}}}
    proc = ReceiverProcess(tmp_path, settings).start()
    try:
        send_audit(proc.endpoint, "a1", "a2", token=tokens["acme"])
        send_audit(proc.endpoint, "g1", "g2", token=tokens["globex"])
    finally:
        assert proc.stop() == 0
    tenants = proc.logs_dir / "tenants"
    assert verify(proc.logs_dir).returncode == 0
    (tenants / "acme").rename(tmp_path / "swap")
    (tenants / "globex").rename(tenants / "acme")
    (tmp_path / "swap").rename(tenants / "globex")
    broken = verify(proc.logs_dir)
    assert broken.returncode == 1
    for tenant in tokens:
        assert f"BROKEN {tenants / tenant / 'audit.log'}:1: audit.prev_hash is not the start of this " \
               f"set's chain" in broken.stderr
        assert f"(set tenants/{tenant}/audit.log)" in broken.stderr


def test_verify_reports_an_edited_gz_beside_an_intact_plain_copy(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"files": {"rotation": {"max_bytes": "2KiB", "compress": True}}}
    proc = ReceiverProcess(tmp_path, settings).start()
    try:
        for i in range(6):
            send_audit(proc.endpoint, f"r{i}a", f"r{i}b")
    finally:
        assert proc.stop() == 0
    logs = proc.logs_dir
    packed = sorted(logs.glob("audit.log.*.gz"))[0]
    plain = packed.with_name(packed.name.removesuffix(".gz"))
    plain.write_bytes(gzip.decompress(packed.read_bytes()))  # an intact plain copy
    assert verify(logs).returncode == 0
    edit_lines(packed, lambda ls: [ls[0].replace(b'"actor":"u1"', b'"actor":"u9"'), *ls[1:]])
    broken = verify(logs)
    assert broken.returncode == 1
    assert f"BROKEN {packed}:1: differs from the plain copy {plain.name}" in broken.stderr


def test_verify_reports_the_newest_records_cut_off_with_the_receiver_stopped(tmp_path: Path) -> None:
    proc = run_receiver(tmp_path, {}, send=[("a1", "a2"), ("a3",), ("a4", "a5")])
    active = proc.logs_dir / "audit.log"
    edit_lines(active, lambda ls: ls[:-2])
    broken = verify(proc.logs_dir)
    assert broken.returncode == 1
    assert f"BROKEN {active}:4: the newest records were removed: the head file .audit.log.audit-head " \
           "says record #5" in broken.stderr


def test_cutting_the_newest_records_under_a_running_receiver_is_reported(tmp_path: Path) -> None:
    """The gap docs/security.md used to document: the receiver chained on from a cut tail."""
    proc = ReceiverProcess(tmp_path, {}).start()
    active = proc.logs_dir / "audit.log"
    try:
        send_audit(proc.endpoint, "a1", "a2")
        send_audit(proc.endpoint, "a3", "a4")
        edit_lines(active, lambda ls: ls[:2])
        running = verify(proc.logs_dir)
        assert running.returncode == 1
        assert f"BROKEN {active}:3: the newest records were removed" in running.stderr
        send_audit(proc.endpoint, "a5")
    finally:
        assert proc.stop() == 0
    stopped = verify(proc.logs_dir)
    assert stopped.returncode == 1
    assert f"BROKEN {active}:3: the receiver found the chain cut here: the set no longer holds its " \
           "head record #4" in stopped.stderr
    assert "files: audit chain of" in proc.stderr
    assert "writing a gap record" in proc.stderr


def wait_until(probe: Callable[[], T | None], what: str, timeout_s: float = 60.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class AuditLoad:
    """A thread sending audit batches of 500 records (~1 MiB, one write each) until stopped;
    `acked` counts the records acknowledged. With `retry`, a failed call is tried again (a
    worker that died), else the thread ends at the first failure (the receiver is gone)."""

    def __init__(self, endpoint: str, tag: str, *, retry: bool = False) -> None:
        self.acked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(endpoint, tag, retry), daemon=True)
        self._thread.start()

    def _run(self, endpoint: str, tag: str, retry: bool) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                send_audit(endpoint, *(f"{tag}-{n}-{i}-{'x' * 2000}" for i in range(500)))
            except grpc.RpcError:
                if not retry:
                    return
                time.sleep(0.05)
                continue
            self.acked += 500
            n += 1

    def wait_for(self, records: int) -> None:
        wait_until(lambda: self.acked >= records or None, f"{records} records acknowledged")

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(30)
        return self.acked


def kill_under_load(workdir: Path, settings: dict[str, Any], tag: str, batches: int) -> int:
    """Start a receiver, keep it busy with audit batches and SIGKILL it once `batches` were
    acknowledged; returns how many records were."""
    proc = ReceiverProcess(workdir, settings).start()
    load = AuditLoad(proc.endpoint, tag)
    try:
        load.wait_for(batches * 500)
    finally:
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGKILL)  # while the next batch is on its way
        proc.proc.wait(10)
    return load.stop()


def test_sigkill_of_a_real_receiver_mid_write_never_reads_as_tampering(tmp_path: Path) -> None:
    """Big audit batches keep a receiver busy writing; it is SIGKILLed three times. Wherever
    each kill lands — inside a write, between the write and the head update, between batches —
    `verify` passes with the receiver down and after the restart. (Where a kill lands is not
    controlled here; tests/collector/test_auditchain.py kills a real process at chosen bytes.)"""
    settings: dict[str, Any] = {"files": {"rotation": {"max_bytes": "4MiB", "compress": True}}}
    acked = 0
    for round_ in range(3):
        acked += kill_under_load(tmp_path, settings, f"round{round_}", 3)
        down = verify(tmp_path / "logs")
        assert down.returncode == 0, down.stderr
    proc = run_receiver(tmp_path, settings, send=[("after the crashes",)])
    result = verify(proc.logs_dir)
    assert result.returncode == 0, result.stderr
    total = re.search(r"intact: (\d+) audit records", result.stdout)
    assert total is not None
    assert int(total.group(1)) >= acked + 1


def restarted_and_ready(supervisor: int, before: list[str]) -> bool | None:
    """A new worker is there and has installed its SIGTERM handler (it does once it is ready),
    so stopping the supervisor now stops it cleanly."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    for pid in set(children) - set(before):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE).group(1), 16)  # type: ignore[union-attr]
        if caught & (1 << (signal.SIGTERM - 1)):
            return True
    return None


def test_a_worker_killed_mid_write_leaves_a_chain_the_other_workers_continue(tmp_path: Path) -> None:
    """`--workers 2` share one audit set under the flock. One worker is SIGKILLed while both
    are busy (the supervisor restarts it); the survivor's next write continues from the head
    file and acknowledges whatever the dead one tore. (Where the kill lands is not controlled.)"""
    settings: dict[str, Any] = {"files": {"rotation": {"max_bytes": "4MiB", "compress": True}}}
    proc = ReceiverProcess(tmp_path, settings, extra_args=["--workers", "2"]).start()
    assert proc.proc is not None
    loads = [AuditLoad(proc.endpoint, f"sender{i}", retry=True) for i in range(2)]
    try:
        loads[0].wait_for(1500)
        children = Path(f"/proc/{proc.proc.pid}/task/{proc.proc.pid}/children").read_text().split()
        assert len(children) == 2, children
        os.kill(int(children[0]), signal.SIGKILL)
        before = sum(load.acked for load in loads)
        wait_until(lambda: sum(load.acked for load in loads) >= before + 3000 or None,
                   "six more batches after the kill")
        wait_until(lambda: restarted_and_ready(proc.proc.pid, children),  # type: ignore[union-attr]
                   "the killed worker restarted and ready")
    finally:
        acked = sum(load.stop() for load in loads)
        assert proc.stop() == 0
    assert "exited with -9; restarting it" in proc.stderr
    result = verify(proc.logs_dir)
    assert result.returncode == 0, result.stderr
    total = re.search(r"intact: (\d+) audit records", result.stdout)
    assert total is not None
    assert int(total.group(1)) >= acked


# -- the running receiver's own check --------------------------------------------------------------

def metric(proc: ReceiverProcess, name: str, labels: str = "") -> float | None:
    with urllib.request.urlopen(f"{proc.status_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_the_running_receiver_reports_a_broken_chain_once_in_its_stream_and_on_its_metrics(
    tmp_path: Path,
) -> None:
    settings = {"files": {"audit_chain": {"verify_interval_s": 1}}}
    proc = ReceiverProcess(tmp_path, settings).start()
    intact = 'sluice_audit_chain_intact{set="audit.log"}'
    try:
        send_audit(proc.endpoint, "a1", "a2")
        assert wait_until(lambda: metric(proc, "sluice_audit_chain_intact", '{set="audit.log"}'),
                          f"{intact} 1") == 1.0
        active = proc.logs_dir / "audit.log"
        edit_lines(active, lambda ls: [ls[0].replace(b'"actor":"u1"', b'"actor":"u9"'), *ls[1:]])
        wait_until(lambda: metric(proc, "sluice_audit_chain_intact", '{set="audit.log"}') == 0.0 or None,
                   f"{intact} 0")
        # Three more runs: the break is still there, and still reported only once.
        first = metric(proc, "sluice_audit_chain_last_verified_timestamp_seconds")
        assert first is not None
        wait_until(lambda: (metric(proc, "sluice_audit_chain_last_verified_timestamp_seconds") or 0)
                   >= first + 3 or None, "three more checks")
    finally:
        assert proc.stop() == 0
    events = [r for r in proc.read("system") if r.get("event_name") == "audit.chain.broken"]
    assert len(events) == 1, events
    attributes = events[0]["attributes"]
    assert attributes["audit.chain.set"] == "audit.log"
    assert attributes["audit.chain.file"] == str(active)
    assert attributes["audit.chain.line"] == 1
    assert attributes["audit.chain.reason"].startswith("audit.hash does not match")
    assert events[0]["severity"] == "ERROR"
    assert "audit chain of audit.log is broken" in proc.stderr
