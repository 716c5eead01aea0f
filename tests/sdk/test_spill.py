"""The spill directory holds records before any masking: it must be this user's private directory."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice import _health
from sluice._spill import SpillQueue

RECORD = [("app", b"password=hunter3")]


@pytest.fixture(autouse=True)
def fresh_health() -> Iterator[None]:
    _health.reset()
    yield
    _health.reset()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_new_spill_directory_is_0700_and_its_files_0600_whatever_the_umask(tmp_path: Path) -> None:
    directory = tmp_path / "sluice-spill-svc"
    previous = os.umask(0o022)
    try:
        assert SpillQueue(directory, 1_000_000).put(RECORD)
    finally:
        os.umask(previous)
    assert mode(directory) == 0o700
    [spilled] = directory.iterdir()
    assert mode(spilled) == 0o600


def test_our_readable_directory_from_an_older_version_is_tightened_with_its_files(tmp_path: Path) -> None:
    directory = tmp_path / "spill"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    old = directory / "00000000000000000001-1.spill"
    old.write_bytes(b"")
    old.chmod(0o644)
    assert SpillQueue(directory, 1_000_000).put(RECORD)
    assert mode(directory) == 0o700
    assert {mode(p) for p in directory.iterdir()} == {0o600}


@pytest.mark.parametrize("bad_mode", [0o777, 0o775, 0o1777])
def test_a_directory_others_can_write_is_refused_warned_once_and_counted(
    tmp_path: Path, bad_mode: int, caplog: pytest.LogCaptureFixture,
) -> None:
    directory = tmp_path / "spill"
    directory.mkdir()
    directory.chmod(bad_mode)
    spill = SpillQueue(directory, 1_000_000)
    with caplog.at_level(logging.WARNING, logger="sluice.internal"):
        assert not spill.put(RECORD)
        assert not spill.put(RECORD)
    assert list(directory.iterdir()) == []
    assert mode(directory) == bad_mode  # not ours to repair: someone else may already be inside
    warnings = [r.getMessage() for r in caplog.records if "spill directory" in r.getMessage()]
    assert len(warnings) == 1
    assert "writable by group or others" in warnings[0]
    assert "SLUICE_SPILL_DIR" in warnings[0]
    assert _health.counters["spill.refused"] == 2


def test_a_symbolic_link_is_refused_and_nothing_lands_where_it_points(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "spill"
    link.symlink_to(target)
    spill = SpillQueue(link, 1_000_000)
    assert not spill.put(RECORD)
    assert list(target.iterdir()) == []
    assert spill.claim() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user owns needs root")
def test_a_directory_owned_by_another_user_is_neither_written_nor_replayed(tmp_path: Path) -> None:
    """The attack: another local user creates /tmp/sluice-spill-<service> first, to read what
    the app spills or to plant records that the app would replay as its own."""
    directory = tmp_path / "spill"
    directory.mkdir(mode=0o700)
    SpillQueue(directory, 1_000_000).put(RECORD)  # a planted file
    os.chown(directory, 65534, 65534)
    spill = SpillQueue(directory, 1_000_000)
    assert not spill.put(RECORD)
    assert len(list(directory.iterdir())) == 1
    assert spill.claim() is None
    assert _health.counters["errors.spill_unsafe"] >= 1


def test_a_private_directory_spills_and_replays_as_before(tmp_path: Path) -> None:
    spill = SpillQueue(tmp_path / "spill", 1_000_000)
    assert spill.put(RECORD)
    claimed = spill.claim()
    assert claimed is not None
    assert claimed.entries == RECORD
