"""`sluice run -- python app.py`: an unmodified program's logs reach the receiver."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.receiver_process import ReceiverProcess

APP = """
import logging
logging.basicConfig(level=logging.INFO)
logging.getLogger("plain.app").warning("zero code changes", extra={"order.id": "Z-1"})
print("app done")
"""


def test_an_unmodified_program_ships_its_logs(tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path).start()
    try:
        (tmp_path / "app.py").write_text(APP)
        result = subprocess.run(
            [sys.executable, "-m", "sluice_collector", "run", "--service-name", "zero-code",
             "--endpoint", f"http://{receiver.endpoint}", "--", sys.executable, str(tmp_path / "app.py")],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "app done" in result.stdout
        assert "zero code changes" in result.stderr  # the app's own basicConfig output still works
        assert receiver.stop(signal.SIGTERM) == 0
    finally:
        receiver.kill()
    records = [r for r in receiver.read("app") if r["body"] == "zero code changes"]
    assert len(records) == 1
    assert records[0]["service.name"] == "zero-code"
    assert records[0]["attributes"]["order.id"] == "Z-1"
    assert records[0]["severity"] == "WARN"


def test_sluice_run_without_a_program_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "sluice_collector", "run"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "sluice run -- python app.py" in result.stderr
