"""sluice._capture.multiline: which lines of a stream make one record."""

from __future__ import annotations

from sluice._capture.lines import has_level
from sluice._capture.multiline import Group, LineJoiner


def groups(text: str) -> list[Group]:
    joiner = LineJoiner(has_level)
    out: list[Group] = []
    for line in text.split("\n"):
        out += joiner.feed(line)
    return out + joiner.flush()


def texts(text: str) -> list[str]:
    return ["\n".join(g.lines) for g in groups(text)]


PY_CHAINED = """Traceback (most recent call last):
  File "app.py", line 3, in <module>
    int("x")
ValueError: invalid literal for int() with base 10: 'x'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "app.py", line 5, in <module>
    raise RuntimeError("wrapped")
RuntimeError: wrapped"""

NODE_STACK = """Error: boom
    at fail (/srv/server.js:3:9)
    at Object.<anonymous> (/srv/server.js:9:1)
    at Module._compile (node:internal/modules/cjs/loader:1256:14)"""

NODE_CRASH = """/srv/server.js:3
  throw new Error("boom");
  ^

Error: boom
    at Object.<anonymous> (/srv/server.js:3:9)
    at node:internal/main/run_main_module:28:49

Node.js v20.20.2"""

JAVA = """Exception in thread "main" java.lang.IllegalStateException: outer
\tat com.example.App.run(App.java:10)
\tat com.example.App.main(App.java:4)
Caused by: java.io.IOException: inner
\tat com.example.Io.read(Io.java:7)
\t... 2 more"""


def test_plain_lines_are_one_record_each_and_blank_lines_are_dropped() -> None:
    assert texts("one\ntwo\n\nthree\n") == ["one", "two", "three"]


def test_a_python_traceback_with_chained_exceptions_is_one_record() -> None:
    [group] = groups(PY_CHAINED + "\nnext line")[:1]
    assert group.kind == "python"
    assert "\n".join(group.lines) == PY_CHAINED
    assert texts(PY_CHAINED + "\nnext line")[1] == "next line"


def test_logging_exception_output_keeps_its_message_line_with_the_traceback() -> None:
    text = "ERROR:root:charge failed\n" + PY_CHAINED.split("\n\n", maxsplit=1)[0] + "\nINFO:root:after"
    out = groups(text)
    assert [g.kind for g in out] == ["python", "plain"]
    assert out[0].lines[0] == "ERROR:root:charge failed"
    assert out[0].lines[-1].startswith("ValueError")


def test_a_traceback_after_an_ordinary_line_is_its_own_record() -> None:
    out = groups("done\n" + PY_CHAINED.split("\n\n", maxsplit=1)[0])
    assert [g.lines[0] for g in out] == ["done", "Traceback (most recent call last):"]


def test_node_and_java_stack_traces_are_one_record() -> None:
    assert texts(NODE_STACK + "\nlistening") == [NODE_STACK, "listening"]
    assert groups(NODE_STACK)[0].kind == "stack"
    assert texts(JAVA) == [JAVA]


def test_nodes_crash_report_is_one_record() -> None:
    out = groups(NODE_CRASH + "\nafter")
    assert ["\n".join(g.lines) for g in out] == [NODE_CRASH, "after"]
    assert out[0].kind == "node"


def test_a_path_like_line_that_is_no_crash_report_stays_ordinary() -> None:
    assert texts("/usr/lib/x:12\nsomething\nelse\n\nlast") == ["/usr/lib/x:12", "something", "else", "last"]
    assert texts("/usr/lib/x:12\n\n  indented") == ["/usr/lib/x:12", "  indented"]


def test_indented_continuation_lines_join_the_line_before() -> None:
    assert texts("config:\n  a: 1\n  b: 2\nnext") == ["config:\n  a: 1\n  b: 2", "next"]


def test_json_lines_are_never_joined() -> None:
    assert texts('{"msg":"a"}\n  indented\n{"msg":"b"}') == ['{"msg":"a"}', "  indented", '{"msg":"b"}']


def test_records_are_bounded_in_lines() -> None:
    joiner = LineJoiner(has_level, max_lines=3)
    out: list[Group] = []
    for line in ["head", "  1", "  2", "  3", "  4"]:
        out += joiner.feed(line)
    out += joiner.flush()
    assert [len(g.lines) for g in out] == [3, 2]
