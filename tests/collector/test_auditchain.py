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
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import ConfigError
from sluice_collector.service.config import parse_config
from sluice_collector.sinks.files.auditchain import (
    LEGACY_GENESIS,
    MANIFEST_NAME,
    ChainBreak,
    ChainHasher,
    chain_files,
    genesis,
    head_path,
    seal_lines,
)
from sluice_collector.sinks.files.auditmonitor import AuditChainMonitor
from sluice_collector.sinks.files.auditverify import ChainReport, verify_directory
from sluice_collector.sinks.files.config import AuditChainConfig, FilePolicy, FilesConfig, RotationConfig
from sluice_collector.sinks.files.sink import RotatingFileSink, compress_file
from sluice_collector.telemetry import ReceiverTelemetry
from tests.otlp_builders import log_record, logs_request

ROOT = Path(__file__).resolve().parents[2]
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
              rotation: RotationConfig = ROTATION, enabled: bool = True,
              audit_path: str = "{category}.log") -> RotatingFileSink:
    config = FilesConfig(directory=logs, rotation=rotation,
                         audit_chain=AuditChainConfig(enabled=enabled, key=key))
    cats = {"app": FilePolicy(name="app", rotation=rotation),
            "audit": FilePolicy(name="audit", path=audit_path, rotation=rotation)}
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


def audit_batch(*bodies: str, tenant: str = "", service: str = "svc") -> Batch:
    request = logs_request(*(log_record(b, attributes={"actor": "u1"}) for b in bodies), service=service)
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
    assert first["audit.prev_hash"] == genesis("audit.log", ChainHasher())
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
    # Without the key, neither the records nor the manifest (MAC'd the same way) check out.
    assert [r.rel for r in verify_directory(logs, ChainHasher()) if r.broken] == [
        ".audit-manifest", "audit.log"]
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
    # Before the receiver comes back: the torn line is past the head, where a crash leaves one;
    # the set is intact and the line is counted (cutting a record the head covers is not: see
    # the tampering cases).
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.torn_unacknowledged) == (None, 2, 1)
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
    assert first["audit.prev_hash"] not in (genesis("audit.log", ChainHasher()), LEGACY_GENESIS)


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
    assert parse_config("{}").files.audit_chain.verify_interval_s == 3600
    interval = parse_config("files: {audit_chain: {verify_interval_s: 30m}}").files.audit_chain
    assert interval.verify_interval_s == 1800
    assert parse_config("files: {audit_chain: {verify_interval_s: 0}}").files.audit_chain.verify_interval_s == 0
    with pytest.raises(ConfigError) as info:
        parse_config("files: {audit_chain: {verify_interval_s: -5}}")
    assert "files.audit_chain.verify_interval_s: got -5; expected a duration ≥ 0s" in str(info.value)
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


# -- every set is found, and bound to its tenant and path ---------------------------------------

def by_rel(reports: list[ChainReport]) -> dict[str, ChainReport]:
    return {r.rel: r for r in reports}


def test_a_templated_set_with_a_junk_first_line_is_still_verified_and_reported(tmp_path: Path) -> None:
    """`verify` finds sets by their head files and by the templates the receiver recorded, not
    by what their first line holds: one junk line cannot make a set invisible."""
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock(), audit_path="audit/{service.name}.log")
    sink.consume(audit_batch("s1", "s2", service="shop"))
    sink.consume(audit_batch("p1", "p2", service="pay"))
    sink.shutdown()
    assert [(r.rel, r.records, r.broken) for r in verify_directory(logs, ChainHasher())] == [
        ("audit/pay.log", 2, None), ("audit/shop.log", 2, None)]
    shop = logs / "audit" / "shop.log"
    _edit_lines(shop, lambda ls: [b'{"body":"nothing to see"}\n', *ls[1:]])
    reports = by_rel(verify_directory(logs, ChainHasher()))
    assert reports["audit/pay.log"].broken is None
    assert reports["audit/shop.log"].broken == ChainBreak(shop, 1, (
        "not a chained audit record (no valid audit.prev_hash/audit.hash): inserted, edited, or "
        "written with the chain off"))
    # Its head file removed as well: the manifest's template still names the set.
    head_path(shop).unlink()
    broken = by_rel(verify_directory(logs, ChainHasher()))["audit/shop.log"].broken
    assert broken is not None
    assert (broken.path, broken.line) == (shop, 1)
    # The manifest removed too: that is reported (another set's head is still there), and the
    # receiver's config names the set again.
    (logs / MANIFEST_NAME).unlink()
    reports = by_rel(verify_directory(logs, ChainHasher()))
    assert reports[MANIFEST_NAME].broken is not None
    assert "manifest is missing" in reports[MANIFEST_NAME].broken.reason
    reports = by_rel(verify_directory(logs, ChainHasher(), ["audit/{service.name}.log"]))
    assert reports["audit/shop.log"].broken is not None


@pytest.mark.parametrize("swap", ["whole tenant directories", "the audit files only"])
def test_swapped_tenant_sets_fail_at_their_first_record(tmp_path: Path, swap: str) -> None:
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock())
    sink.consume(audit_batch("a1", "a2", tenant="acme"))
    sink.consume(audit_batch("g1", "g2", tenant="globex"))
    sink.shutdown()
    acme, globex = logs / "tenants" / "acme", logs / "tenants" / "globex"
    if swap == "whole tenant directories":
        acme.rename(tmp_path / "swap")
        globex.rename(acme)
        (tmp_path / "swap").rename(globex)
    else:
        (acme / "audit.log").rename(tmp_path / "swap")
        (globex / "audit.log").rename(acme / "audit.log")
        (tmp_path / "swap").rename(globex / "audit.log")
    reports = verify_directory(logs, ChainHasher())
    assert [(r.rel, r.broken and (r.broken.path.name, r.broken.line)) for r in reports] == [
        ("tenants/acme/audit.log", ("audit.log", 1)), ("tenants/globex/audit.log", ("audit.log", 1))]
    assert all(r.broken and "another tenant's or path's set" in r.broken.reason for r in reports)


def test_a_rotated_file_kept_both_plain_and_gzipped_must_be_the_same_twice(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_history(logs)
    packed = chain_files(logs / "audit.log")[0]
    plain = packed.with_name(packed.name.removesuffix(".gz"))
    plain.write_bytes(gzip.decompress(packed.read_bytes()))  # a copy, or a gzip caught midway
    assert only(verify_directory(logs, ChainHasher())).broken is None
    # The .gz edited, the plain copy (which the chain is read from) intact.
    _edit_lines(packed, lambda ls: [ls[0].replace(b'"actor":"u1"', b'"actor":"u2"'), *ls[1:]])
    broken = only(verify_directory(logs, ChainHasher())).broken
    assert broken is not None
    assert (broken.path, broken.line) == (packed, 1)
    assert f"differs from the plain copy {plain.name}" in broken.reason
    # The other way round: the plain copy edited, the .gz intact.
    plain.write_bytes(gzip.decompress(packed.read_bytes()).replace(b'"actor":"u2"', b'"actor":"u1"'))
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert only(verify_directory(logs, ChainHasher())).broken is None
    _edit_lines(plain, lambda ls: [ls[0].replace(b'"actor":"u1"', b'"actor":"u3"'), *ls[1:]])
    broken = only(verify_directory(logs, ChainHasher())).broken
    assert broken is not None
    assert (broken.path, broken.line) == (plain, 1)


# -- the head: the newest records cannot be cut off ---------------------------------------------

TAIL_CUTS: dict[str, tuple[Callable[[Path], None], str, int]] = {
    # name: (the cut, the file reported, the line reported)
    "the newest record": (lambda a: _edit_lines(a, lambda ls: ls[:-1]), "audit.log", 4),
    "the newest batch": (lambda a: _edit_lines(a, lambda ls: ls[:-3]), "audit.log", 2),
    "all of the active file": (lambda a: a.write_bytes(b""), "audit.log", 1),
    "the newest record, replaced by a torn-looking fragment": (
        lambda a: _edit_lines(a, lambda ls: [*ls[:-1], b'{"timestamp":"2026-11-25T12:00:00Z","bo']),
        "audit.log", 4),
    "the active file removed": (lambda a: a.unlink(), "audit.log.2026-11-24.2.gz", 0),
    "the active file and the newest rotated file removed": (
        lambda a: (a.unlink(), a.with_name("audit.log.2026-11-24.2.gz").unlink()),
        "audit.log.2026-11-23.1.gz", 0),
}


@pytest.mark.parametrize("cut", list(TAIL_CUTS))
def test_cutting_the_newest_records_is_reported_with_the_receiver_stopped(tmp_path: Path, cut: str) -> None:
    logs = tmp_path / "logs"
    write_history(logs, key=KEY)
    mutate, name, line = TAIL_CUTS[cut]
    mutate(logs / "audit.log")
    broken = only(verify_directory(logs, ChainHasher(KEY))).broken
    assert broken is not None, cut
    assert (broken.path.name, broken.line) == (name, line), broken
    assert "newest" in broken.reason, broken


def test_cutting_the_newest_records_under_a_running_receiver_leaves_a_gap_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The documented gap, closed: the writer no longer adopts a cut tail. Its next write starts
    with a keyed gap record, so the cut stays on record whatever happens to the head later."""
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock(), key=KEY)
    sink.consume(audit_batch("a", "b"))
    sink.consume(audit_batch("c", "d"))
    active = logs / "audit.log"
    _edit_lines(active, lambda ls: ls[:2])  # c and d cut off while the receiver runs
    broken = only(verify_directory(logs, ChainHasher(KEY))).broken
    assert broken is not None
    assert (broken.path, broken.line) == (active, 3), broken
    with caplog.at_level(logging.ERROR, logger="sluice.files"):
        sink.consume(audit_batch("e"))
    sink.shutdown()
    assert "writing a gap record" in caplog.text
    lines = [json.loads(raw) for raw in active.read_bytes().splitlines()]
    assert [r["body"] for r in lines][:2] == ["a", "b"]
    assert lines[2]["event_name"] == "audit.chain.gap"
    assert "no longer holds its head record #4" in lines[2]["audit.gap"]
    assert lines[3]["body"] == "e"
    broken = only(verify_directory(logs, ChainHasher(KEY))).broken
    assert broken is not None
    assert (broken.path, broken.line) == (active, 3), broken
    assert broken.reason.startswith("the receiver found the chain cut here: the set no longer holds")


@pytest.mark.parametrize("tamper", ["junk instead of the newest record",
                                    "the head file removed and the newest record cut",
                                    "an older head and data put back"])
def test_the_running_writer_reports_a_tampered_tail_instead_of_adopting_it(tmp_path: Path, tamper: str) -> None:
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock(), key=KEY)
    active = logs / "audit.log"
    sink.consume(audit_batch("a", "b"))
    saved = (active.read_bytes(), head_path(active).read_bytes())
    sink.consume(audit_batch("c"))
    if tamper == "junk instead of the newest record":
        _edit_lines(active, lambda ls: [*ls[:-1], b'{"body":"c but different'])
    elif tamper == "the head file removed and the newest record cut":
        head_path(active).unlink()
        _edit_lines(active, lambda ls: ls[:-1])
    else:
        active.write_bytes(saved[0])
        head_path(active).write_bytes(saved[1])
    sink.consume(audit_batch("d"))
    sink.shutdown()
    gaps = [json.loads(raw)["audit.gap"] for raw in active.read_bytes().splitlines() if b'"audit.gap"' in raw]
    assert len(gaps) == 1, gaps
    assert only(verify_directory(logs, ChainHasher(KEY))).broken is not None


def test_a_head_file_removed_alone_is_reported_until_the_running_writer_rewrites_it(tmp_path: Path) -> None:
    """Nothing was lost, so nothing is recorded as cut; meanwhile `verify` says the head is missing."""
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock(), key=KEY)
    sink.consume(audit_batch("a", "b"))
    head_path(logs / "audit.log").unlink()
    broken = only(verify_directory(logs, ChainHasher(KEY))).broken
    assert broken is not None
    assert "head file is missing" in broken.reason
    sink.consume(audit_batch("c"))
    sink.shutdown()
    assert only(verify_directory(logs, ChainHasher(KEY))).broken is None


def test_a_head_that_does_not_check_out_is_reported(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_history(logs, key=KEY)
    head = head_path(logs / "audit.log")
    head.write_bytes(head.read_bytes().replace(b'"seq":9', b'"seq":7'))
    broken = only(verify_directory(logs, ChainHasher(KEY))).broken
    assert broken is not None
    assert broken.path == head
    assert "MAC does not match" in broken.reason
    head.unlink()
    broken = only(verify_directory(logs, ChainHasher(KEY))).broken
    assert broken is not None
    assert broken.path == head
    assert "head file is missing" in broken.reason


def test_sets_written_before_heads_and_set_identities_still_verify(tmp_path: Path) -> None:
    """A legacy set (first record linked to 64 zeros, no head) verifies, flagged; once a receiver
    of this version writes to it, it has a head and its newest records are protected too."""
    logs = tmp_path / "logs"
    logs.mkdir()
    plain = [json.dumps({"timestamp": "2026-11-22T12:00:00Z", "body": b, "category": "audit"},
                        separators=(",", ":")).encode() + b"\n" for b in ("old1", "old2")]
    sealed, _ = seal_lines(plain, LEGACY_GENESIS, ChainHasher())
    (logs / "audit.log").write_bytes(b"".join(sealed))
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.legacy, report.head_file) == (None, 2, True, None)
    sink = make_sink(logs, Clock())
    sink.consume(audit_batch("new"))
    sink.shutdown()
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.legacy) == (None, 3, True)
    assert report.head_file is not None
    _edit_lines(logs / "audit.log", lambda ls: ls[:-1])
    assert only(verify_directory(logs, ChainHasher())).broken is not None


def test_records_written_with_the_chain_off_are_a_break_not_torn_lines(tmp_path: Path) -> None:
    """Only what a crash can leave (a cut-off line) is acknowledged as torn; whole records
    without hashes after the head show where the chain was off."""
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock())
    sink.consume(audit_batch("a", "b"))
    sink.shutdown()
    stamp(logs, DAY1)
    sink = make_sink(logs, Clock(), enabled=False)
    sink.consume(audit_batch("unchained"))
    sink.shutdown()
    stamp(logs, DAY1)
    broken = only(verify_directory(logs, ChainHasher())).broken
    assert broken is not None
    assert (broken.line, broken.reason.startswith("not a chained audit record")) == (3, True)
    sink = make_sink(logs, Clock())
    sink.consume(audit_batch("c"))
    sink.shutdown()
    broken = only(verify_directory(logs, ChainHasher())).broken
    assert broken is not None
    assert broken.line == 3


# -- crashes: a real process killed at a chosen byte ---------------------------------------------

def crash_write(logs: Path, now: float, cut: int, *bodies: str) -> None:
    """Write one audit batch in a real process that SIGKILLs itself `cut` bytes into the write
    (-1: after the whole write, before the head update); see audit_crash_writer."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.collector.audit_crash_writer", str(logs), repr(now), str(cut), *bodies],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr


NO_GZIP = replace(ROTATION, compress=False)


@pytest.mark.parametrize("previous", ["plain", "gzipped", "plain and gzipped"])
def test_a_crash_tearing_the_first_record_after_a_rotation_never_looks_like_tampering(
    tmp_path: Path, previous: str,
) -> None:
    """Issue 13, item 8, with the previous file in each state gzip can leave it: `verify` passes
    right after the crash and after the restart, and the next record chains to the previous
    file's last record (not to a genesis)."""
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock(), rotation=NO_GZIP)
    sink.consume(audit_batch("a", "b"))
    sink.shutdown()
    stamp(logs, DAY1)
    crash_write(logs, DAY1 + DAY, 40, "c", "d")  # rotates, then dies 40 bytes into "c"
    rotated = logs / "audit.log.2026-11-23.1"
    assert (logs / "audit.log").stat().st_size == 40
    if previous != "plain":
        data = rotated.read_bytes()
        compress_file(rotated)
        if previous == "plain and gzipped":
            rotated.write_bytes(data)
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.torn_unacknowledged) == (None, 2, 1)
    stamp(logs, DAY1 + DAY)
    sink = make_sink(logs, Clock(DAY1 + DAY))
    sink.consume(audit_batch("e"))
    sink.force_flush(10)
    sink.shutdown()
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.torn, report.torn_unacknowledged) == (None, 3, 1, 0)
    first = json.loads((logs / "audit.log").read_bytes().splitlines()[1])
    last_before = json.loads(gzip.decompress(chain_files(logs / "audit.log")[0].read_bytes()).splitlines()[-1])
    assert first["audit.prev_hash"] == last_before["audit.hash"]


def test_crashes_in_a_row_each_tearing_a_write_still_verify(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock(), rotation=NO_GZIP)
    sink.consume(audit_batch("a", "b"))
    sink.shutdown()
    stamp(logs, DAY1)
    crash_write(logs, DAY1, 30, "c")
    crash_write(logs, DAY1, 25, "d")  # the restart's "\n" and 24 bytes of "d", then dead again
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.torn_unacknowledged) == (None, 2, 2)
    sink = make_sink(logs, Clock())
    sink.consume(audit_batch("e"))
    sink.shutdown()
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.torn) == (None, 3, 2)


@pytest.mark.parametrize("cut", [30, 700, 1500, -1])
def test_a_crash_between_the_write_and_the_head_update_is_not_tampering(tmp_path: Path, cut: int) -> None:
    """Whatever byte of a batch the crash stops at — inside the first record, between records,
    after the whole batch but before the head was rewritten — the set verifies, and the
    restarted receiver takes the complete records over and acknowledges the torn rest."""
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock(), rotation=NO_GZIP)
    sink.consume(audit_batch("a", "b"))
    sink.shutdown()
    stamp(logs, DAY1)
    crash_write(logs, DAY1, cut, "c", "d", "e")
    raw = (logs / "audit.log").read_bytes()
    complete = raw.count(b"\n") - 2
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records) == (None, 2 + complete)
    assert report.torn_unacknowledged == (0 if raw.endswith(b"\n") else 1)
    sink = make_sink(logs, Clock())
    sink.consume(audit_batch("f"))
    sink.shutdown()
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.torn_unacknowledged) == (None, 3 + complete, 0)


def test_a_crash_inside_the_first_write_of_a_new_set_is_covered_by_its_first_head(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    crash_write(logs, DAY1, 30, "a")
    assert head_path(logs / "audit.log").exists()  # written before the first byte
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.torn_unacknowledged) == (None, 0, 1)
    sink = make_sink(logs, Clock())
    sink.consume(audit_batch("b"))
    sink.shutdown()
    report = only(verify_directory(logs, ChainHasher()))
    assert (report.broken, report.records, report.torn) == (None, 1, 1)


# -- the receiver's own periodic check --------------------------------------------------------

def test_the_periodic_check_reports_each_break_once_and_publishes_its_gauges(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_history(logs)
    clock = Clock(DAY1 + 3 * DAY)
    registry = CollectorRegistry()
    calls: list[tuple[str, ChainBreak]] = []
    monitor = AuditChainMonitor(logs, ChainHasher(), ["{category}.log"], registry, interval_s=3600,
                                on_break=lambda rel, where: calls.append((rel, where)) is None, clock=clock)

    def intact(rel: str = "audit.log") -> float | None:
        return registry.get_sample_value("sluice_audit_chain_intact", {"set": rel})

    monitor.run_once()
    assert intact() == 1
    assert registry.get_sample_value("sluice_audit_chain_last_verified_timestamp_seconds") == clock.now
    # More records: the next run goes on from where the last one stopped.
    sink = make_sink(logs, Clock(DAY1 + 2 * DAY))
    sink.consume(audit_batch("r10"))
    monitor.run_once()
    assert (intact(), calls) == (1, [])
    # An edit inside a rotated file verified long ago is still seen (its ctime moved).
    packed = chain_files(logs / "audit.log")[1]
    _edit_lines(packed, lambda ls: [ls[0], ls[1].replace(b'"r5"', b'"r0"')])
    monitor.run_once()
    assert intact() == 0
    assert [(rel, where.path, where.line) for rel, where in calls] == [("audit.log", packed, 2)]
    sink.consume(audit_batch("r11"))
    monitor.run_once()  # still broken: not reported again
    assert (intact(), len(calls)) == (0, 1)
    sink.shutdown()


def test_the_periodic_check_sees_the_newest_records_cut_off_and_a_set_removed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock())
    sink.consume(audit_batch("a1", tenant="acme"))
    sink.consume(audit_batch("g1", "g2", tenant="globex"))
    calls: list[str] = []
    monitor = AuditChainMonitor(logs, ChainHasher(), sink.audit_templates(), CollectorRegistry(),
                                interval_s=3600, on_break=lambda rel, where: calls.append(rel) is None)
    assert [r.broken for r in monitor.run_once()] == [None, None]
    _edit_lines(logs / "tenants/globex/audit.log", lambda ls: ls[:1])
    monitor.run_once()
    assert calls == ["tenants/globex/audit.log"]
    shutil.rmtree(logs / "tenants" / "acme")
    monitor.run_once()
    assert calls == ["tenants/globex/audit.log", "tenants/acme/audit.log"]
    sink.shutdown()


def test_the_periodic_check_sees_an_edit_in_the_part_of_the_active_file_it_verified_before(
    tmp_path: Path,
) -> None:
    """The active file's ctime moves with every append, so its verified part is hashed again."""
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock())
    sink.consume(audit_batch("a", "b"))
    calls: list[ChainBreak] = []
    monitor = AuditChainMonitor(logs, ChainHasher(), sink.audit_templates(), CollectorRegistry(),
                                interval_s=3600, on_break=lambda rel, where: calls.append(where) is None)
    monitor.run_once()
    active = logs / "audit.log"
    _edit_lines(active, lambda ls: [ls[0].replace(b'"actor":"u1"', b'"actor":"u9"'), *ls[1:]])
    sink.consume(audit_batch("c"))
    monitor.run_once()
    assert [(where.path, where.line) for where in calls] == [(active, 1)]
    sink.shutdown()


def test_the_periodic_check_sees_a_set_and_its_head_put_back_to_an_older_copy(tmp_path: Path) -> None:
    """Offline, a keyed set rolled back whole (records and head) is indistinguishable from the
    older set (docs/security.md says so); a running receiver remembers how far its head got."""
    logs = tmp_path / "logs"
    sink = make_sink(logs, Clock(), key=KEY)
    active = logs / "audit.log"
    sink.consume(audit_batch("a"))
    older = (active.read_bytes(), head_path(active).read_bytes())
    sink.consume(audit_batch("b", "c"))
    calls: list[ChainBreak] = []
    monitor = AuditChainMonitor(logs, ChainHasher(KEY), sink.audit_templates(), CollectorRegistry(),
                                interval_s=3600, on_break=lambda rel, where: calls.append(where) is None)
    monitor.run_once()
    active.write_bytes(older[0])
    head_path(active).write_bytes(older[1])
    assert only(verify_directory(logs, ChainHasher(KEY))).broken is None  # the offline limit
    monitor.run_once()
    assert [where.reason.split(":")[0] for where in calls] == [
        "the head file went back from record #3 to #1"]
    sink.shutdown()
