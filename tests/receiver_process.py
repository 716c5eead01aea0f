"""A real `sluice receiver run` subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

READY_RE = re.compile(
    r"sluice receiver ready: (?:otlp grpc on (?P<otlp>\S+?), )?(?:otlp http on (?P<http>\S+?), )?"
    r"(?:telemetry on (?P<status>\S+?), )?files under "
)


def endpoints(grpc: str = "127.0.0.1:0", http: str = "127.0.0.1:0") -> dict[str, Any]:
    """The `receivers` section listening where asked ("" leaves a protocol off)."""
    protocols: dict[str, Any] = {}
    if grpc:
        protocols["grpc"] = {"endpoint": grpc}
    if http:
        protocols["http"] = {"endpoint": http}
    return {"otlp": {"protocols": protocols}}


class ReceiverProcess:
    """Starts the receiver CLI with a config written to `workdir`; parses its ready line."""

    def __init__(self, workdir: Path, settings: dict[str, Any] | None = None, *,
                 extra_args: list[str] | None = None, own_group: bool = False) -> None:
        """`own_group`: a process group of its own, as a shell gives a command (a test can then
        signal the receiver and its children together, as Ctrl-C does)."""
        self.workdir = workdir
        self.own_group = own_group
        settings = dict(settings or {})
        settings.setdefault("receivers", endpoints())
        files = dict(settings.get("files") or {})
        files.setdefault("directory", str(workdir / "logs"))
        settings["files"] = files
        settings.setdefault("telemetry", {"listen": "127.0.0.1:0"})
        self.settings = settings
        self.logs_dir = Path(files["directory"])
        self.config_path = workdir / "sluice.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[str] | None = None
        self.stderr_lines: list[str] = []
        self.endpoint = ""  # OTLP/gRPC host:port
        self.http_endpoint = ""  # OTLP/HTTP host:port
        self.status_url = ""
        self._stderr_done = threading.Event()

    def start(self, timeout_s: float = 20.0) -> ReceiverProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sluice_collector", "receiver", "run",
             "--config", str(self.config_path), *self.extra_args],
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=self.own_group,
        )
        ready = threading.Event()
        self._stderr_done = threading.Event()

        def pump() -> None:
            assert self.proc is not None
            assert self.proc.stderr is not None
            try:
                for line in self.proc.stderr:
                    self.stderr_lines.append(line)
                    match = READY_RE.search(line)
                    if match:
                        self.endpoint = match.group("otlp") or ""
                        self.http_endpoint = match.group("http") or ""
                        self.status_url = match.group("status") or ""
                        ready.set()
            finally:
                self._stderr_done.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("receiver did not start:\n" + "".join(self.stderr_lines))
        return self

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Signal the receiver and wait for it to exit; `stderr` then holds all it wrote."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout_s)
        self._stderr_done.wait(timeout_s)  # the pump has read everything up to EOF
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def read(self, category: str) -> list[dict[str, Any]]:
        """Every JSON record of `<logs>/<category>.log` (the active file only)."""
        path = self.logs_dir / f"{category}.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def categories(self) -> list[str]:
        return sorted(p.name.removesuffix(".log") for p in self.logs_dir.glob("*.log"))
