"""sluice_collector.progress: bars on terminals for long CLI work, silence in pipes and CI."""

from __future__ import annotations

import fcntl
import gzip
import io
import json
import os
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from sluice_collector.progress import Progress, enabled, uncompressed_size


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_nothing_and_counting_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    stream = io.StringIO()
    with Progress("indexing", total=100, stream=stream) as progress:
        progress.advance(records=3, nbytes=40)
    assert stream.getvalue() == ""
    assert (progress.records, progress.nbytes) == (3, 40)


def test_a_terminal_gets_a_bar_with_records_bytes_and_rate_but_not_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    terminal = FakeTerminal()
    with Progress("indexing", total=2048, stream=terminal, min_interval_s=0) as progress:
        progress.advance(records=10, nbytes=1024)
    assert "indexing" in terminal.getvalue()
    assert "10 records" in terminal.getvalue()
    monkeypatch.setenv("CI", "true")
    assert not enabled(FakeTerminal())


def test_uncompressed_size_reads_the_gzip_trailer(tmp_path: Path) -> None:
    plain = tmp_path / "a.log"
    plain.write_bytes(b"x" * 1000)
    packed = tmp_path / "a.log.1.gz"
    packed.write_bytes(gzip.compress(b"y" * 5000))
    assert uncompressed_size(plain) == 1000
    assert uncompressed_size(packed) == 5000
    assert uncompressed_size(tmp_path / "missing") == 0


def _rebuild(tmp_path: Path, stderr: int) -> subprocess.CompletedProcess[bytes]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    record = {"timestamp": "2020-01-01T00:00:00Z", "severity": "INFO", "severity_number": 9, "body": "b",
              "category": "app", "service.name": "s", "trace_id": "", "span_id": "", "attributes": {}}
    (logs / "app.log").write_text("".join(json.dumps({**record, "body": f"r{i}"}) + "\n" for i in range(10_000)))
    config = tmp_path / "sluice.yaml"
    config.write_text(f"files:\n  directory: {logs}\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["TERM"] = "xterm"
    return subprocess.run([sys.executable, "-m", "sluice_collector", "index", "rebuild", "--config", str(config)],
                          stdout=subprocess.PIPE, stderr=stderr, timeout=120, env=env)


def test_index_rebuild_shows_progress_on_a_terminal_stderr_and_nothing_in_a_pipe(tmp_path: Path) -> None:
    piped = _rebuild(tmp_path, subprocess.PIPE)
    assert piped.returncode == 0
    assert piped.stdout == b"indexed 10000 records from " + str(tmp_path / "logs").encode() + b"\n"
    assert piped.stderr == b""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, b"\x18\x00\x50\x00\x00\x00\x00\x00")  # 24x80: tqdm needs a width
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            seen.extend(data)

    reader = threading.Thread(target=read)
    reader.start()
    on_terminal = _rebuild(tmp_path, slave)
    os.close(slave)
    reader.join(30)
    os.close(master)
    assert on_terminal.returncode == 0
    assert b"indexing" in seen
    assert b"records" in seen
