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
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import re2

__all__ = ["BatchPrescan", "match_spans"]

_NAMED_GROUP = "(?P<"
_UNANCHORED = getattr(getattr(getattr(re2, "_re2", None), "RE2", None), "Anchor", None)


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


class BatchPrescan:
    def __init__(self, patterns: Sequence[str]) -> None:
        options = re2.Options()
        options.log_errors = False
        options.max_mem = 64 << 20
        # Named groups may repeat across detectors; the pre-scan only needs where, not which.
        patterns = [widen_whitespace(p) for p in patterns]
        body = "|".join(f"(?:{_strip_names(p)})" for p in patterns)
        self._regex = re2.compile(body.encode("utf-8"), options) if patterns else None
        # Per flagged string, an RE2 set says exactly which detectors can match it, so the
        # rewrite runs those two or three instead of all of them.
        self._set = re2.Set.SearchSet(options)
        for pattern in patterns:
            self._set.Add(_strip_names(pattern))
        if patterns:
            self._set.Compile()
        # The binding's own Match, without the wrapper's call and type check (it runs once per
        # flagged string); the wrapper where a binding has no `_set`.
        inner = getattr(self._set, "_set", None)
        self._set_match = inner.Match if inner is not None else self._set.Match

    def which(self, text: str) -> list[int]:
        """Indexes of the patterns that match somewhere in `text`, ascending."""
        if self._regex is None:
            return []
        found = self._set_match(text.encode("utf-8", "surrogatepass"))
        return sorted(found) if found else []

    def candidates(self, texts: Sequence[str]) -> list[int]:
        """Indexes of the strings in `texts` that some detector may match, ascending."""
        if self._regex is None or not texts:
            return []
        encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
        joined = b"\n".join(encoded)
        # starts[i] is the byte offset of string i inside `joined`.
        starts = [0, *accumulate(len(e) + 1 for e in encoded)][:-1]
        marked: list[int] = []
        last = -1
        for start, end in match_spans(self._regex, joined):
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


def _strip_names(pattern: str) -> str:
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
