"""A real Prometheus and a real Alertmanager (Debian's binaries) for end-to-end tests.

Each runs in the foreground with its own config and data directory under a test's tmp_path,
listening on a free 127.0.0.1 port; its output goes to a log file next to them, which a failing
assertion shows. Nothing here sleeps for a fixed time: `wait_for` polls a condition until a
deadline and says what it last saw.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
AMTOOL = "/usr/bin/amtool"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(probe: Callable[[], T | None], what: str, *, timeout_s: float = 60.0,
             poll_s: float = 0.2, alive: Callable[[], None] | None = None,
             show: Callable[[], Any] | None = None) -> T:
    """Call `probe` until it returns something truthy and return that; `alive` raises when a
    process the wait depends on has died; `show` says what to report on a timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            last = probe()
        except (OSError, ValueError) as exc:  # not listening yet, or a half-written answer
            last = exc
        else:
            if last:
                return last
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}; last saw: {show() if show else last!r}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


class _Daemon:
    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    def start(self, timeout_s: float = 30.0) -> _Daemon:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self._args(), stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, f"{self.name} to be ready", timeout_s=timeout_s, alive=self.check_alive)
        return self

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class PrometheusProcess(_Daemon):
    """`prometheus` with the given config (a dict, written as YAML) on a free port."""

    name = "prometheus"

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        super().__init__(workdir)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _args(self) -> list[str]:
        return [PROMETHEUS, f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = get_json(f"{self.url}/api/v1/query?query={urllib.parse.quote(expr)}")
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) with their labels, from /api/v1/alerts."""
        alerts: list[dict[str, Any]] = get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return alerts


class AlertmanagerProcess(_Daemon):
    """`alertmanager` with a config file, clustering off, on a free port."""

    name = "alertmanager"

    def __init__(self, workdir: Path, config_file: Path) -> None:
        super().__init__(workdir)
        self.config_file = config_file

    def _args(self) -> list[str]:
        return [ALERTMANAGER, f"--config.file={self.config_file}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address="]  # no gossip port: a single instance

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds, from its v2 API."""
        try:
            alerts: list[dict[str, Any]] = get_json(f"{self.url}/api/v2/alerts")
        except urllib.error.HTTPError:
            return []
        return alerts
