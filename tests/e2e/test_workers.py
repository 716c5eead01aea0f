"""`--workers N`: several processes on one port share the category files without losing,
splitting or duplicating a line, even while they rotate them."""

from __future__ import annotations

import gzip
import json
import signal
import threading
from pathlib import Path

import grpc

from tests.otlp_builders import log_record, logs_request
from tests.receiver_process import ReceiverProcess

EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def read_all_lines(directory: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path.name} ends in a partial line"
        lines.extend(data.splitlines())
    return lines


def test_two_workers_share_files_and_rotation_without_losing_a_line(tmp_path: Path) -> None:
    receiver = ReceiverProcess(
        tmp_path, {"files": {"rotation": {"max_bytes": "64KiB", "compress": True}}},
        extra_args=["--workers", "2"],
    ).start()
    threads, per_thread, per_request = 6, 15, 40

    def client(index: int) -> None:
        # A connection of its own per client, so the kernel spreads them over the workers.
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(receiver.endpoint, options=options) as channel:
            export = channel.unary_unary(EXPORT)
            for n in range(per_thread):
                records = [log_record(f"c{index}-r{n}-{i}", attributes={"seq": f"{index}/{n}/{i}"})
                           for i in range(per_request)]
                export(logs_request(*records).SerializeToString(), timeout=30)

    try:
        workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr
    finally:
        receiver.kill()

    lines = read_all_lines(receiver.logs_dir)
    bodies = [json.loads(line)["body"] for line in lines]
    expected = {f"c{t}-r{n}-{i}" for t in range(threads) for n in range(per_thread) for i in range(per_request)}
    assert len(bodies) == len(expected), "lines were lost or duplicated"
    assert set(bodies) == expected
    rotated = [p for p in receiver.logs_dir.iterdir() if ".log." in p.name]
    assert rotated, "the test did not exercise rotation"
    assert "2 workers" in receiver.stderr


def test_workers_share_the_otlp_http_port_too(tmp_path: Path) -> None:
    import re
    import urllib.request

    from tests.http_client import request

    receiver = ReceiverProcess(tmp_path, extra_args=["--workers", "2"]).start()
    try:
        assert receiver.http_endpoint, receiver.stderr
        for n in range(40):  # a fresh connection each: the kernel spreads them over the workers
            reply = request(receiver.http_endpoint, body=logs_request(log_record(f"h{n}")).SerializeToString())
            assert reply.status == 200
        urls = re.search(r"telemetry per worker: (\S+) (\S+)\)", receiver.stderr)
        assert urls, receiver.stderr
        served = []
        for url in urls.groups():
            text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
            ok = re.search(r'sluice_requests_total\{outcome="OK",signal="logs"\} (\S+)', text)
            served.append(float(ok.group(1)) if ok else 0.0)
        assert sum(served) == 40
        assert all(served), f"one worker served every connection: {served}"  # 2**-39 by chance
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr
    finally:
        receiver.kill()
    bodies = {json.loads(line)["body"] for line in read_all_lines(receiver.logs_dir)}
    assert bodies == {f"h{n}" for n in range(40)}


def _metric_sum(url: str, pattern: str) -> float:
    import re
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(value) for value in re.findall(pattern + r" (\S+)", text))


def test_one_connection_uses_every_worker(tmp_path: Path) -> None:
    """An upstream Collector sends everything over one connection, which the kernel gives to
    one worker: that worker hands requests to the idle one while its own turn is taken
    (ingest/peers.py). Every request is answered by the worker that holds the connection, the
    records are written by both, each exactly once."""
    import re

    receiver = ReceiverProcess(tmp_path, extra_args=["--workers", "2"]).start()
    streams, per_stream, per_request = 8, 8, 100
    try:
        with grpc.insecure_channel(receiver.endpoint) as channel:
            export = channel.unary_unary(EXPORT)

            def stream(index: int) -> None:
                for n in range(per_stream):
                    records = [log_record(f"s{index}-r{n}-{i}") for i in range(per_request)]
                    export(logs_request(*records).SerializeToString(), timeout=60)

            threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
                assert not thread.is_alive(), "a stream never finished"
        urls = re.search(r"telemetry per worker: (\S+) (\S+)\)", receiver.stderr)
        assert urls, receiver.stderr
        answered = [_metric_sum(url, r'sluice_requests_total\{outcome="OK",signal="logs"\}')
                    for url in urls.groups()]
        stored = [_metric_sum(url, r'sluice_records_accepted_total\{[^}]*signal="logs"[^}]*\}')
                  for url in urls.groups()]
        assert sorted(answered) == [0, streams * per_stream], "not one connection to one worker"
        assert sum(stored) == streams * per_stream * per_request
        # 64 requests from 8 concurrent streams: the holder's turn was never once taken when
        # another arrived only by a vanishing chance.
        assert all(stored), f"one worker did all the work: {stored}"
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr
    finally:
        receiver.kill()
    bodies = [json.loads(line)["body"] for line in read_all_lines(receiver.logs_dir)]
    expected = {f"s{t}-r{n}-{i}" for t in range(streams) for n in range(per_stream)
                for i in range(per_request)}
    assert len(bodies) == len(expected)
    assert set(bodies) == expected


def test_sigterm_while_workers_start_is_a_clean_stop(tmp_path: Path) -> None:
    """systemd may stop a service the moment it started: the supervisor stops its workers and
    exits 0, without calling it a failed start and without leaving a worker behind."""
    import subprocess
    import sys
    import time

    import yaml

    from tests.receiver_process import endpoints

    config = tmp_path / "sluice.yaml"
    config.write_text(yaml.safe_dump({"receivers": endpoints(), "files": {"directory": str(tmp_path / "logs")},
                                      "telemetry": {"listen": ""}}))
    proc = subprocess.Popen([sys.executable, "-m", "sluice_collector", "receiver", "run",
                             "--config", str(config), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def children() -> list[int]:
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == proc.pid:
                out.append(int(stat.parent.name))
        return out

    try:
        while len(children()) < 2:  # both workers spawned: they take a while to import
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.01)
        spawned = children()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "did not start" not in stderr
    assert not any(Path(f"/proc/{pid}").exists() for pid in spawned)


def test_workers_share_one_index_that_follows_their_files(tmp_path: Path) -> None:
    """With `--workers 2` one index process follows the files both write: a read on any worker
    finds every record acknowledged before it (by either worker), and a tail on one worker is
    pushed the other worker's records — nothing polls the index any more."""
    from sluice_collector.query._proto import query_pb2 as pb

    admin = "admin-key-0123456789abcdef"
    receiver = ReceiverProcess(
        tmp_path, {"files": {"rotation": {"max_bytes": "64KiB", "compress": True}},
                   "query": {"api_keys": {"ops": {"key": admin, "role": "admin"}},
                             "max_queries": 8, "max_queries_per_key": 8}},
        extra_args=["--workers", "2"],
    ).start()
    threads, per_thread, per_request = 4, 10, 30
    expected = {f"c{t}-r{n}-{i}" for t in range(threads) for n in range(per_thread)
                for i in range(per_request)}
    options = [("grpc.use_local_subchannel_pool", 1)]
    tailed: set[str] = set()
    subscribed, complete = threading.Event(), threading.Event()
    tail_channel = grpc.insecure_channel(receiver.endpoint, options=options)
    tail = tail_channel.unary_stream(
        "/sluice.v1.LogQuery/Tail", request_serializer=pb.TailRequest.SerializeToString,
        response_deserializer=pb.TailResponse.FromString)(
        pb.TailRequest(filter=pb.Filter(categories=["app"])), metadata=[("x-api-key", admin)],
        timeout=120)

    def read_tail() -> None:
        try:
            for message in tail:
                subscribed.set()
                tailed.update(json.loads(r.line)["body"] for r in message.records)
                if expected <= tailed:
                    complete.set()
                    return
        except grpc.RpcError:
            pass

    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            send_and_read(index)
        except BaseException as exc:
            errors.append(exc)
            raise

    def send_and_read(index: int) -> None:
        with grpc.insecure_channel(receiver.endpoint, options=options) as channel:
            export = channel.unary_unary(EXPORT)
            query = channel.unary_unary(
                "/sluice.v1.LogQuery/Query", request_serializer=pb.QueryRequest.SerializeToString,
                response_deserializer=pb.QueryResponse.FromString)
            for n in range(per_thread):
                bodies = [f"c{index}-r{n}-{i}" for i in range(per_request)]
                export(logs_request(*[log_record(b) for b in bodies]).SerializeToString(), timeout=30)
                found = query(pb.QueryRequest(filter=pb.Filter(text=f'"c{index}-r{n}-'), limit=100),
                              metadata=[("x-api-key", admin)], timeout=30)
                assert sorted(json.loads(r.line)["body"] for r in found.records) == sorted(bodies)

    try:
        reader = threading.Thread(target=read_tail, daemon=True)
        reader.start()
        assert subscribed.wait(30)
        clients = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(120)
        assert not errors
        assert complete.wait(60), f"the tail got {len(tailed)} of {len(expected)} records"
        tail.cancel()
        tail_channel.close()
        assert receiver.stop(signal.SIGTERM) == 0, receiver.stderr
    finally:
        receiver.kill()
    assert tailed == expected
