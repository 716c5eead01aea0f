"""Retention: rotated files go by age per category and, under disk pressure, shortest retention
first — never a forever category (audit), never an active file. Clock and disk probe injected."""

from __future__ import annotations

import os
from pathlib import Path

from sluice_collector.service.config import parse_config
from sluice_collector.sinks.files.config import DiskGuardConfig, FilePolicy, FilesConfig
from sluice_collector.sinks.files.retention import RetentionSweeper
from sluice_collector.telemetry import ReceiverTelemetry

NOW = 1_800_000_000.0
DAY = 86400.0


def categories(**retention: int | None) -> dict[str, FilePolicy]:
    return {name: FilePolicy(name=name, retention_days=days) for name, days in retention.items()}


def touch(root: Path, rel: str, age_days: float, size: int = 10) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    mtime = NOW - age_days * DAY
    os.utime(path, (mtime, mtime))
    return path


def remaining(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_age_sweep_removes_only_files_older_than_their_category_retention(tmp_path: Path) -> None:
    cats = categories(app=30, access=90, audit=None)
    touch(tmp_path, "app.log", 100)  # active file: never touched, however old
    touch(tmp_path, "app.log.2026-01-01.1.gz", 31)
    touch(tmp_path, "app.log.2026-01-20.1.gz", 29)
    touch(tmp_path, "access.log.2026-01-01.1.gz", 31)
    touch(tmp_path, "access.log.2025-10-01.3", 91)
    touch(tmp_path, "audit.log.2020-01-01.1.gz", 3000)
    touch(tmp_path, "notes.txt.2020-01-01.1", 3000)  # no category owns it: left alone
    telemetry = ReceiverTelemetry()
    sweeper = RetentionSweeper(FilesConfig(directory=tmp_path), cats, telemetry, clock=lambda: NOW)
    removed = sweeper.sweep_age()
    assert sorted(p.name for p in removed) == ["access.log.2025-10-01.3", "app.log.2026-01-01.1.gz"]
    assert remaining(tmp_path) == [
        "access.log.2026-01-01.1.gz", "app.log", "app.log.2026-01-20.1.gz",
        "audit.log.2020-01-01.1.gz", "notes.txt.2020-01-01.1",
    ]
    assert telemetry.retention_removed.labels(category="app", reason="age")._value.get() == 1


def test_builtin_audit_category_is_kept_forever(tmp_path: Path) -> None:
    cats = dict(parse_config("{}").files.categories)
    assert cats["audit"].retention_days is None
    touch(tmp_path, "audit.log.2000-01-01.1.gz", 10_000)
    sweeper = RetentionSweeper(FilesConfig(directory=tmp_path), cats, ReceiverTelemetry(),
                               clock=lambda: NOW)
    assert sweeper.sweep_age() == []
    assert remaining(tmp_path) == ["audit.log.2000-01-01.1.gz"]


def test_templated_paths_map_back_to_their_category_by_name(tmp_path: Path) -> None:
    cats = {
        "app": FilePolicy(name="app", path="users/{user.id}/{category}.log", retention_days=7),
        "audit": FilePolicy(name="audit", path="users/{user.id}/{category}.log", retention_days=None),
    }
    touch(tmp_path, "users/u1/app.log.2026-01-01.1.gz", 8)
    touch(tmp_path, "users/u1/audit.log.2026-01-01.1.gz", 8)
    touch(tmp_path, "users/u%2F2/app.log.2026-01-01.2", 8)
    touch(tmp_path, "app.log.2026-01-01.1.gz", 8)  # fallback path {category}.log
    sweeper = RetentionSweeper(FilesConfig(directory=tmp_path), cats, ReceiverTelemetry(),
                               clock=lambda: NOW)
    assert sweeper.category_of("users/u1/app.log") == ("app", 7)
    sweeper.sweep_age()
    assert remaining(tmp_path) == ["users/u1/audit.log.2026-01-01.1.gz"]


def test_ambiguous_file_takes_the_longest_retention(tmp_path: Path) -> None:
    """Two categories writing to the same template: the file is kept as long as either needs."""
    cats = {
        "app": FilePolicy(name="app", path="shared.log", retention_days=7),
        "security": FilePolicy(name="security", path="shared.log", retention_days=365),
    }
    sweeper = RetentionSweeper(FilesConfig(directory=tmp_path), cats, ReceiverTelemetry())
    assert sweeper.category_of("shared.log") == ("security", 365)


class FakeDisk:
    """Disk usage = bytes of the files under root + a fixed base, out of `total`."""

    def __init__(self, root: Path, base: int, total: int) -> None:
        self.root, self.base, self.total = root, base, total
        self.probes = 0

    def __call__(self, _path: Path) -> tuple[int, int]:
        self.probes += 1
        used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return self.base + used, self.total


def test_disk_pressure_removes_shortest_retention_oldest_first_until_under_threshold(
    tmp_path: Path,
) -> None:
    cats = categories(app=30, security=365, access=90, audit=None)
    touch(tmp_path, "app.log", 0, 100)
    touch(tmp_path, "audit.log.2026-01-01.1.gz", 900, 100)
    touch(tmp_path, "security.log.2026-01-01.1.gz", 20, 100)
    touch(tmp_path, "access.log.2026-01-01.1.gz", 10, 100)
    touch(tmp_path, "app.log.2026-01-02.1.gz", 2, 100)
    touch(tmp_path, "app.log.2026-01-01.1.gz", 3, 100)
    touch(tmp_path, "app.log.2026-01-01.2.gz", 1, 100)
    # 700 bytes of files + 0 base out of 1000: 70 %; threshold 45 % → 300 bytes must go.
    disk = FakeDisk(tmp_path, 0, 1000)
    config = FilesConfig(directory=tmp_path, disk=DiskGuardConfig(max_used_percent=45))
    telemetry = ReceiverTelemetry()
    sweeper = RetentionSweeper(config, cats, telemetry, disk_usage=disk, clock=lambda: NOW)
    removed = sweeper.relieve_pressure()
    assert [p.name for p in removed] == [
        "app.log.2026-01-01.1.gz", "app.log.2026-01-02.1.gz", "app.log.2026-01-01.2.gz",
    ]
    assert disk(tmp_path)[0] == 400
    telemetry_count = telemetry.retention_removed.labels(category="app", reason="disk_pressure")
    assert telemetry_count._value.get() == 3


def test_disk_pressure_never_removes_audit_or_active_files_even_if_still_over(tmp_path: Path) -> None:
    cats = categories(app=30, audit=None)
    touch(tmp_path, "app.log", 0, 100)
    touch(tmp_path, "audit.log", 0, 100)
    touch(tmp_path, "audit.log.2026-01-01.1.gz", 900, 100)
    touch(tmp_path, "app.log.2026-01-01.1.gz", 1, 100)
    config = FilesConfig(directory=tmp_path, disk=DiskGuardConfig(max_used_percent=10))
    sweeper = RetentionSweeper(config, cats, ReceiverTelemetry(), disk_usage=FakeDisk(tmp_path, 0, 400))
    assert [p.name for p in sweeper.relieve_pressure()] == ["app.log.2026-01-01.1.gz"]
    assert remaining(tmp_path) == ["app.log", "audit.log", "audit.log.2026-01-01.1.gz"]
    assert "no rotated file left" in sweeper.last_error


def test_under_threshold_nothing_is_removed(tmp_path: Path) -> None:
    touch(tmp_path, "app.log.2026-01-01.1.gz", 1, 100)
    config = FilesConfig(directory=tmp_path)
    sweeper = RetentionSweeper(config, categories(app=30), ReceiverTelemetry(),
                               disk_usage=lambda _p: (50, 100))
    assert sweeper.run_once() == []


def test_background_sweeper_runs_at_start_and_stops(tmp_path: Path) -> None:
    touch(tmp_path, "app.log.2026-01-01.1.gz", 40)
    sweeper = RetentionSweeper(FilesConfig(directory=tmp_path), categories(app=30),
                               ReceiverTelemetry(), clock=lambda: NOW, disk_usage=lambda _p: (1, 100))
    sweeper.start()
    sweeper.stop()
    assert remaining(tmp_path) == []
