"""The audit hash chain: written by the real file sink across rotation, gzip, restarts, tenants
and shared (`--workers`) writers; every kind of tampering found by `verify`, untouched files
never flagged, and keyed chains that cannot be re-hashed without the key.

Real files in tmp_path; the clock is injected to cross midnight without sleeping.
"""

from __future__ import annotations

import calendar
import gzip
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import ConfigError
from sluice_collector.service.config import parse_config
from sluice_collector.sinks.files.auditchain import (
    GENESIS,
    ChainHasher,
    ChainReport,
    chain_files,
    seal_lines,
    verify_directory,
)
from sluice_collector.sinks.files.config import AuditChainConfig, FilePolicy, FilesConfig, RotationConfig
from sluice_collector.sinks.files.sink import RotatingFileSink
from sluice_collector.telemetry import ReceiverTelemetry
from tests.otlp_builders import log_record, logs_request

DAY1 = calendar.timegm((2026, 11, 23, 12, 0, 0))
DAY = 86400.0
ROTATION = RotationConfig(max_bytes=10**9, interval="daily", compress=True)
KEY = b"k" * 32


class Clock:
    def __init__(self, now: float = DAY1) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_sink(logs: Path, clock: Clock, *, key: bytes | None = None, shared: bool = False,
              rotation: RotationConfig = ROTATION, enabled: bool = True) -> RotatingFileSink:
    config = FilesConfig(directory=logs, rotation=rotation,
                         audit_chain=AuditChainConfig(enabled=enabled, key=key))
    cats = {name: FilePolicy(name=name, rotation=rotation) for name in ("app", "audit")}
    sink = RotatingFileSink(replace(config, categories=cats), ReceiverTelemetry(), clock=clock,
                            disk_usage=lambda _p: (10, 100), shared=shared)
    sink.start(background=False)
    return sink


def stamp(logs: Path, when: float) -> None:
    """Give every file the mtime a real clock at `when` would have left: the sink's clock is
    injected, but on a restart it reads the period of a file it finds from the file's mtime."""
    for path in logs.rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def audit_batch(*bodies: str, tenant: str = "") -> Batch:
    request = logs_request(*(log_record(b, attributes={"actor": "u1"}) for b in bodies))
    batch = Batch(Signal.LOGS, request, time.time_ns(), tenant=tenant)
    batch.routes = {"audit": batch.records()}
    return batch


def write_history(logs: Path, *, key: bytes | None = None) -> None:
    """Three days of audit records: two rotations (gzipped) and a restart between them."""
    clock = Clock()
    sink = make_sink(logs, clock, key=key)
    sink.consume(audit_batch("r1", "r2"))
    sink.consume(audit_batch("r3"))
    clock.now += DAY
    sink.consume(audit_batch("r4", "r5"))
    sink.force_flush(10)
    sink.shutdown()
    stamp(logs, clock.now)
    clock.now += DAY  # restart on the next day: the chain resumes from the gzipped files
    sink = make_sink(logs, clock, key=key)
    sink.consume(audit_batch("r6"))
    sink.consume(audit_batch("r7", "r8", "r9"))
    sink.force_flush(10)
    sink.shutdown()


def only(reports: list[ChainReport]) -> ChainReport:
    assert len(reports) == 1
    return reports[0]


def test_untouched_chain_across_rotation_gzip_and_restart_verifies(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_history(logs)
    files = chain_files(logs / "audit.log")
    assert [f.name for f in files] == [
        "audit.log.2026-11-23.1.gz", "audit.log.2026-11-24.2.gz", "audit.log"]
    report = only(verify_directory(logs, ChainHasher()))
    assert report.broken is None
    assert report.records == 9
    first = json.loads(gzip.decompress(files[0].read_bytes()).splitlines()[0])
    assert first["audit.prev_hash"] == GENESIS
    assert first["body"] == "r1"
    last = json.loads((logs / "audit.log").read_bytes().splitlines()[-1])
    assert last["audit.hash"] == report.head


def test_other_categories_are_not_chained(tmp_path: Path) -> None:
    sink = make_sink(tmp_path / "logs", Clock())
    batch = audit_batch("x")
    batch.routes = {"app": batch.records()}
    sink.consume(batch)
    sink.shutdown()
    assert "audit.hash" not in json.loads((tmp_path / "logs" / "app.log").read_text())


def test_audit_chain_disabled_writes_plain_lines(tmp_path: Path) -> None:
    sink = make_sink(tmp_path / "logs", Clock(), enabled=False)
    sink.consume(audit_batch("x"))
    sink.shutdown()
    assert "audit.hash" not in json.loads((tmp_path / "logs" / "audit.log").read_text())


# -- tampering ------------------------------------------------------------------------------

def _edit_lines(path: Path, edit: Callable[[list[bytes]], list[bytes]]) -> None:
    gz = path.name.endswith(".gz")
    data = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    lines = edit(data.splitlines(keepends=True))
    out = b"".join(lines)
    path.write_bytes(gzip.compress(out) if gz else out)


def _forge(lines: list[bytes]) -> list[bytes]:
    """Insert a correctly hashed record linking to line 1: only the next link shows it."""
    prev = json.loads(lines[0])["audit.hash"]
    template = json.loads(lines[0])
    for key in ("audit.hash", "audit.prev_hash"):
        template.pop(key)
    template["body"] = "forged"
    sealed, _ = seal_lines([json.dumps(template, separators=(",", ":")).encode() + b"\n"], prev,
                           ChainHasher())
    return [lines[0], *sealed, *lines[1:]]


Files = list[Path]  # the set in chain order: two gzipped rotated files, then the active one
MUTATIONS: dict[str, tuple[int, Callable[[Files], None], int]] = {
    # name: (index of the file where the break is reported, the mutation, line reported)
    "modify a field": (2, lambda f: _edit_lines(
        f[2], lambda ls: [ls[0], ls[1].replace(b'"r7"', b'"r0"'), *ls[2:]]), 2),
    "delete a line": (2, lambda f: _edit_lines(f[2], lambda ls: [ls[0], *ls[2:]]), 2),
    "reorder two lines": (2, lambda f: _edit_lines(f[2], lambda ls: [ls[1], ls[0], *ls[2:]]), 1),
    "insert a forged line": (2, lambda f: _edit_lines(f[2], _forge), 3),
    "truncate the last line": (2, lambda f: _edit_lines(
        f[2], lambda ls: [*ls[:-1], ls[-1][:-20]]), 4),
    "remove a rotated file in the middle": (1, lambda f: f[0].unlink(), 1),
    "truncate a rotated file in the middle": (2, lambda f: _edit_lines(f[1], lambda ls: ls[:-1]), 1),
    "modify inside a .gz": (0, lambda f: _edit_lines(
        f[0], lambda ls: [ls[0].replace(b'"actor":"u1"', b'"actor":"u2"'), *ls[1:]]), 1),
    "corrupt the .gz bytes": (0, lambda f: f[0].write_bytes(f[0].read_bytes()[:-12] + b"\0" * 12), 1),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_every_kind_of_tampering_is_reported_at_the_first_broken_link(
    tmp_path: Path, mutation: str,
) -> None:
    logs = tmp_path / "logs"
    write_history(logs)
    where, mutate, line = MUTATIONS[mutation]
    files = chain_files(logs / "audit.log")
    mutate(files)
    report = only(verify_directory(logs, ChainHasher()))
    assert report.broken is not None, mutation
    assert report.broken.path == files[where], report.broken
    if mutation != "corrupt the .gz bytes":  # where gzip notices depends on the damage
        assert report.broken.line == line, report.broken


def test_keyed_chain_rejects_a_chain_rehashed_without_the_key(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_history(logs, key=KEY)
    assert only(verify_directory(logs, ChainHasher(KEY))).broken is None
    assert only(verify_directory(logs, ChainHasher())).broken is not None
    # An attacker edits the active file and re-chains it with plain SHA-256 from its start.
    active = logs / "audit.log"
    lines = active.read_bytes().splitlines(keepends=True)
    prev = json.loads(lines[0])["audit.prev_hash"]
    plain = []
    for raw in lines:
        obj = json.loads(raw)
        obj.pop("audit.hash")
        obj.pop("audit.prev_hash")
        obj["actor"] = "someone else"
        plain.append(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    rehashed, _ = seal_lines(plain, prev, ChainHasher())
    active.write_bytes(b"".join(rehashed))
    broken = only(verify_directory(logs, ChainHasher(KEY))).broken
    assert broken is not None
    assert (broken.path.name, broken.line) == ("audit.log", 1)
    assert "modified" in broken.reason


# -- crashes, tenants, workers -----------------------------------------------------------------

def test_torn_last_line_is_reported_on_restart_and_acknowledged_by_the_next_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    logs = tmp_path / "logs"
    clock = Clock()
    sink = make_sink(logs, clock)
    sink.consume(audit_batch("a", "b"))
    sink.shutdown()
    with (logs / "audit.log").open("ab") as f:  # a crash cut the next write short
        f.write(b'{"timestamp":"2026-11-23T12:00:00Z","body":"c')
    stamp(logs, clock.now)  # the restart is on the same day: no rotation
    # Before the receiver comes back, the torn record is a break like any other.
    assert only(verify_directory(logs, ChainHasher())).broken is not None
    with caplog.at_level(logging.WARNING, logger="sluice.files"):
        sink = make_sink(logs, clock)
        sink.consume(audit_batch("d"))
        sink.shutdown()
    assert "torn record" in caplog.text
    report = only(verify_directory(logs, ChainHasher()))
    assert report.broken is None
    assert (report.records, report.torn) == (3, 1)
    lines = (logs / "audit.log").read_bytes().splitlines()
    assert lines[2].endswith(b'"body":"c')  # the evidence is kept, on a line of its own
    # Cutting the acknowledged fragment afterwards is still caught.
    _edit_lines(logs / "audit.log", lambda ls: [*ls[:2], ls[3]])
    assert only(verify_directory(logs, ChainHasher())).broken is not None


def test_chain_survives_a_clock_step_back_and_a_restored_old_mtime(tmp_path: Path) -> None:
    """Periods in rotated names come from clocks and mtimes, which can go backwards; the
    writer's head and `verify` follow the rotation sequence, so the chain stays whole."""
    logs = tmp_path / "logs"
    clock = Clock()
    sink = make_sink(logs, clock)
    sink.consume(audit_batch("day2"))  # the clock is a day ahead ...
    clock.now -= DAY  # ... and NTP steps it back across midnight
    sink.consume(audit_batch("day1"))
    clock.now += DAY
    sink.consume(audit_batch("day2-again"))
    sink.force_flush(10)
    sink.shutdown()
    stamp(logs, DAY1 - 30 * DAY)  # a restore from backup leaves month-old mtimes
    sink = make_sink(logs, clock)
    sink.consume(audit_batch("after restore"))
    sink.force_flush(10)
    sink.shutdown()
    files = chain_files(logs / "audit.log")
    assert [f.name for f in files] == [
        "audit.log.2026-11-23.1.gz", "audit.log.2026-11-22.2.gz", "audit.log.2026-10-24.3.gz",
        "audit.log"]
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records) == (None, 4)


def test_a_torn_first_record_after_a_rotation_chains_to_the_previous_file(tmp_path: Path) -> None:
    """A crash inside the first write after a rotation leaves a file with no complete line; the
    next record links to the last record of the previous file, not to GENESIS."""
    logs = tmp_path / "logs"
    clock = Clock()
    sink = make_sink(logs, clock)
    sink.consume(audit_batch("a"))
    clock.now += DAY
    sink.consume(audit_batch("b"))
    sink.force_flush(10)
    sink.shutdown()
    active = logs / "audit.log"
    active.rename(logs / "audit.log.2026-11-24.2")  # a rotation, then the crash tore "c"
    active.write_bytes(b'{"timestamp":"2026-11-24T12:00:00Z","body":"c')
    stamp(logs, clock.now)
    sink = make_sink(logs, clock)
    sink.consume(audit_batch("d"))
    sink.shutdown()
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.torn) == (None, 3, 1)
    first = json.loads(active.read_bytes().splitlines()[1])
    assert first["audit.prev_hash"] != GENESIS


def test_each_tenant_has_its_own_chain_and_verify_walks_them_all(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock())
    sink.consume(audit_batch("a1", tenant="acme"))
    sink.consume(audit_batch("g1", "g2", tenant="globex"))
    sink.consume(audit_batch("a2", tenant="acme"))
    sink.shutdown()
    reports = verify_directory(logs, ChainHasher())
    assert [(r.active.relative_to(logs).as_posix(), r.records, r.broken) for r in reports] == [
        ("tenants/acme/audit.log", 2, None), ("tenants/globex/audit.log", 2, None)]
    _edit_lines(logs / "tenants/globex/audit.log", lambda ls: ls[::-1])
    broken = [r for r in verify_directory(logs, ChainHasher()) if r.broken is not None]
    assert [r.active.parent.name for r in broken] == ["globex"]


def test_shared_writers_extend_one_chain_across_their_rotations(tmp_path: Path) -> None:
    """Two sinks in `shared` mode (what `--workers` runs) take turns on one file set whose
    size rotation each of them triggers: the chain stays whole because each reads the head
    from the file under the flock."""
    logs = tmp_path / "logs"
    rotation = RotationConfig(max_bytes=2048, interval="none", compress=True)
    clock = Clock()
    one = make_sink(logs, clock, shared=True, rotation=rotation)
    two = make_sink(logs, clock, shared=True, rotation=rotation)
    for i in range(12):
        (one if i % 3 else two).consume(audit_batch(f"r{i}-a", f"r{i}-b"))
    one.force_flush(10)
    two.force_flush(10)
    one.shutdown()
    two.shutdown()
    report = only(verify_directory(logs, ChainHasher()))
    assert len(report.files) > 3
    assert report.broken is None
    assert report.records == 24


def test_audit_chain_config_keys_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAIN_KEY", "x" * 32)
    assert parse_config("files: {audit_chain: {key_env: CHAIN_KEY}}").files.audit_chain.key == b"x" * 32
    key_file = tmp_path / "chain.key"
    key_file.write_text("y" * 32 + "\n")
    config = parse_config(f"files: {{audit_chain: {{key_file: {key_file}}}}}")
    assert config.files.audit_chain.key == b"y" * 32
    assert "y" * 32 not in repr(config)
    assert parse_config("{}").files.audit_chain.enabled
    monkeypatch.setenv("SHORT_KEY", "short")
    with pytest.raises(ConfigError) as info:
        parse_config(
            "files: {format: text, audit_chain: {enabled: true, key_env: NOPE_UNSET}}\n")
    text = str(info.value)
    assert "files.audit_chain.key_env: got 'NOPE_UNSET'; environment variable NOPE_UNSET" in text
    assert "files.audit_chain.enabled: the audit chain needs files.format: json" in text
    with pytest.raises(ConfigError) as info:
        parse_config("files: {audit_chain: {key_env: SHORT_KEY, keyfile: x}}")
    text = str(info.value)
    assert "has 5 bytes; expected at least 16" in text
    assert "files.audit_chain.keyfile: unknown key; did you mean 'key_file'?" in text
