"""RotatingFileSink: one write per file per batch, rotation, gzip, path templates, failures.

Real files in tmp_path; time, disk usage and the low-level write are injected, never mocked.
"""

from __future__ import annotations

import calendar
import errno
import gzip
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sluice_collector.batch import Batch, Signal
from sluice_collector.errors import DiskFullError, SinkError
from sluice_collector.sinks.files.config import DiskGuardConfig, FilePolicy, FilesConfig, RotationConfig
from sluice_collector.sinks.files.sink import MAX_COMPONENT_CHARS, RotatingFileSink, safe_component
from sluice_collector.telemetry import ReceiverTelemetry
from tests.otlp_builders import log_record, logs_request

NOON = calendar.timegm((2026, 11, 23, 12, 0, 0))
NO_ROTATION = RotationConfig(max_bytes=10**9, interval="none", compress=False)


class Clock:
    """A settable clock: tests move time across midnight without sleeping."""

    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_sink(tmp_path: Path, *, rotation: RotationConfig = NO_ROTATION, path: str = "{category}.log",
              categories: tuple[str, ...] = ("app", "error", "audit"), clock: Clock | None = None,
              **files: Any) -> RotatingFileSink:
    config = FilesConfig(directory=tmp_path / "logs", rotation=rotation, **files)
    cats = {name: FilePolicy(name=name, path=path, rotation=rotation) for name in categories}
    return RotatingFileSink(replace(config, categories=cats), ReceiverTelemetry(), clock=clock or Clock(),
                            disk_usage=lambda _p: (10, 100))


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[RotatingFileSink]:
    s = make_sink(tmp_path)
    s.start(background=False)
    yield s
    s.shutdown()


def batch_of(*bodies: str, category: str = "app", attributes: dict[str, Any] | None = None,
             resource: dict[str, Any] | None = None) -> Batch:
    request = logs_request(*(log_record(b, attributes=attributes) for b in bodies), resource=resource)
    batch = Batch(Signal.LOGS, request, time.time_ns())
    batch.routes = {category: batch.records()}
    return batch


def bodies(path: Path) -> list[str]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line)["body"] for line in data.splitlines()]


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# -- writing ---------------------------------------------------------------------------------


def test_each_category_goes_to_its_own_file_one_json_line_per_record(sink: RotatingFileSink) -> None:
    batch = batch_of("a", "b")
    refs = batch.records()
    batch.routes = {"app": [refs[0]], "error": [refs[1]]}
    sink.consume(batch)
    root = sink.directory
    assert all_files(root) == ["app.log", "error.log"]
    assert bodies(root / "app.log") == ["a"]
    assert bodies(root / "error.log") == ["b"]
    written = sink._telemetry.written.labels(signal="logs", category="app", sink="files")
    assert written._value.get() == 1


def test_one_write_call_per_file_per_batch(tmp_path: Path) -> None:
    calls: list[int] = []

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        calls.append(fd)
        return os.write(fd, data)

    config = FilesConfig(directory=tmp_path, rotation=NO_ROTATION)
    cats = {"app": FilePolicy(name="app", rotation=NO_ROTATION)}
    s = RotatingFileSink(replace(config, categories=cats), ReceiverTelemetry(), write=counting_write)
    s.start(background=False)
    s.consume(batch_of(*[f"r{i}" for i in range(500)]))
    s.shutdown()
    assert len(calls) == 1
    assert len(bodies(tmp_path / "app.log")) == 500


def test_text_format_writes_one_line_per_record(tmp_path: Path) -> None:
    s = make_sink(tmp_path, format="text")
    s.start(background=False)
    s.consume(batch_of("multi\nline"))
    s.shutdown()
    lines = (tmp_path / "logs" / "app.log").read_bytes().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(b"| INFO | test.scope |  | multi\\nline")


def test_consume_before_start_is_a_sink_error(tmp_path: Path) -> None:
    with pytest.raises(SinkError):
        make_sink(tmp_path).consume(batch_of("a"))


# -- rotation --------------------------------------------------------------------------------


def test_size_rotation_names_carry_date_and_sequence_and_gzip_holds_exactly_the_lines(
    tmp_path: Path,
) -> None:
    rotation = RotationConfig(max_bytes=2000, interval="none", compress=True)
    s = make_sink(tmp_path, rotation=rotation)
    s.start(background=False)
    written: list[str] = []
    for i in range(12):
        names = [f"batch{i}-rec{j}" for j in range(3)]
        written += names
        s.consume(batch_of(*names))
    assert s.force_flush(10)
    s.shutdown()
    root = tmp_path / "logs"
    files = all_files(root)
    rotated = [f for f in files if f != "app.log"]
    assert rotated
    assert all(f.startswith("app.log.2026-11-23.") and f.endswith(".gz") for f in rotated)
    seqs = sorted(int(f.split(".")[3]) for f in rotated)
    assert seqs == list(range(1, len(rotated) + 1))
    for f in rotated:
        subprocess.run(["gzip", "-t", str(root / f)], check=True)
        assert (root / f).stat().st_size > 0
    ordered = sorted(rotated, key=lambda f: int(f.split(".")[3]))
    seen = [b for f in ordered for b in bodies(root / f)] + bodies(root / "app.log")
    assert seen == written
    assert all((root / f).stat().st_size <= 2000 for f in files if not f.endswith(".gz"))
    assert s._telemetry.rotations.labels(category="app")._value.get() == len(rotated)


def test_daily_rotation_across_midnight_uses_the_period_of_the_content(tmp_path: Path) -> None:
    clock = Clock(calendar.timegm((2026, 11, 23, 23, 59, 59)))
    rotation = RotationConfig(max_bytes=10**9, interval="daily", compress=False)
    s = make_sink(tmp_path, rotation=rotation, clock=clock)
    s.start(background=False)
    s.consume(batch_of("before midnight"))
    s.consume(batch_of("still before"))
    clock.now += 2
    s.consume(batch_of("after midnight"))
    s.shutdown()
    root = tmp_path / "logs"
    assert all_files(root) == ["app.log", "app.log.2026-11-23.1"]
    assert bodies(root / "app.log.2026-11-23.1") == ["before midnight", "still before"]
    assert bodies(root / "app.log") == ["after midnight"]


def test_hourly_rotation_is_clock_aligned(tmp_path: Path) -> None:
    clock = Clock(calendar.timegm((2026, 11, 23, 9, 10, 0)))
    rotation = RotationConfig(max_bytes=10**9, interval="hourly", compress=False)
    s = make_sink(tmp_path, rotation=rotation, clock=clock)
    s.start(background=False)
    s.consume(batch_of("9:10"))
    clock.now += 45 * 60  # 9:55, same hour
    s.consume(batch_of("9:55"))
    clock.now += 10 * 60  # 10:05
    s.consume(batch_of("10:05"))
    clock.now += 3600  # 11:05
    s.consume(batch_of("11:05"))
    s.shutdown()
    root = tmp_path / "logs"
    assert all_files(root) == ["app.log", "app.log.2026-11-23-09.1", "app.log.2026-11-23-10.2"]
    assert bodies(root / "app.log.2026-11-23-09.1") == ["9:10", "9:55"]


def test_file_left_from_yesterday_is_rotated_on_first_write_after_restart(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    root.mkdir()
    old = root / "app.log"
    old.write_bytes(b'{"body":"yesterday"}\n')
    yesterday = NOON - 86400
    os.utime(old, (yesterday, yesterday))
    s = make_sink(tmp_path, rotation=RotationConfig(interval="daily", compress=False))
    s.start(background=False)
    s.consume(batch_of("today"))
    s.shutdown()
    assert bodies(root / "app.log.2026-11-22.1") == ["yesterday"]
    assert bodies(root / "app.log") == ["today"]


def test_max_backups_keeps_only_the_newest_rotated_files(tmp_path: Path) -> None:
    rotation = RotationConfig(max_bytes=1024, interval="none", compress=True, max_backups=2)
    s = make_sink(tmp_path, rotation=rotation)
    s.start(background=False)
    for i in range(8):
        s.consume(batch_of(*[f"b{i}-{j}-" + "x" * 200 for j in range(4)]))
        assert s.force_flush(10)
    s.shutdown()
    files = all_files(tmp_path / "logs")
    assert files == ["app.log", "app.log.2026-11-23.6.gz", "app.log.2026-11-23.7.gz"]


def test_max_backups_prunes_by_rotation_order_when_the_clock_steps_back(tmp_path: Path) -> None:
    """A clock stepped back a day (NTP, a resumed VM) labels newer files with an older period;
    the set-wide sequence still says which backups are the oldest."""
    clock = Clock(NOON)
    rotation = RotationConfig(max_bytes=10**9, interval="daily", compress=False, max_backups=2)
    s = make_sink(tmp_path, rotation=rotation, clock=clock)
    s.start(background=False)
    for step, body in [(0, "d1"), (86400, "d2"), (-86400, "d1-again"), (86400, "d2-again")]:
        clock.now += step
        s.consume(batch_of(body))
    s.shutdown()
    root = tmp_path / "logs"
    assert all_files(root) == ["app.log", "app.log.2026-11-23.3", "app.log.2026-11-24.2"]
    assert bodies(root / "app.log.2026-11-24.2") == ["d2"]
    assert bodies(root / "app.log.2026-11-23.3") == ["d1-again"]


def test_restart_finishes_interrupted_compression_and_removes_partial_gz(tmp_path: Path) -> None:
    """A crash mid-gzip leaves `x.gz.tmp` and the uncompressed rotated file; never a bad .gz."""
    root = tmp_path / "logs"
    root.mkdir()
    (root / "app.log.2026-11-22.1").write_bytes(b'{"body":"kept"}\n')
    (root / "app.log.2026-11-22.1.gz.tmp").write_bytes(b"\x1f\x8bhalf")
    s = make_sink(tmp_path, rotation=RotationConfig(compress=True))
    s.start(background=False)
    assert s.force_flush(10)
    s.shutdown()
    assert all_files(root) == ["app.log.2026-11-22.1.gz"]
    assert bodies(root / "app.log.2026-11-22.1.gz") == ["kept"]


def test_restart_leaves_a_live_workers_temp_gz_alone_and_removes_a_dead_ones(tmp_path: Path) -> None:
    """With --workers, another live process may be mid-gzip: its pid-named temp file stays."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    root = tmp_path / "logs"
    root.mkdir()
    live_tmp = root / f"app.log.2026-11-22.1.gz.tmp.{os.getppid()}"
    dead_tmp = root / f"app.log.2026-11-22.2.gz.tmp.{dead}"
    live_tmp.write_bytes(b"in progress")
    dead_tmp.write_bytes(b"\x1f\x8bhalf")
    s = make_sink(tmp_path, rotation=RotationConfig(compress=True))
    s.start(background=False)
    s.shutdown()
    assert live_tmp.exists()
    assert not dead_tmp.exists()


def test_a_file_another_process_is_compressing_is_skipped(tmp_path: Path) -> None:
    import fcntl

    from sluice_collector.sinks.files.sink import compress_file

    rotated = tmp_path / "app.log.2026-11-22.1"
    rotated.write_bytes(b'{"body":"x"}\n')
    with rotated.open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert compress_file(rotated) is None
    assert compress_file(rotated) == tmp_path / "app.log.2026-11-22.1.gz"
    assert not rotated.exists()


def test_rotation_works_for_templated_paths(tmp_path: Path) -> None:
    rotation = RotationConfig(max_bytes=1024, interval="none", compress=False)
    s = make_sink(tmp_path, rotation=rotation, path="users/{user.id}/{category}.log")
    s.start(background=False)
    for i in range(6):
        s.consume(batch_of(*[f"{i}-{j}" + "y" * 300 for j in range(2)], attributes={"user.id": "u1"}))
    s.shutdown()
    files = all_files(tmp_path / "logs")
    assert "users/u1/app.log" in files
    assert any(f.startswith("users/u1/app.log.2026-11-23.") for f in files)


# -- paths -----------------------------------------------------------------------------------


EVIL = ["../../etc", "/abs/path", "..\\x", "a\x00b", ".", "..", ".hidden", "x" * 5000,
        "ünïcødé/用户", "new\nline", "%2E%2E", "C:\\win"]


def test_templated_fields_never_escape_the_directory_and_never_collide(tmp_path: Path) -> None:
    s = make_sink(tmp_path, path="users/{user.id}/{category}.log")
    s.start(background=False)
    for value in EVIL:
        s.consume(batch_of(f"from {value!r}", attributes={"user.id": value}))
    s.shutdown()
    root = (tmp_path / "logs").resolve()
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and root not in p.resolve().parents]
    assert outside == []
    files = all_files(root)
    assert len(files) == len(EVIL)  # one distinct file per distinct user: isolation holds
    for f in files:
        parts = f.split("/")
        assert parts[0] == "users"
        assert parts[2] == "app.log"
        assert len(parts) == 3
        assert not parts[1].startswith(".")
        assert len(parts[1]) <= MAX_COMPONENT_CHARS
        assert parts[1].isascii()
        assert parts[1].isprintable()
        assert len(bodies(root / f)) == 1


def test_safe_component_keeps_plain_values_and_encodes_the_rest() -> None:
    assert safe_component("user-42@example.com") == "user-42@example.com"
    assert safe_component("../etc") == "%2E.%2Fetc"
    assert safe_component("") is None
    assert safe_component(42) == "42"
    long_a, long_b = safe_component("a" * 500 + "1"), safe_component("a" * 500 + "2")
    assert long_a != long_b
    assert len(long_a or "") <= MAX_COMPONENT_CHARS


def test_missing_field_goes_to_the_fallback_path_not_dropped(tmp_path: Path) -> None:
    s = make_sink(tmp_path, path="users/{user.id}/{category}.log",
                  fallback_path="unattributed/{category}.log")
    s.start(background=False)
    s.consume(batch_of("nobody"))
    s.consume(batch_of("empty", attributes={"user.id": ""}))
    s.shutdown()
    assert bodies(tmp_path / "logs" / "unattributed" / "app.log") == ["nobody", "empty"]


def test_record_attribute_wins_over_resource_and_service_name_comes_from_resource(tmp_path: Path) -> None:
    s = make_sink(tmp_path, path="{tenant.id}/{service.name}/{category}.log")
    s.start(background=False)
    s.consume(batch_of("rec", attributes={"tenant.id": "t-rec"}, resource={"tenant.id": "t-res"}))
    s.consume(batch_of("res", resource={"tenant.id": "t-res"}))
    s.shutdown()
    assert all_files(tmp_path / "logs") == ["t-rec/svc/app.log", "t-res/svc/app.log"]


def test_open_descriptors_are_bounded_by_max_open_files(tmp_path: Path) -> None:
    s = make_sink(tmp_path, path="u/{user.id}.log", max_open_files=3)
    s.start(background=False)
    for round_ in range(2):
        for user in range(10):
            s.consume(batch_of(f"{round_}", attributes={"user.id": f"user{user}"}))
            assert s.health()["open_files"] <= 3
    s.shutdown()
    assert bodies(tmp_path / "logs" / "u" / "user7.log") == ["0", "1"]


# -- failures --------------------------------------------------------------------------------


def test_enospc_mid_write_truncates_back_and_raises_disk_full(tmp_path: Path) -> None:
    """app.log is written whole, error.log gets half its data and then ENOSPC: both files are cut
    back to their size before the batch, and the client's retry then writes each line once."""
    script: list[str] = []  # what each low-level write call does, in order; empty = normal

    def scripted_write(fd: int, data: bytes | memoryview) -> int:
        step = script.pop(0) if script else "ok"
        if step == "half":
            return os.write(fd, bytes(data[: len(data) // 2]))
        if step == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    config = FilesConfig(directory=tmp_path, rotation=NO_ROTATION)
    cats = {n: FilePolicy(name=n, rotation=NO_ROTATION) for n in ("app", "error")}
    s = RotatingFileSink(replace(config, categories=cats), ReceiverTelemetry(), write=scripted_write,
                         disk_usage=lambda _p: (10, 100))
    s.start(background=False)
    first = batch_of("first", "err-first")
    refs = first.records()
    first.routes = {"app": [refs[0]], "error": [refs[1]]}
    s.consume(first)
    before = {name: (tmp_path / name).read_bytes() for name in ("app.log", "error.log")}
    batch = batch_of("second", "third")
    refs = batch.records()
    batch.routes = {"app": [refs[0]], "error": [refs[1]]}
    script[:] = ["ok", "half", "enospc"]
    with pytest.raises(DiskFullError):
        s.consume(batch)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert s.health()["state"] == "degraded"
    assert "write failed" in s.health()["last_error"]
    s.consume(batch)  # the client's retry succeeds once space is back
    assert bodies(tmp_path / "app.log") == ["first", "second"]
    assert bodies(tmp_path / "error.log") == ["err-first", "third"]
    assert s.health()["state"] == "ok"
    s.shutdown()


def test_failure_in_a_later_file_rolls_back_files_already_written(tmp_path: Path) -> None:
    """All or nothing per batch: a retry must not duplicate the lines of the first file."""
    state = {"calls": 0}

    def second_write_fails(fd: int, data: bytes | memoryview) -> int:
        state["calls"] += 1
        if state["calls"] == 2:
            raise OSError(errno.EIO, "Input/output error")
        return os.write(fd, data)

    config = FilesConfig(directory=tmp_path, rotation=NO_ROTATION)
    cats = {n: FilePolicy(name=n, rotation=NO_ROTATION) for n in ("app", "error")}
    s = RotatingFileSink(replace(config, categories=cats), ReceiverTelemetry(), write=second_write_fails)
    s.start(background=False)
    batch = batch_of("a", "b")
    refs = batch.records()
    batch.routes = {"app": [refs[0]], "error": [refs[1]]}
    with pytest.raises(SinkError) as info:
        s.consume(batch)
    assert not isinstance(info.value, DiskFullError)
    assert (tmp_path / "app.log").read_bytes() == b""
    s.shutdown()


def test_real_short_write_under_rlimit_fsize_leaves_no_half_line(tmp_path: Path) -> None:
    """The kernel itself cuts the write short (RLIMIT_FSIZE); the sink cuts back to whole lines."""
    script = textwrap.dedent(f"""
        import json, resource, signal, sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from sluice_collector.batch import Batch, Signal
        from sluice_collector.sinks.files.config import FilePolicy
        from sluice_collector.errors import DiskFullError
        from sluice_collector.sinks.files.sink import RotatingFileSink
        from sluice_collector.sinks.files.config import FilesConfig, RotationConfig
        from sluice_collector.telemetry import ReceiverTelemetry
        from tests.otlp_builders import log_record, logs_request
        rot = RotationConfig(max_bytes=10**9, interval="none", compress=False)
        sink = RotatingFileSink(FilesConfig(directory=Path({str(tmp_path)!r}), rotation=rot,
                                            categories={{"app": FilePolicy(name="app", rotation=rot)}}),
                                ReceiverTelemetry())
        sink.start(background=False)
        def batch(n):
            b = Batch(Signal.LOGS, logs_request(*[log_record("x" * 100) for _ in range(n)]), time.time_ns())
            b.routes = {{"app": b.records()}}
            return b
        sink.consume(batch(3))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            sink.consume(batch(100))
        except DiskFullError:
            print("DISKFULL")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "DISKFULL", out.stderr
    data = (tmp_path / "app.log").read_bytes()
    assert data.endswith(b"\n")
    assert len(data.splitlines()) == 3


def test_disk_gauges_follow_the_probe_and_the_guard_for_alert_rules(tmp_path: Path) -> None:
    """`/metrics` carries what /healthz shows as disk.used_percent, and the guard it is compared
    with, so a Prometheus rule can alert before retention starts removing files."""
    used = [40]

    def probe(_path: Path) -> tuple[int, int]:
        if used[0] < 0:
            raise OSError(5, "I/O error")
        return used[0], 100

    telemetry = ReceiverTelemetry()
    config = FilesConfig(directory=tmp_path, rotation=NO_ROTATION, disk=DiskGuardConfig(max_used_percent=70))
    RotatingFileSink(config, telemetry, disk_usage=probe)

    def sample(name: str) -> float | None:
        return telemetry.registry.get_sample_value(name)

    assert sample("sluice_files_disk_max_used_percent") == 70.0
    assert sample("sluice_files_disk_used_percent") == 40.0
    used[0] = 91
    assert sample("sluice_files_disk_used_percent") == 91.0
    used[0] = -1  # the probe fails: no number rather than a stale or made-up one
    value = sample("sluice_files_disk_used_percent")
    assert value is not None
    assert math.isnan(value)


def test_health_reports_directory_disk_open_files_and_compressions(tmp_path: Path) -> None:
    config = FilesConfig(directory=tmp_path, rotation=NO_ROTATION)
    s = RotatingFileSink(replace(config, categories={}), ReceiverTelemetry(), disk_usage=lambda _p: (90, 100))
    s.start(background=False)
    s.consume(batch_of("a", category="dynamic"))  # a category the sink was not told about
    health = s.health()
    s.shutdown()
    assert health == {
        "state": "degraded", "directory": str(tmp_path), "disk_over_limit": True,
        "open_files": 1, "pending_compressions": 0, "last_error": "",
    }
    assert bodies(tmp_path / "dynamic.log") == ["a"]


def test_shutdown_is_idempotent_and_safe_before_start(tmp_path: Path) -> None:
    s = make_sink(tmp_path)
    s.shutdown()
    s.shutdown()


def test_fallback_is_per_category_even_when_categories_share_a_template(tmp_path: Path) -> None:
    s = make_sink(tmp_path, path="users/{user.id}.log")
    s.start(background=False)
    batch = batch_of("to-app", "to-error")
    refs = batch.records()
    batch.routes = {"app": [refs[0]], "error": [refs[1]]}
    s.consume(batch)
    s.shutdown()
    assert bodies(tmp_path / "logs" / "app.log") == ["to-app"]
    assert bodies(tmp_path / "logs" / "error.log") == ["to-error"]


def test_text_format_fills_templates_from_record_attributes(tmp_path: Path) -> None:
    s = make_sink(tmp_path, path="users/{user.id}/{category}.log", format="text")
    s.start(background=False)
    s.consume(batch_of("hi", attributes={"user.id": "u9"}))
    s.shutdown()
    [line] = (tmp_path / "logs" / "users" / "u9" / "app.log").read_bytes().splitlines()
    assert line.endswith(b"| hi")


def test_spans_and_metrics_use_resource_fields_in_templates(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tests.otlp_builders import key_values

    s = make_sink(tmp_path, path="{service.name}/{category}.log", categories=("traces", "metrics"))
    s.start(background=False)
    traces = ExportTraceServiceRequest()
    rs = traces.resource_spans.add()
    rs.resource.attributes.extend(key_values({"service.name": "api"}))
    rs.scope_spans.add().spans.add(name="op", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    metrics = ExportMetricsServiceRequest()
    rm = metrics.resource_metrics.add()
    rm.resource.attributes.extend(key_values({"service.name": "api"}))
    rm.scope_metrics.add().metrics.add(name="m").gauge.data_points.add(as_int=1)
    for signal, request, category in ((Signal.TRACES, traces, "traces"),
                                      (Signal.METRICS, metrics, "metrics")):
        batch = Batch(signal, request, time.time_ns())
        batch.routes = {category: batch.records()}
        s.consume(batch)
    s.shutdown()
    root = tmp_path / "logs"
    assert all_files(root) == ["api/metrics.log", "api/traces.log"]
    assert json.loads((root / "api" / "traces.log").read_bytes())["name"] == "op"
    assert json.loads((root / "api" / "metrics.log").read_bytes())["name"] == "m"


def test_rollback_reaches_files_the_descriptor_lru_already_closed(tmp_path: Path) -> None:
    """A batch touching more files than max_open_files still rolls back every one of them."""
    calls = {"n": 0}

    def last_write_fails(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    config = FilesConfig(directory=tmp_path, rotation=NO_ROTATION, max_open_files=2, fsync=True)
    cats = {"app": FilePolicy(name="app", path="{user.id}.log", rotation=NO_ROTATION)}
    s = RotatingFileSink(replace(config, categories=cats), ReceiverTelemetry(), write=last_write_fails,
                         disk_usage=lambda _p: (10, 100))
    s.start(background=False)
    request = logs_request(*(log_record(f"r{i}", attributes={"user.id": f"u{i}"}) for i in range(5)))
    batch = Batch(Signal.LOGS, request, time.time_ns())
    batch.routes = {"app": batch.records()}
    with pytest.raises(DiskFullError):
        s.consume(batch)
    s.shutdown()
    assert {p.name: p.stat().st_size for p in tmp_path.glob("*.log")} == {
        f"u{i}.log": 0 for i in range(5)}


def test_max_backups_never_prunes_a_category_kept_forever(tmp_path: Path) -> None:
    rotation = RotationConfig(max_bytes=1024, interval="none", compress=False, max_backups=1)
    config = FilesConfig(directory=tmp_path / "logs", rotation=rotation)
    cats = {
        "audit": FilePolicy(name="audit", rotation=rotation, retention_days=None),
        "app": FilePolicy(name="app", rotation=rotation, retention_days=30),
    }
    s = RotatingFileSink(replace(config, categories=cats), ReceiverTelemetry(), clock=Clock(), disk_usage=lambda _p: (10, 100))
    s.start(background=False)
    for i in range(5):
        for category in ("audit", "app"):
            s.consume(batch_of(*[f"{category}-{i}-{j}-" + "z" * 300 for j in range(2)], category=category))
    s.shutdown()
    files = all_files(tmp_path / "logs")
    assert len([f for f in files if f.startswith("audit.log.")]) == 4
    assert len([f for f in files if f.startswith("app.log.")]) == 1
