"""Which lines of one stream belong to one record: stack traces and continuation lines.

A line is held until the next one shows whether it continues (or until the stream has been idle
for a moment, or ends), so a record is complete when it is shipped. The rules (docs/run.md):

- An indented line (space or tab first) continues the record before it: Java's `\\tat …` and
  Node's `    at …` frames, `... 5 more`, Go's frame lines, wrapped messages.
- `Caused by: …` continues a Java trace.
- `Traceback (most recent call last):` starts a Python traceback, which runs through its indented
  frames to the exception line (`ValueError: bad`), and on through chained tracebacks ("During
  handling of the above exception…", "The above exception was the direct cause…"). When the line
  just before names a level (`ERROR:app:charge failed`, `2024-… ERROR …`), the traceback belongs
  to it: that is how `logging.exception()` prints.
- Node's crash report — `/path/app.js:10`, the source line, the `^` marker, a blank line, then
  `Error: …` and its frames, a blank line and `Node.js v20…` — is one record.
- A blank line ends a record (inside a Python or Node trace it is kept when the trace goes on).
- A JSON object line is always a record of its own.
- No record grows past `max_lines` lines or `max_chars` characters; the rest starts a new one.

`Group.kind` says what was recognised, so the record builder can name the exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Group", "LineJoiner"]

_TRACEBACK = "Traceback (most recent call last):"
_GROUP_TRACEBACK = re.compile(r"\s*\+?[-+ ]*Exception Group Traceback \(most recent call last\):")
_CHAIN_MARKERS = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
_NODE_HEADER = re.compile(r"(?:file://)?(?:/|[A-Za-z]:\\|node:)\S*:\d+\Z")
_CARET = re.compile(r"\s*\^+\s*\Z")
_FRAME = re.compile(r"\s+(?:at |\.\.\. \d+ more)")


@dataclass(slots=True)
class Group:
    """The lines of one record; `kind` is `plain`, `python`, `stack` (at-frames) or `node`."""

    lines: list[str]
    kind: str = "plain"
    started_s: float = 0.0  # when its first line was fed


class LineJoiner:
    """Per-stream state machine: `feed` lines, get complete groups back; `flush` at idle or EOF."""

    def __init__(
        self,
        has_level: Callable[[str], bool],
        *,
        max_lines: int = 1000,
        max_chars: int = 256 * 1024,
    ) -> None:
        self._has_level = has_level
        self._max_lines = max_lines
        self._max_chars = max_chars
        self._lines: list[str] = []
        self._chars = 0
        self._kind = "plain"
        self._phase = ""
        self._blanks = 0
        self._started_s = 0.0
        self.last_fed_s = 0.0

    @property
    def pending(self) -> bool:
        return bool(self._lines)

    def flush(self) -> list[Group]:
        """Complete whatever is held (held blank lines are dropped)."""
        if not self._lines:
            return []
        group = Group(self._lines, self._kind, self._started_s)
        self._lines = []
        self._chars = 0
        self._kind = "plain"
        self._phase = ""
        self._blanks = 0
        return [group]

    def feed(self, line: str, now_s: float = 0.0) -> list[Group]:
        """Take one line (decoded, ANSI-stripped, no newline); return the groups it completed."""
        self.last_fed_s = now_s
        out: list[Group] = []
        self._feed(line, out)
        return out

    def _start(self, line: str, kind: str, phase: str, out: list[Group]) -> None:
        out += self.flush()
        self._lines = [line]
        self._started_s = self.last_fed_s
        self._chars = len(line)
        self._kind = kind
        self._phase = phase

    def _append(self, line: str, out: list[Group]) -> None:
        if self._blanks:
            self._lines += [""] * self._blanks
            self._blanks = 0
        self._lines.append(line)
        self._chars += len(line) + 1
        if len(self._lines) >= self._max_lines or self._chars >= self._max_chars:
            out += self.flush()

    def _feed(self, line: str, out: list[Group]) -> None:
        if not line.strip():
            if self._lines and self._kind in ("python", "node") and self._blanks < 2:
                self._blanks += 1
            else:
                out += self.flush()
            return
        if self._lines and self._continues(line, out):
            return
        self._fresh(line, out)

    def _fresh(self, line: str, out: list[Group]) -> None:
        if line.startswith(_TRACEBACK) or _GROUP_TRACEBACK.match(line):
            self._start(line, "python", "frames", out)
        elif _NODE_HEADER.match(line):
            self._start(line, "node", "head", out)
        elif line.startswith("{") and line.rstrip().endswith("}"):
            out += self.flush()
            out.append(Group([line], "plain", self.last_fed_s))
        else:
            self._start(line, "plain", "", out)

    def _continues(self, line: str, out: list[Group]) -> bool:
        """Add `line` to the held record when it belongs there; False to start a new one."""
        kind, phase, indented = self._kind, self._phase, line[0] in " \t"
        if kind == "python":
            if self._blanks:
                if line.startswith(_CHAIN_MARKERS):
                    self._append(line, out)
                    self._phase = "chain"
                    return True
                if phase == "chain" and (line.startswith(_TRACEBACK) or _GROUP_TRACEBACK.match(line)):
                    self._append(line, out)
                    self._phase = "frames"
                    return True
                self._blanks = 0
                out += self.flush()
                return False
            if indented or line.startswith(_TRACEBACK) or _GROUP_TRACEBACK.match(line):
                self._append(line, out)
                if phase == "chain":
                    self._phase = "frames"
                return True
            if phase == "frames":  # the exception line ends the frames
                self._append(line, out)
                self._phase = "exception"
                return True
            return False
        if kind == "node":
            return self._node(line, indented, out)
        # plain or stack
        if indented:
            self._append(line, out)
            if _FRAME.match(line):
                self._kind = "stack"
            return True
        if kind == "stack" and line.startswith("Caused by: "):
            self._append(line, out)
            return True
        if (line.startswith(_TRACEBACK) and len(self._lines) == 1 and self._has_level(self._lines[0])):
            self._append(line, out)
            self._kind, self._phase = "python", "frames"
            return True
        return False

    def _node(self, line: str, indented: bool, out: list[Group]) -> bool:
        phase = self._phase
        if phase == "head" and not self._blanks:
            self._append(line, out)  # the source line
            self._phase = "source"
            return True
        if phase == "source" and not self._blanks and _CARET.match(line):
            self._append(line, out)
            self._phase = "caret"
            return True
        if phase == "caret" and self._blanks:
            self._append(line, out)  # the error line, after the blank
            self._phase = "error"
            return True
        if phase == "error" and not self._blanks and indented:
            self._append(line, out)
            self._phase = "frames"
            return True
        if phase == "frames" and not self._blanks and indented:
            self._append(line, out)
            return True
        if phase in ("frames", "error") and self._blanks and line.startswith("Node.js v"):
            self._append(line, out)
            out += self.flush()
            return True
        if phase in ("head", "source", "caret"):
            # Not a crash report after all: the held lines are ordinary lines.
            held, blanks = self._lines, self._blanks
            self._lines, self._chars, self._kind, self._phase, self._blanks = [], 0, "plain", "", 0
            for index, previous in enumerate(held):
                if index == 0 or not self._continues(previous, out):
                    self._start(previous, "plain", "", out)
            if blanks:
                out += self.flush()
                return False
            return self._continues(line, out)
        self._blanks = 0
        out += self.flush()
        return False
