"""The `sluice` command's contract and the receiver's /metrics and /healthz endpoints."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from sluice_collector.service.receiver import Receiver
from sluice_collector.sinks.files.retention import disk_usage
from sluice_collector.sinks.files.sink import RotatingFileSink
from sluice_collector.telemetry import ReceiverTelemetry
from sluice_collector.testing import InMemorySink, config_from, start_receiver
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
    # Only sluice's own line: grpc core's `add_port.cc` error must not come before it.
    assert result.stderr.strip().splitlines() == [
        f"sluice: receivers.otlp.protocols.grpc.endpoint: cannot listen on 127.0.0.1:{port}: "
        "address already in use; pick a free port (or stop what holds it)"
    ], result.stderr
    assert "add_port" not in result.stderr


@pytest.mark.parametrize(("listen", "shown"), [("localhost", "'localhost'"),
                                               ("127.0.0.1:99999", "'127.0.0.1:99999'")])
def test_listen_flag_is_validated_like_the_config_and_exits_2(listen: str, shown: str) -> None:
    """`--listen localhost` once bound :443 and `:99999` wrapped to another port."""
    result = sluice("receiver", "run", "--listen", listen, "--telemetry-listen", "")
    assert result.returncode == 2
    assert f"argument --listen: got {shown}; expected HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr


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


def test_the_viewer_address_says_how_to_turn_it_on_when_the_query_api_is_off() -> None:
    receiver = start_receiver({}, sinks=[InMemorySink()])
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{receiver.status_port}/ui/", timeout=5)
        assert info.value.code == 404
        text = info.value.read().decode()
        assert text.startswith("The viewer is off: it comes with the query API.")
        assert "api_keys:" in text
        assert "docs/viewer.md" in text
    finally:
        receiver.stop(5)


def _keys_with(value: object, word: str, prefix: str = "") -> set[str]:
    """Every key path in a JSON value whose last key contains `word`."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            path = f"{prefix}.{key}" if prefix else key
            if word in key:
                found.add(path)
            found |= _keys_with(inner, word, path)
    return found


def test_healthz_shows_one_disk_figure_the_same_as_the_gauge_and_the_guard(tmp_path: Path) -> None:
    """/healthz once showed two different disk-use numbers for one directory (the file sink's
    and the receiver's, by two definitions). Now there is one, `disk.used_percent`: the file
    sink's probe, the figure the guard compares and `sluice_files_disk_used_percent` exports."""
    config = config_from({"files": {"directory": str(tmp_path), "disk": {"max_used_percent": 80}}})
    usage = [(37, 100)]
    telemetry = ReceiverTelemetry()  # the sink's gauges (an injected sink brings its own)
    receiver = Receiver(config, sinks=[RotatingFileSink(config.files, telemetry,
                                                        disk_usage=lambda _p: usage[0])])
    receiver.start()
    try:
        base = f"http://127.0.0.1:{receiver.status_port}"
        body = json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=5).read())
        assert _keys_with(body, "percent") == {"disk.used_percent", "disk.max_used_percent"}
        assert body["disk"] == {"path": str(tmp_path.resolve()), "used_percent": 37.0,
                                "available_bytes": 63, "max_used_percent": 80.0}
        assert telemetry.registry.get_sample_value("sluice_files_disk_used_percent") == 37.0
        assert body["sinks"]["files"]["disk_over_limit"] is False
        usage[0] = (91, 100)  # over the guard: the same figure says so everywhere
        body = json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=5).read())
        assert body["disk"]["used_percent"] == 91.0
        assert telemetry.registry.get_sample_value("sluice_files_disk_used_percent") == 91.0
        assert body["sinks"]["files"]["state"] == "degraded"
        assert body["sinks"]["files"]["disk_over_limit"] is True
    finally:
        receiver.stop(5)


def test_the_disk_figure_counts_what_the_receiver_cannot_write_to(tmp_path: Path) -> None:
    """The definition: (total − space available to an unprivileged process) / total, the
    reserved blocks counted as used, so 100 % means the next write fails."""
    st = os.statvfs(tmp_path)
    used, total = disk_usage(tmp_path)
    assert total == st.f_blocks * st.f_frsize
    # Other processes write meanwhile: the two probes agree to within a few MiB.
    assert abs((total - used) - st.f_bavail * st.f_frsize) < 64 * 1024 * 1024
    receiver = start_receiver({"files": {"directory": str(tmp_path / "not-yet")}}, sinks=[InMemorySink()])
    try:
        body = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{receiver.status_port}/healthz", timeout=5).read())
    finally:
        receiver.stop(5)
    # No file sink: the same definition on the real file system, for the directory to be.
    assert _keys_with(body, "percent") == {"disk.used_percent", "disk.max_used_percent"}
    assert body["disk"]["path"] == str((tmp_path / "not-yet").resolve())
    assert 0 < body["disk"]["used_percent"] <= 100


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
