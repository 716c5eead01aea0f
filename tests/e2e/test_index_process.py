"""The index process (sinks/index/server.py) as an operator meets it: it ends with the receiver,
and Ctrl-C — which signals every process of the terminal's group, the index process too — stops
both cleanly, with everything acknowledged indexed."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import grpc

from tests.otlp_builders import log_record, logs_request
from tests.receiver_process import ReceiverProcess

EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def _index_processes(workdir: Path) -> list[int]:
    """Index processes whose owner runs with its config in `workdir`."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            owner = (Path("/proc") / str(parent) / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"sluice_collector.sinks.index.server" in cmdline and str(workdir).encode() in owner:
            out.append(int(entry.name))
    return out


def test_ctrl_c_stops_receiver_and_index_process_with_everything_indexed(tmp_path: Path) -> None:
    receiver = ReceiverProcess(
        tmp_path, {"query": {"api_keys": {"ops": {"key": "admin-key-0123456789abcdef",
                                                  "role": "admin"}}}},
        own_group=True).start()
    try:
        assert len(_index_processes(tmp_path)) == 1
        with grpc.insecure_channel(receiver.endpoint) as channel:
            export = channel.unary_unary(EXPORT)
            for batch in range(20):
                records = [log_record(f"r{batch}-{i}") for i in range(50)]
                export(logs_request(*records).SerializeToString(), timeout=30)
        assert receiver.proc is not None
        os.killpg(receiver.proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert receiver.stop(signal.SIGINT) == 0, receiver.stderr
    finally:
        receiver.kill()
    assert "Traceback" not in receiver.stderr, receiver.stderr
    assert _index_processes(tmp_path) == []
    conn = sqlite3.connect(receiver.logs_dir / ".index" / "records.db")
    try:
        bodies = {r[0] for r in conn.execute(
            "SELECT json_extract(line, '$.body') FROM records WHERE category != 'audit'")}
    finally:
        conn.close()
    assert bodies == {f"r{b}-{i}" for b in range(20) for i in range(50)}
