"""`DiskSpool`: order, acknowledgement, restart, torn tails, and the size cap that drops the
oldest ordinary records but never a protected one."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sluice_collector.sinks._delivery.spool import HEADER_BYTES, DiskSpool, SpoolFull


def payloads(spool: DiskSpool, **kwargs: int) -> list[bytes]:
    return [r.data for r in spool.peek(max_records=1_000_000, max_bytes=1 << 30, **kwargs)]


def drain(spool: DiskSpool) -> list[bytes]:
    out: list[bytes] = []
    while records := spool.peek(max_records=7):
        out.extend(r.data for r in records)
        spool.ack(records[-1].seq)
    return out


def test_records_come_back_in_append_order_across_protected_and_ordinary(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.append([b"a", b"b", b"c"], [False, True, False])
    spool.append([b"d"], True)
    spool.append([b"e"])
    records = spool.peek()
    assert [r.data for r in records] == [b"a", b"b", b"c", b"d", b"e"]
    assert [r.protected for r in records] == [False, True, False, True, False]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]


def test_peek_does_not_consume_and_ack_removes_through_a_seq(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.append([b"1", b"2", b"3", b"4"], [False, True, False, True])
    assert payloads(spool) == payloads(spool) == [b"1", b"2", b"3", b"4"]
    assert spool.ack(2) == 2
    assert payloads(spool) == [b"3", b"4"]
    assert spool.pending == 2
    assert spool.ack(2) == 0  # acknowledging again is harmless


def test_after_seq_skips_records_sent_but_not_yet_acknowledged(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.append([b"%d" % i for i in range(10)], [i % 3 == 0 for i in range(10)])
    first = spool.peek(max_records=4)
    assert [r.data for r in first] == [b"0", b"1", b"2", b"3"]
    assert payloads(spool, after_seq=first[-1].seq) == [b"%d" % i for i in range(4, 10)]
    # A sender that lost its connection starts over from the acknowledged point.
    assert payloads(spool, after_seq=0) == [b"%d" % i for i in range(10)]


def test_peek_limits_records_and_bytes_but_always_returns_one(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.append([b"x" * 100, b"y" * 100, b"z"])
    assert len(spool.peek(max_records=2)) == 2
    assert [r.data for r in spool.peek(max_bytes=150)] == [b"x" * 100]
    assert [r.data for r in spool.peek(max_bytes=10)] == [b"x" * 100]


def test_everything_acknowledged_leaves_no_segment_on_disk(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20, segment_bytes=64)
    for i in range(50):
        spool.append([b"record %d" % i], i % 2 == 0)
    assert len(list(tmp_path.glob("*.seg"))) > 2
    assert drain(spool) == [b"record %d" % i for i in range(50)]
    assert list(tmp_path.glob("*.seg")) == []
    assert spool.size_bytes == 0


def test_records_and_ack_position_survive_a_restart(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20, segment_bytes=64)
    spool.append([b"r%d" % i for i in range(20)], [i % 4 == 0 for i in range(20)])
    spool.ack(7)
    spool.close()

    again = DiskSpool(tmp_path, 1 << 20, segment_bytes=64)
    assert again.pending == 13
    assert payloads(again) == [b"r%d" % i for i in range(7, 20)]
    again.append([b"new"])
    records = again.peek(max_records=100)
    assert records[-1].data == b"new"
    assert records[-1].seq == 21


def test_a_torn_tail_from_a_crash_is_cut_off_and_the_rest_kept(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.append([b"good-1", b"good-2"])
    spool.close()
    segment = next(tmp_path.glob("n-*.seg"))
    with segment.open("ab") as f:  # half a header and a record whose checksum is wrong
        f.write(b"\x03\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00junk!"[: HEADER_BYTES + 2])
    again = DiskSpool(tmp_path, 1 << 20)
    assert payloads(again) == [b"good-1", b"good-2"]
    again.append([b"after"])
    assert payloads(again) == [b"good-1", b"good-2", b"after"]


def test_over_the_cap_the_oldest_ordinary_records_are_dropped_and_counted(tmp_path: Path) -> None:
    record = b"o" * (100 - HEADER_BYTES)  # 100 bytes on disk each
    spool = DiskSpool(tmp_path, 2_000, segment_bytes=300)
    dropped = 0
    for i in range(60):
        dropped += spool.append([b"%02d" % i + record[2:]]).dropped
        assert spool.size_bytes <= 2_000
    kept = [int(d[:2]) for d in payloads(spool)]
    assert kept == list(range(60 - len(kept), 60))  # a contiguous, newest run
    assert dropped == 60 - len(kept) == spool.dropped_total
    assert len(kept) >= 15  # eviction works in small segments, not the whole spool


def test_protected_records_are_never_dropped_by_the_cap(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 2_000, segment_bytes=300)
    body = b"p" * (100 - HEADER_BYTES - 3)
    for i in range(8):
        spool.append([b"A%02d" % i + body], True)
    for i in range(40):
        spool.append([b"o%02d" % i + body], False)
    data = payloads(spool)
    audit = [d[:3] for d in data if d.startswith(b"A")]
    assert audit == [b"A%02d" % i for i in range(8)]
    ordinary = [int(d[1:3]) for d in data if d.startswith(b"o")]
    assert ordinary == list(range(40 - len(ordinary), 40))
    assert spool.size_bytes <= 2_000


def test_protected_records_that_cannot_fit_raise_and_write_nothing(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1_000)
    spool.append([b"a" * 400, b"b" * 400], True)
    with pytest.raises(SpoolFull):
        spool.append([b"ordinary", b"c" * 400], [False, True])
    assert payloads(spool) == [b"a" * 400, b"b" * 400]


def test_new_ordinary_records_give_way_when_only_protected_ones_are_left(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1_000)
    spool.append([b"a" * 900], True)
    result = spool.append([b"x" * 100, b"keep"], [False, True])
    assert (result.stored, result.dropped) == (1, 1)
    assert payloads(spool) == [b"a" * 900, b"keep"]


def test_ack_after_the_acked_records_were_evicted_does_not_break_order(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1_000, segment_bytes=200)
    spool.append([b"%03d" % i + b"." * 80 for i in range(5)])
    in_flight = spool.peek(max_records=3)
    spool.append([b"%03d" % i + b"." * 80 for i in range(5, 12)])  # evicts the in-flight ones
    spool.ack(in_flight[-1].seq)
    rest = [int(d[:3]) for d in payloads(spool)]
    assert rest == sorted(rest)
    assert rest[-1] == 11
    assert 2 not in rest


def test_waiters_wake_on_append_and_when_the_spool_empties(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    assert spool.wait_for_records(0.01) is False
    threading.Timer(0.05, lambda: spool.append([b"x"])).start()
    # Woken by the append, not by the end of a wait far longer than any test.
    woken: list[bool] = []
    waiter = threading.Thread(target=lambda: woken.append(spool.wait_for_records(3600.0)), daemon=True)
    waiter.start()
    waiter.join(60)
    assert woken == [True]
    assert spool.wait_for_records(0.01, after_seq=1) is False  # nothing newer than seq 1
    threading.Timer(0.05, lambda: spool.ack(1)).start()
    assert spool.wait_until_empty(5.0)


def test_close_wakes_waiters_and_keeps_the_records(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.append([b"kept"])
    threading.Timer(0.05, spool.close).start()
    assert spool.wait_for_records(5.0, after_seq=1) is False
    assert payloads(DiskSpool(tmp_path, 1 << 20)) == [b"kept"]
