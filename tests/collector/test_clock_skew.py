"""A receiver whose clock disagrees with the file system's: ages and periods of files are read
on the clock that stamped them. Run for real under Debian's libfaketime, which fakes the
process clock but not file timestamps (as a stepped clock or an NFS server would)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FAKETIME = shutil.which("faketime")
pytestmark = pytest.mark.skipif(FAKETIME is None, reason="faketime is not installed (make test installs it)")
REPO = Path(__file__).resolve().parents[2]


def run_faked(code: str, offset: str = "+60d") -> str:
    env = {**os.environ, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           "PYTHONPATH": f"{REPO / 'tests' / 'faketime'}:{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([FAKETIME, "-f", offset, sys.executable, "-c", textwrap.dedent(code)],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_fresh_rotated_file_is_not_swept_by_a_clock_two_months_ahead(tmp_path: Path) -> None:
    fresh = tmp_path / "app.log.2026-01-01.1.gz"
    fresh.write_bytes(b"x")
    old = tmp_path / "app.log.2026-01-01.2.gz"
    old.write_bytes(b"x")
    aged = old.stat().st_mtime - 31 * 86400  # 31 days old on the file system's clock
    os.utime(old, (aged, aged))
    out = run_faked(f"""
        import time
        from pathlib import Path
        from sluice_collector.service.config import parse_config
        from sluice_collector.sinks.files.retention import RetentionSweeper
        from sluice_collector.telemetry import ReceiverTelemetry
        config = parse_config("files: {{directory: {tmp_path}}}")
        sweeper = RetentionSweeper(config.files, config.files.categories, ReceiverTelemetry())
        assert time.time() > Path({str(fresh)!r}).stat().st_mtime + 59 * 86400  # really faked
        print(sorted(p.name for p in sweeper.sweep_age()))
    """)
    assert out.strip() == "['app.log.2026-01-01.2.gz']"
    assert fresh.exists()


def test_a_file_found_at_start_keeps_its_period_when_the_clock_disagrees(tmp_path: Path) -> None:
    """No spurious rotation after a restart: the file's last write is read on our clock."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text('{"body":"before the restart"}\n')
    run_faked(f"""
        from sluice_collector.service.config import parse_config
        from sluice_collector.service.receiver import Receiver
        from sluice_collector.batch import Signal
        from sluice_collector.ingest.decode import decode_request
        from tests.otlp_builders import log_record, logs_request
        receiver = Receiver(parse_config("files: {{directory: {logs}}}\\ntelemetry: {{listen: ''}}\\n"
                                         "receivers: {{otlp: {{protocols: {{grpc: {{endpoint: '127.0.0.1:0'}}}}}}}}"))
        receiver.start()
        data = logs_request(log_record("after the restart")).SerializeToString()
        receiver.pipeline.process(decode_request(Signal.LOGS, data, max_bytes=1 << 20))
        receiver.stop(5)
    """)
    assert sorted(p.name for p in logs.iterdir() if not p.name.startswith(".")) == ["app.log"]
    assert (logs / "app.log").read_text().count("\n") == 2
