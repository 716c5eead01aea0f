"""sluice._capture.assembler: chunks -> lines -> records; gaps, partial lines, the child's own lines."""

from __future__ import annotations

from sluice._capture.assembler import LineAssembler
from sluice._capture.records import RecordBuilder
from sluice._shipper import Item


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def assembler(**kwargs: object) -> tuple[LineAssembler, list[Item], Clock]:
    items: list[Item] = []
    clock = Clock()
    return LineAssembler(RecordBuilder(), items.append, clock=clock, **kwargs), items, clock  # type: ignore[arg-type]


def test_lines_announced_by_the_childs_sdk_are_skipped_once_each_and_the_rest_shipped() -> None:
    a, items, _ = assembler()
    a.expect("stderr", b"WARNING:app:shipped by the bridge\nTraceback (most recent call last):\n"
                       b"  File \"a.py\", line 1\nKeyError: 'x'\n")
    a.data("stderr", b"WARNING:app:shipped by the bridge\nprinted\nTraceback (most recent call last):\n"
                     b"  File \"a.py\", line 1\nKeyError: 'x'\nWARNING:app:shipped by the bridge\n")
    a.finish()
    assert [i[4] for i in items] == ["printed", "shipped by the bridge"]
    assert a.lines_skipped == 4


def test_an_announcement_for_the_other_stream_skips_nothing_here() -> None:
    a, items, _ = assembler()
    a.expect("stdout", b"same text\n")
    a.data("stderr", b"same text\n")
    a.finish()
    assert [i[4] for i in items] == ["same text"]


def test_lines_split_across_chunks_are_whole_and_a_stack_trace_in_pieces_is_one_record() -> None:
    a, items, _ = assembler()
    for chunk in (b"Error: bo", b"om\n    at f (a.js:1:1)\n", b"    at g (a.js:2:1)\nnext", b" line\n"):
        a.data("stderr", chunk)
    a.finish()
    assert [i[4] for i in items] == ["Error: boom\n    at f (a.js:1:1)\n    at g (a.js:2:1)", "next line"]


def test_a_gap_drops_the_torn_line_and_never_glues_two_halves() -> None:
    a, items, _ = assembler()
    a.data("stdout", b"one\ntwo-start")
    a.data("stdout", b"-end-of-other\nthree\n", gap=True, torn=True)  # "two...other" was torn
    a.finish()
    assert [i[4] for i in items] == ["one", "three"]
    assert a.lines_dropped == 1  # the torn line; the one ending in the dropped chunk is the pump's


def test_a_gap_at_a_line_boundary_loses_no_line_of_the_next_chunk() -> None:
    a, items, _ = assembler()
    a.data("stdout", b"one\n")
    a.data("stdout", b"two\n", gap=True, torn=False)
    a.finish()
    assert [i[4] for i in items] == ["one", "two"]
    assert a.lines_dropped == 0


def test_a_prompt_without_newline_is_a_record_once_the_stream_is_quiet() -> None:
    a, items, clock = assembler(partial_flush_s=0.5, idle_flush_s=0.5)
    a.data("stdout", b"Password: ")
    a.tick()
    assert items == []
    assert a.next_tick_s() == 0.5
    clock.now += 0.5
    a.tick()  # the partial line becomes a line, held one idle period by the joiner
    clock.now += 0.5
    a.tick()
    assert [i[4] for i in items] == ["Password: "]
    a.data("stdout", b"\nok\n")
    a.finish()
    assert [i[4] for i in items] == ["Password: ", "ok"]


def test_overlong_lines_are_cut_into_pieces() -> None:
    a, items, _ = assembler(max_line_bytes=4)
    a.data("stdout", b"abcdefghij\n")
    a.finish()
    assert [i[4] for i in items] == ["abcd", "efgh", "ij"]
