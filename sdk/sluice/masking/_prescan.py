"""One RE2 pass over a whole batch to find the few strings worth a closer look.

Most log strings carry no secret. Running two dozen detectors over each of them costs two dozen
regex calls per string; instead the strings of a batch are joined and one RE2 program (the
alternation of every detector's `prescan` pattern) runs over the lot in linear time. Every
match is mapped back to the strings it touches, and only those are rewritten.

Why joining is safe: the scan is leftmost-first, so for any string holding a match of some
prescan pattern, the scan reports a match that starts at or before it and either ends before
the string (the scan then goes on) or overlaps it. Marking every string a reported match
overlaps therefore marks every string with a match, even when a match runs across the joint.
A flagged string then goes through an RE2 set of the same patterns, which names every pattern
that matches it anywhere, so only those detectors rewrite it.

Both RE2 calls run in the optional C++ twin `_re2scan` when it is built (`Scan`, and the set in
`BatchPrescan`): one call per buffer or string instead of one binding call per match. The
binding still compiles every pattern first and so decides what is valid; `match_spans` and the
binding's set are the reference the twin is tested against (tests/sdk/test_masking_re2scan.py).
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import re2

__all__ = ["MAX_MEM", "BatchPrescan", "Scan", "match_spans", "strip_group_names"]

_NAMED_GROUP = "(?P<"
_UNANCHORED = getattr(getattr(getattr(re2, "_re2", None), "RE2", None), "Anchor", None)
MAX_MEM = 64 << 20  # RE2's budget per program: the DFA of two dozen detectors fits


def _load_compiled() -> Any:
    """`sluice.masking._re2scan`, or None when it is not built or SLUICE_PURE_PYTHON is set."""
    if os.environ.get("SLUICE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from sluice.masking import _re2scan  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _re2scan


COMPILED: Any = _load_compiled()


def _options(max_mem: int) -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = max_mem
    return options


def match_spans(regex: Any, data: bytes) -> list[tuple[int, int]]:
    """The (start, end) of every match of a compiled RE2 `regex` in `data`, as `finditer` finds
    them, without its per-match objects.

    A scan of a PII-dense request reports a match every few hundred bytes; the binding's
    `finditer` builds a generator step and a match object for each, which cost more than RE2's
    own scan. Here the compiled program is asked directly for the span of the next match; the
    loop moves on exactly as `finditer` does (past an empty match by one byte). A binding
    without that program object gets `finditer`.
    """
    program = getattr(regex, "_regexp", None)
    if program is None or _UNANCHORED is None:
        return [match.span() for match in regex.finditer(data)]
    unanchored = _UNANCHORED.UNANCHORED
    find = program.Match
    out: list[tuple[int, int]] = []
    pos, end = 0, len(data)
    while True:
        span = find(unanchored, data, pos, end)[0]
        if span[0] < 0:
            return out
        out.append(span)
        if pos == end:
            return out
        pos = pos + 1 if pos == span[1] else span[1]


class Scan:
    """Every match of one RE2 regex in a byte string (`spans`), as `match_spans` finds them.

    The binding compiles `pattern` (raising `re2.error` as it would) and is kept as `regex`;
    the C++ twin answers `spans` when it is built and takes the pattern too (it links its own
    RE2, so one it refuses only means the binding scans).
    """

    def __init__(self, pattern: bytes, max_mem: int = MAX_MEM) -> None:
        self.regex: Any = re2.compile(pattern, _options(max_mem))
        self._program: Any = None
        if COMPILED is not None:
            try:
                self._program = COMPILED.Program(pattern, max_mem)
            except ValueError:
                self._program = None

    @property
    def compiled(self) -> bool:
        """Whether `spans` runs in the C++ twin."""
        return self._program is not None

    def spans(self, data: bytes) -> list[tuple[int, int]]:
        """The (start, end) of every match in `data`, in order."""
        if self._program is not None:
            spans: list[tuple[int, int]] = self._program.spans(data)
            return spans
        return match_spans(self.regex, data)


class BatchPrescan:
    def __init__(self, patterns: Sequence[str]) -> None:
        options = _options(MAX_MEM)
        # Named groups may repeat across detectors; the pre-scan only needs where, not which.
        stripped = [strip_group_names(widen_whitespace(p)) for p in patterns]
        body = "|".join(f"(?:{p})" for p in stripped)
        self._scan = Scan(body.encode("utf-8")) if stripped else None
        # Per flagged string, an RE2 set says exactly which detectors can match it, so the
        # rewrite runs those two or three instead of all of them.
        self._set = re2.Set.SearchSet(options)
        for pattern in stripped:
            self._set.Add(pattern)
        if patterns:
            self._set.Compile()
        # The binding's own Match, without the wrapper's call and type check (it runs once per
        # flagged string); the wrapper where a binding has no `_set`.
        inner = getattr(self._set, "_set", None)
        self._set_match = inner.Match if inner is not None else self._set.Match
        self._compiled_which: Any = None
        if COMPILED is not None and patterns:
            try:
                self._compiled_which = COMPILED.PatternSet(stripped, MAX_MEM).which
            except ValueError:
                self._compiled_which = None

    def which(self, text: str) -> list[int]:
        """Indexes of the patterns that match somewhere in `text`, ascending."""
        if self._scan is None:
            return []
        if self._compiled_which is not None:
            found: list[int] = self._compiled_which(text)
            return found
        return self.which_python(text)

    def which_python(self, text: str) -> list[int]:
        """`which` through the binding: the reference the C++ twin is tested against."""
        if self._scan is None:
            return []
        found = self._set_match(text.encode("utf-8", "surrogatepass"))
        return sorted(found) if found else []

    def candidates(self, texts: Sequence[str]) -> list[int]:
        """Indexes of the strings in `texts` that some detector may match, ascending."""
        if self._scan is None or not texts:
            return []
        encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
        joined = b"\n".join(encoded)
        # starts[i] is the byte offset of string i inside `joined`.
        starts = [0, *accumulate(len(e) + 1 for e in encoded)][:-1]
        marked: list[int] = []
        last = -1
        for start, end in self._scan.spans(joined):
            first = bisect_right(starts, start) - 1
            final = bisect_right(starts, max(start, end - 1)) - 1
            for index in range(max(first, last + 1), final + 1):
                marked.append(index)
            last = max(last, final)
        return marked


_SPACE_CLASS_BODY = "\\t\\n\\x0b\\f\\r "


def widen_whitespace(pattern: str) -> str:
    """`pattern` with every `\\s` matching vertical tab too.

    The detectors run in Python's `re` (ASCII), whose `\\s` includes `\\v`; RE2's does not. A
    pre-scan must match wherever its detector does, so in RE2 `\\s` becomes `[\\t\\n\\x0b\\f\\r ]`
    (inside a character class, those characters). Wider is always safe for a pre-scan.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "s":
                out.append(_SPACE_CLASS_BODY if in_class else f"[{_SPACE_CLASS_BODY}]")
            else:
                out.append(char + nxt)
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(char)
            # A "]" first in the class (after an optional "^") is a literal, not its end.
            if pattern[i + 1 : i + 2] == "^":
                out.append("^")
                i += 1
            if pattern[i + 1 : i + 2] == "]":
                out.append("]")
                i += 1
        elif char == "]" and in_class:
            in_class = False
            out.append(char)
        else:
            out.append(char)
        i += 1
    return "".join(out)


def strip_group_names(pattern: str) -> str:
    """`pattern` with every named group made a plain group: in one alternation of several
    detectors the same name may repeat, and a scan needs where, not which."""
    out = []
    pos = 0
    while True:
        found = pattern.find(_NAMED_GROUP, pos)
        if found < 0:
            out.append(pattern[pos:])
            return "".join(out)
        close = pattern.find(">", found)
        out.append(pattern[pos:found])
        out.append("(?:")
        pos = close + 1
