"""Promise: a templated path cannot exhaust the inodes. Distinct values of a record field (here
`user.id`) name at most `files.max_files_per_template` files per category; records past that go
to the fallback path, are counted on /metrics, and nothing is lost — also after a restart, when
the files already on disk count against the limit."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.reliability.harness import Sender, make_request, scan_logs

LIMIT = 50


def _users_request(first: int, n: int) -> bytes:
    """n records, record i carrying seq i and user.id `u<i>`: n distinct users."""
    request = ExportLogsServiceRequest.FromString(make_request(range(first, first + n)))
    for rec in request.resource_logs[0].scope_logs[0].log_records:
        seq = rec.attributes[0].value.int_value
        rec.attributes.append(KeyValue(key="user.id", value=AnyValue(string_value=f"u{seq}")))
    return request.SerializeToString()


def _inodes(directory: Path) -> int:
    """Files and directories under `directory` (hidden ones — the receiver's own — left out)."""
    count = 0
    for _root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        count += len(dirs) + len([f for f in files if not f.startswith(".")])
    return count


def _over_limit(receiver: Any) -> float:
    text = urllib.request.urlopen(f"{receiver.status_url}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith('sluice_files_over_limit_records_total{category="app"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _send(receiver: Any, first: int, n: int) -> None:
    sender = Sender(receiver.endpoint)
    try:
        for start in range(first, first + n, 100):
            assert sender.call(_users_request(start, min(100, first + n - start))).code.name == "OK"
    finally:
        sender.close()


def test_distinct_user_ids_cannot_create_files_without_bound(start_receiver: Any, tmp_path: Path) -> None:
    settings = {"categories": {"app": {"path": "users/{user.id}/{category}.log"}},
                "files": {"max_files_per_template": LIMIT}}
    receiver = start_receiver(settings)
    _send(receiver, 0, 1000)
    over = _over_limit(receiver)
    assert receiver.stop() == 0
    logs = receiver.logs_dir
    user_files = sorted(p.relative_to(logs).as_posix() for p in logs.glob("users/*/app.log"))
    print(f"\nfile count: 1000 distinct users → {len(user_files)} user files, "
          f"{_inodes(logs)} files and directories, {over:.0f} records over the limit")
    assert len(user_files) == LIMIT
    assert _inodes(logs) <= 2 * LIMIT + 3  # a directory and a file per user, the fallback file
    assert over == 1000 - LIMIT
    scan = scan_logs(logs)
    assert set(scan.counts) == set(range(1000))  # nothing lost
    assert not scan.duplicates
    assert len((logs / "app.log").read_text().splitlines()) == 1000 - LIMIT

    # After a restart the files on disk still count: new users go to the fallback.
    again = start_receiver(settings, workdir=tmp_path)
    _send(again, 5000, 200)
    assert _over_limit(again) == 200
    assert again.stop() == 0
    assert len(list(logs.glob("users/*/app.log"))) == LIMIT
    # A user who already has a file keeps writing to it.
    again = start_receiver(settings, workdir=tmp_path)
    _send(again, 0, 1)
    assert again.stop() == 0
    assert len((logs / "users/u0/app.log").read_text().splitlines()) == 2
