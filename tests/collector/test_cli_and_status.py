"""The `sluice` command's contract and the receiver's /metrics and /healthz endpoints."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from sluice_collector.testing import InMemorySink, start_receiver
from tests.otlp_builders import log_record, logs_request


def sluice(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sluice_collector", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def test_help_lists_every_receiver_subcommand() -> None:
    out = sluice("receiver", "--help").stdout
    for sub in ("run", "check-config", "default-config"):
        assert sub in out
    run_help = sluice("receiver", "run", "--help").stdout
    for flag in ("--config", "--listen", "--log-level"):
        assert flag in run_help


def test_default_config_is_printed_and_valid(tmp_path: Path) -> None:
    text = sluice("receiver", "default-config").stdout
    assert "endpoint: 127.0.0.1:4317" in text
    assert "endpoint: 127.0.0.1:4318" in text
    (tmp_path / "d.yaml").write_text(text)
    assert sluice("receiver", "check-config", str(tmp_path / "d.yaml")).returncode == 0


def test_run_with_an_invalid_config_exits_3_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("queue: {max_requests: -1}\n")
    result = sluice("receiver", "run", "--config", str(tmp_path / "bad.yaml"))
    assert result.returncode == 3
    assert "queue.max_requests: got -1" in result.stderr


def test_run_on_a_busy_port_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "c.yaml").write_text(
            f"receivers: {{otlp: {{protocols: {{grpc: {{endpoint: '127.0.0.1:{port}'}}}}}}}}\n"
            f"telemetry: {{listen: ''}}\nfiles: {{directory: {tmp_path}/logs}}\n"
        )
        result = sluice("receiver", "run", "--config", str(tmp_path / "c.yaml"))
    assert result.returncode == 1
    assert f"grpc.endpoint: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_version_is_printed() -> None:
    assert sluice("version").stdout.startswith("sluice ")


def test_metrics_count_requests_records_and_categories() -> None:
    sink = InMemorySink()
    receiver = start_receiver({}, sinks=[sink])
    try:
        with grpc.insecure_channel(receiver.endpoint) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            export(logs_request(log_record("a"), log_record("b", severity=17)).SerializeToString(), timeout=5)
            with pytest.raises(grpc.RpcError):
                export(b"\xff", timeout=5)
        text = urllib.request.urlopen(f"http://127.0.0.1:{receiver.status_port}/metrics", timeout=5).read().decode()
    finally:
        receiver.stop(5)
    assert 'sluice_requests_total{outcome="OK",signal="logs"} 1.0' in text
    assert 'sluice_requests_total{outcome="INVALID_ARGUMENT",signal="logs"} 1.0' in text
    assert 'sluice_records_received_total{signal="logs"} 2.0' in text
    assert 'sluice_sink_write_seconds_count{sink="memory"} 1.0' in text
    assert "sluice_queue_batches 0.0" in text


def test_healthz_reports_sinks_and_turns_503_when_stopping() -> None:
    receiver = start_receiver({}, sinks=[InMemorySink()])
    url = f"http://127.0.0.1:{receiver.status_port}/healthz"
    try:
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert body["status"] == "ok"
        assert body["sinks"]["memory"]["state"] == "ok"
        assert "used_percent" in body["disk"]
        healthy, details = receiver.health()
        assert healthy
        receiver._stopping = True  # the state stop() enters first
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=5)
        assert info.value.code == 503
    finally:
        receiver._stopping = False
        receiver.stop(5)


def test_unknown_paths_are_404() -> None:
    receiver = start_receiver({}, sinks=[InMemorySink()])
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{receiver.status_port}/nope", timeout=5)
        assert info.value.code == 404
    finally:
        receiver.stop(5)


def test_http_listen_overrides_the_otlp_http_endpoint_and_the_ready_line_names_it(tmp_path: Path) -> None:
    from tests.receiver_process import ReceiverProcess

    (tmp_path / "a").mkdir()
    # The config file turns OTLP/HTTP off; the flag turns it back on.
    with_http = ReceiverProcess(tmp_path / "a", {"receivers": {"otlp": {"protocols": {"grpc": {}}}}},
                                extra_args=["--http-listen", "127.0.0.1:0"]).start()
    try:
        assert with_http.http_endpoint.startswith("127.0.0.1:")
        assert f"otlp grpc on {with_http.endpoint}, otlp http on {with_http.http_endpoint}, telemetry on" \
            in with_http.stderr
        health = json.loads(urllib.request.urlopen(with_http.status_url + "/healthz", timeout=5).read())
        assert health["front_doors"] == {"otlp_grpc": with_http.endpoint, "otlp_http": with_http.http_endpoint}
    finally:
        with_http.kill()
    (tmp_path / "b").mkdir()
    without = ReceiverProcess(tmp_path / "b", extra_args=["--http-listen", ""]).start()
    try:
        assert without.http_endpoint == ""
        assert "otlp http" not in without.stderr
    finally:
        without.kill()


def test_check_config_lists_the_http_front_door(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text("receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:4999'}}}}\n")
    done = sluice("receiver", "check-config", str(config))
    assert done.returncode == 0, done.stderr
    assert "otlp http: 127.0.0.1:4999" in done.stdout
