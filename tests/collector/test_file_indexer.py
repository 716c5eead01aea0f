"""The index follows the files (sinks/index/fileindexer.py): off the acknowledgement path, yet
every acknowledged line is indexed exactly once — across rotations, gzip, restarts and crashes —
and nothing the files refused is indexed. The oracle is `rebuild`: the index of a directory
must hold the very rows a rebuild from its files derives."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sluice_collector.batch import Signal
from sluice_collector.errors import SinkError
from sluice_collector.ingest import Caller, Encoding
from sluice_collector.query.store import IndexStore, Row, rebuild
from sluice_collector.service.receiver import Receiver
from sluice_collector.sinks.files.sink import RotatingFileSink
from sluice_collector.sinks.index.client import IndexClient
from sluice_collector.sinks.index.server import address
from sluice_collector.testing import start_receiver
from tests.otlp_builders import log_record, logs_request

T0 = 1_700_000_000_000_000_000


def _settings(directory: Path, **files: Any) -> dict[str, Any]:
    return {
        "telemetry": {"listen": ""},
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "files": {"directory": str(directory), **files},
        "query": {"api_keys": {"admin": {"key": "admin-key-0123456789abcdef", "role": "admin"}}},
    }


def _send(receiver: Receiver, first: int, n: int, *, category: str = "app", pad: int = 0) -> None:
    records = [log_record(f"line {i} " + "x" * (i % 97 + pad), attributes={
        "log.category": category, "user.id": f"u{i % 5}", "seq": i}, time_unix_nano=T0 + i)
        for i in range(first, first + n)]
    result = receiver.ingest.export(Signal.LOGS, logs_request(*records).SerializeToString(),
                                    Encoding.PROTOBUF, Caller())
    assert not result.rejected
    assert not result.dropped


def _indexer(receiver: Receiver) -> IndexClient:
    found = [s for s in receiver.sinks if isinstance(s, IndexClient)]
    assert len(found) == 1, receiver.sinks
    return found[0]


def _rows(directory: Path) -> list[Row]:
    return sorted(IndexStore.for_directory(directory).rows())


def _indexed_after(settings: dict[str, Any], logs: Path, first: int = 0, n: int = 0) -> list[Row]:
    """Start a receiver, send `n` records (if any), wait for the index, stop; the index's rows."""
    receiver = start_receiver(settings)
    try:
        if n:
            _send(receiver, first, n)
        assert _indexer(receiver).sync(30)  # a barrier waits for the start-up catch-up too
        return _rows(logs)
    finally:
        receiver.stop(5)


def _rebuilt(directory: Path, tmp: Path) -> list[Row]:
    """The rows a rebuild derives from a copy of the directory's files."""
    copy = tmp / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(directory, copy, ignore=shutil.ignore_patterns(".index"))
    rebuild(copy)
    return _rows(copy)


_LINE = ('{"timestamp":"2026-01-01T00:00:00Z","severity_number":9,"category":"app",'
         '"body":"b","attributes":{"seq":%d}}\n')


def _followed_directory(tmp_path: Path) -> Path:
    """A log directory with an index that already follows its files (cursors exist)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    store = IndexStore.for_directory(logs)
    store.open()
    store.insert([], 0, [], ["-"])
    store.close()
    return logs


def _seqs(rows: list[Row]) -> list[int]:
    return sorted(int(r.line.split('"seq":')[1].split(",")[0].split("}")[0]) for r in rows
                  if '"seq":' in r.line)


def test_acknowledged_records_are_indexed_once_across_rotations_and_gzip(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    receiver = start_receiver(_settings(logs, rotation={"max_bytes": 20_000}))
    try:
        for batch in range(40):
            _send(receiver, batch * 25, 25)
        assert _indexer(receiver).sync(30)
        rows = _rows(logs)
    finally:
        receiver.stop(5)
    assert sorted(p.name for p in logs.glob("app.log.*.gz")), "no rotation happened"
    assert _seqs(rows) == list(range(1000))
    assert rows == _rebuilt(logs, tmp_path)


def test_a_restart_resumes_where_the_index_stood_even_in_rotated_gzipped_files(tmp_path: Path) -> None:
    """While the index was down (a crash: the receiver wrote, the index never read), the files
    grew, rotated and were gzipped; the next start indexes exactly what it missed."""
    logs = tmp_path / "logs"
    settings = _settings(logs, rotation={"max_bytes": 20_000})
    assert _seqs(_indexed_after(settings, logs, 0, 30)) == list(range(30))
    # The same files written with nobody following them: what a crash of the index leaves.
    without_index = {**settings, "query": {"enabled": False}}
    receiver = start_receiver(without_index)
    try:
        for batch in range(1, 30):
            _send(receiver, batch * 30, 30)
        assert next(s for s in receiver.sinks if isinstance(s, RotatingFileSink)).force_flush(30)
    finally:
        receiver.stop(5)
    assert len(list(logs.glob("app.log.*.gz"))) >= 3
    rows = _indexed_after(settings, logs)
    assert _seqs(rows) == list(range(900))
    assert rows == _rebuilt(logs, tmp_path)


def _stop(pid: int) -> None:
    """SIGSTOP `pid` and wait until every thread of it is stopped (the signal takes effect
    asynchronously, thread by thread)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 60
    while any((task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "T"
              for task in Path(f"/proc/{pid}/task").iterdir()):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not stop")
        time.sleep(0.005)


def _wait_gone(directory: Path) -> None:
    """Until the index process's socket is closed (a killed process's threads release it only
    once the last of them is gone): then the next report finds nobody."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                probe.sendto(b"?", address(directory))  # an unknown kind: the index ignores it
            except ConnectionRefusedError:
                return
            time.sleep(0.01)
    finally:
        probe.close()
    raise AssertionError("the index process's socket stayed open")


def test_a_killed_index_process_is_started_again_and_misses_nothing(tmp_path: Path) -> None:
    """SIGKILL the index process between batches (and once more right after a batch): the
    owner starts it again at the next report, and it catches up from its cursors — every
    acknowledged record indexed once, whatever the kill interrupted."""
    logs = tmp_path / "logs"
    receiver = start_receiver(_settings(logs, rotation={"max_bytes": 30_000}))
    index = _indexer(receiver)
    index.respawn_after_s = 0.0
    try:
        for round_ in range(4):
            _send(receiver, round_ * 100, 50)
            pid = index.server_pid
            os.kill(pid, signal.SIGKILL)
            _wait_gone(logs)
            _send(receiver, round_ * 100 + 50, 50)  # its report finds nobody: started again
            assert index.server_pid != pid
        assert index.sync(30)
        rows = _rows(logs)
    finally:
        receiver.stop(5)
    assert _seqs(rows) == sorted(round_ * 100 + i for round_ in range(4) for i in range(100))
    assert rows == _rebuilt(logs, tmp_path)


def test_after_a_rebuild_the_index_follows_on_without_duplicates(tmp_path: Path) -> None:
    """A directory written without the query API: its first start counts the files as indexed
    (nothing is read twice), `sluice index rebuild` indexes them and leaves cursors, and the
    receiver follows on from those."""
    logs = tmp_path / "logs"
    settings = _settings(logs)
    receiver = start_receiver({**settings, "query": {"enabled": False}})
    try:
        _send(receiver, 0, 50)
    finally:
        receiver.stop(5)
    assert _seqs(_indexed_after(settings, logs, 50, 10)) == list(range(50, 60))
    assert rebuild(logs) == 60
    rows = _indexed_after(settings, logs, 60, 10)
    assert _seqs(rows) == list(range(70))
    assert rows == _rebuilt(logs, tmp_path)


def test_a_batch_the_files_rolled_back_is_not_indexed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    receiver = start_receiver(_settings(logs))
    files = next(s for s in receiver.sinks if isinstance(s, RotatingFileSink))
    try:
        _send(receiver, 0, 10)
        failing = threading.Event()
        real_write = files._write

        def write(fd: int, data: Any) -> int:
            if failing.is_set():
                n = real_write(fd, bytes(data)[: len(data) // 2])  # half of it, then an error
                raise OSError(5, f"I/O error after {n} bytes")
            return real_write(fd, data)

        files._write = write
        failing.set()
        with pytest.raises(SinkError):
            _send(receiver, 100, 10)
        failing.clear()
        _send(receiver, 200, 10)
        assert _indexer(receiver).sync(30)
        rows = _rows(logs)
    finally:
        receiver.stop(5)
    assert _seqs(rows) == [*range(10), *range(200, 210)]
    assert rows == _rebuilt(logs, tmp_path)


def test_acknowledgements_wait_while_the_index_is_too_far_behind(tmp_path: Path) -> None:
    """With the index process stopped (SIGSTOP), a batch past the lag limit is written to the
    files but not acknowledged until the index catches up (SIGCONT)."""
    logs = tmp_path / "logs"
    receiver = start_receiver({**_settings(logs), "query": {
        "api_keys": {"admin": {"key": "admin-key-0123456789abcdef", "role": "admin"}},
        "index_lag_limit_mb": 1}})
    index = _indexer(receiver)
    try:
        assert index.sync(30)
        _stop(index.server_pid)
        try:
            _send(receiver, 0, 10)  # well under 1 MiB: acknowledged at once
            # About 1.5 MiB of lines: over the limit once written.
            sender = threading.Thread(target=_send, args=(receiver, 10, 1200),
                                      kwargs={"pad": 1200}, daemon=True)
            sender.start()
            sender.join(0.5)
            assert sender.is_alive(), "acknowledged while the index was over its lag limit"
            assert index.health()["state"] == "degraded"
            assert index.lag_bytes > 1 << 20
        finally:
            os.kill(index.server_pid, signal.SIGCONT)
        sender.join(60)
        assert not sender.is_alive()
        assert index.sync(30)
        assert index.lag_bytes == 0
        assert _seqs(_rows(logs)) == list(range(1210))
    finally:
        receiver.stop(5)


def test_a_query_sees_what_was_acknowledged_before_it(tmp_path: Path) -> None:
    """Read your writes: every read syncs with the index first (query/core.py)."""
    from sluice_collector.query.store import AccessScope, RecordFilter

    logs = tmp_path / "logs"
    receiver = start_receiver(_settings(logs))
    try:
        core = receiver._query
        assert core is not None
        key = core.authenticate([("x-api-key", "admin-key-0123456789abcdef")])
        for batch in range(20):
            _send(receiver, batch * 5, 5)
            rows, _ = core.query(key, RecordFilter(categories=("app",)), limit=1000,
                                 peer="test", via="test")
            assert _seqs([r.row for r in rows]) == list(range(batch * 5 + 5))
        assert len(IndexStore.for_directory(logs).query(
            RecordFilter(), AccessScope(), limit=1000)[0]) >= 100
    finally:
        receiver.stop(5)


def test_a_line_the_index_cannot_hold_is_skipped_not_fatal(tmp_path: Path) -> None:
    """A line from elsewhere (an older version, a hand edit) stamped past 2^63 ns cannot be a
    SQLite integer: the index leaves it out and goes on with the next lines."""
    logs = tmp_path / "logs"
    settings = _settings(logs)
    receiver = start_receiver(settings)
    try:
        _send(receiver, 0, 5)
    finally:
        receiver.stop(5)
    with (logs / "app.log").open("ab") as fh:
        fh.write(b'{"timestamp":"2300-01-01T00:00:00Z","severity_number":9,"category":"app",'
                 b'"body":"far future","attributes":{"seq":5}}\n')
    receiver = start_receiver(settings)
    try:
        _send(receiver, 6, 5)
        assert _indexer(receiver).sync(30)
        assert _indexer(receiver).health()["state"] == "ok"
        rows = _rows(logs)
    finally:
        receiver.stop(5)
    assert _seqs(rows) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]


def test_a_file_cut_short_by_hand_is_skipped_not_spun_on(tmp_path: Path) -> None:
    """Someone truncates the active file under the receiver (`> app.log`) before the index read
    it: what was cut is gone (the index says so), and what is written next is indexed."""
    logs = tmp_path / "logs"
    receiver = start_receiver(_settings(logs))
    index = _indexer(receiver)
    try:
        _stop(index.server_pid)  # the reports wait in its queue
        try:
            _send(receiver, 0, 20)
            os.truncate(logs / "app.log", 0)
        finally:
            os.kill(index.server_pid, signal.SIGCONT)
        assert index.sync(30)
        _send(receiver, 100, 5)
        assert index.sync(30)
        os.truncate(logs / "app.log", 0)  # again, now after the index read it
        _send(receiver, 200, 3)
        assert index.sync(30)
        rows = _rows(logs)
        assert index.lag_bytes == 0
    finally:
        receiver.stop(5)
    assert _seqs(rows) == [100, 101, 102, 103, 104, 200, 201, 202]


def test_a_report_that_arrives_after_its_lines_were_read_changes_nothing(tmp_path: Path) -> None:
    """At start the index reads every file to its end, while the reports of batches written
    meanwhile wait in its queue; such a report names lines already read. It must not read
    them again (a file that was really cut has other first bytes, or fewer)."""
    from sluice_collector.query.store import row_of_line
    from sluice_collector.sinks.index.fileindexer import FileIndexer

    logs = _followed_directory(tmp_path)
    line = _LINE
    first, second = (line % 0 + line % 1).encode(), (line % 2).encode()
    (logs / "app.log").write_bytes(first + second)
    assert row_of_line(second) is not None
    indexer = FileIndexer(IndexStore.for_directory(logs), logs, {})
    indexer.start()
    try:
        ino = os.stat(logs / "app.log").st_ino
        indexer.wrote("app.log", ino, len(first) + len(second), len(second))  # stale
        assert indexer.sync(30)
        assert _seqs(_rows(logs)) == [0, 1, 2]
        with (logs / "app.log").open("ab") as fh:
            fh.write((line % 3).encode())
        indexer.wrote("app.log", ino, len(first) + len(second) + len(line % 3), len(line % 3))
        assert indexer.sync(30)
        assert _seqs(_rows(logs)) == [0, 1, 2, 3]
    finally:
        indexer.shutdown()


def test_a_late_report_about_a_rotated_file_changes_nothing(tmp_path: Path) -> None:
    """At start the index reads a rotated copy and the new active file; a queued report about
    the copy's inode (written before the rotation) must neither retire the active file nor
    read the copy again."""
    from sluice_collector.sinks.index.fileindexer import FileIndexer

    logs = _followed_directory(tmp_path)
    line = _LINE
    old = (line % 0 + line % 1).encode()
    (logs / "app.log.2026-01-01.1").write_bytes(old)
    (logs / "app.log").write_bytes((line % 2).encode())
    old_ino = os.stat(logs / "app.log.2026-01-01.1").st_ino
    indexer = FileIndexer(IndexStore.for_directory(logs), logs, {})
    indexer.start()
    try:
        assert indexer.sync(30)
        assert _seqs(_rows(logs)) == [0, 1, 2]
        indexer.wrote("app.log", old_ino, len(old), len(old))  # late, about the copy
        assert indexer.sync(30)
        assert _seqs(_rows(logs)) == [0, 1, 2]
        size = os.path.getsize(logs / "app.log")
        with (logs / "app.log").open("ab") as fh:
            fh.write((line % 3).encode())
        indexer.wrote("app.log", os.stat(logs / "app.log").st_ino, size + len(line % 3),
                      len(line % 3))
        assert indexer.sync(30)
        assert _seqs(_rows(logs)) == [0, 1, 2, 3]
        assert indexer.lag_bytes == 0
    finally:
        indexer.shutdown()
