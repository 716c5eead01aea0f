"""One receiver per `files.directory` (service/dirlock.py): a second receiver, a `--workers`
supervisor's rival, or `sluice index rebuild` under a running receiver is refused with a line
naming the directory and the holder, and the running receiver keeps answering queries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import yaml

from tests.otlp_builders import log_record, logs_request
from tests.receiver_process import ReceiverProcess, endpoints

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
ADMIN = "admin-key-dirlock-0123456789"


def _settings(logs: Path) -> dict[str, Any]:
    return {"files": {"directory": str(logs)},
            "query": {"api_keys": {"ops": {"key": ADMIN, "role": "admin"}}}}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sluice_collector", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SLUICE_API_KEY": ADMIN})


def _send(endpoint: str, body: str) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        channel.unary_unary(LOGS_EXPORT)(logs_request(log_record(body)).SerializeToString(), timeout=30)


def _query(endpoint: str, text: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _cli("logs", "query", "--endpoint", endpoint, "--text", text, "--json", cwd=cwd)


def test_a_second_receiver_and_a_rebuild_are_refused_while_one_runs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (tmp_path / "a").mkdir()
    first = ReceiverProcess(tmp_path / "a", _settings(logs)).start()
    try:
        _send(first.endpoint, "before the rival")
        rival_config = tmp_path / "rival.yaml"
        rival_config.write_text(yaml.safe_dump({**_settings(logs), "receivers": endpoints(),
                                                "telemetry": {"listen": ""}}))
        rival = _cli("receiver", "run", "--config", str(rival_config), cwd=tmp_path)
        assert rival.returncode == 1
        assert rival.stderr.strip().splitlines()[-1] == (
            f"sluice: files.directory {logs} is in use by another receiver (pid {first.proc.pid}); "  # type: ignore[union-attr]
            "stop it first, or give this one a directory of its own")
        rebuild = _cli("index", "rebuild", "--config", str(rival_config), cwd=tmp_path)
        assert rebuild.returncode == 1
        assert f"is in use by a running receiver (pid {first.proc.pid})" in rebuild.stderr  # type: ignore[union-attr]
        # The first one was not disturbed: what it stores now is still found.
        _send(first.endpoint, "after the rival")
        for text in ("before the rival", "after the rival"):
            found = _query(first.endpoint, text, tmp_path)
            assert found.returncode == 0, found.stderr
            assert text in found.stdout
    finally:
        first.stop()
    # Once it stopped, the directory is free again: a rebuild runs.
    rebuild = _cli("index", "rebuild", "--config", str(rival_config), cwd=tmp_path)
    assert rebuild.returncode == 0, rebuild.stderr


def test_workers_hold_the_directory_for_their_supervisor(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    supervisor = ReceiverProcess(tmp_path, {"files": {"directory": str(logs)}},
                                 extra_args=["--workers", "2"]).start()
    try:
        _send(supervisor.endpoint, "through a worker")
        config = tmp_path / "other.yaml"
        config.write_text(yaml.safe_dump({"files": {"directory": str(logs)}, "receivers": endpoints(),
                                          "telemetry": {"listen": ""}}))
        rival = _cli("receiver", "run", "--config", str(config), cwd=tmp_path)
        assert rival.returncode == 1
        assert f"is in use by another receiver (pid {supervisor.proc.pid})" in rival.stderr  # type: ignore[union-attr]
    finally:
        assert supervisor.stop() == 0
