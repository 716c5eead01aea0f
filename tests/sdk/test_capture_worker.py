"""sluice._capture.worker: bounded line queue, skipping lines the child's SDK shipped, records out."""

from __future__ import annotations

import time

from sluice._capture.records import RecordBuilder
from sluice._capture.worker import CaptureWorker
from sluice._shipper import Item


def run_worker(feed: list[tuple[str, str, bytes]], *, max_bytes: int = 1 << 20) -> tuple[CaptureWorker, list[Item]]:
    worker = CaptureWorker(RecordBuilder(), max_bytes=max_bytes, idle_flush_s=60)
    for kind, stream, data in feed:
        if kind == "expect":
            worker.expect(stream, data)
        else:
            worker.lines(stream, data.split(b"\n"), time.monotonic())
    items: list[Item] = []
    worker.start(items.append)
    worker.close(time.monotonic() + 30)
    return worker, items


def test_lines_announced_by_the_childs_sdk_are_skipped_once_each_and_the_rest_shipped() -> None:
    worker, items = run_worker([
        ("expect", "stderr", b"WARNING:app:shipped by the bridge\nTraceback (most recent call last):\n"
                             b"  File \"a.py\", line 1\nKeyError: 'x'\n"),
        ("line", "stderr", b"WARNING:app:shipped by the bridge\nprinted\nTraceback (most recent call last):\n"
                           b"  File \"a.py\", line 1\nKeyError: 'x'\nWARNING:app:shipped by the bridge"),
    ])
    assert [i[4] for i in items] == ["printed", "shipped by the bridge"]
    assert worker.lines_skipped == 4


def test_an_announcement_for_the_other_stream_skips_nothing_here() -> None:
    _, items = run_worker([("expect", "stdout", b"same text\n"), ("line", "stderr", b"same text")])
    assert [i[4] for i in items] == ["same text"]


def test_a_full_queue_drops_whole_lines_and_counts_them() -> None:
    worker, items = run_worker([("line", "stdout", b"a" * 60 + b"\n" + b"b" * 60 + b"\n" + b"c" * 10)],
                               max_bytes=100)
    assert [i[4] for i in items] == ["a" * 60, "c" * 10]
    assert worker.lines_dropped == 1
    assert worker.records == 2


def test_a_stack_trace_arriving_in_pieces_is_one_record() -> None:
    _, items = run_worker([("line", "stderr", b"Error: boom"), ("line", "stderr", b"    at f (a.js:1:1)"),
                           ("line", "stderr", b"    at g (a.js:2:1)")])
    assert [i[4] for i in items] == ["Error: boom\n    at f (a.js:1:1)\n    at g (a.js:2:1)"]
