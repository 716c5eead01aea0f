"""Substitution that scans long strings in overlapping windows and never skips any text.

A multi-megabyte stack trace or payload is scanned window by window (`chunk` characters plus
`overlap` of look-ahead) so no single regex call sees more than a window. A match that starts
in a window's look-ahead is left for the next window; a match that runs into the end of a
window may have been cut short, so the next window restarts at its beginning instead; when such
a match already starts at the window's beginning, the window doubles until the match fits, so
even a match longer than a window is found whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Finder", "Pattern", "substitute", "substitute_window"]


class Finder(Protocol):
    """What this module uses of a pattern: Python `re`, RE2, or `_anchored.AnchoredPattern`."""

    def finditer(self, string: str, pos: int = ..., endpos: int = ...) -> Any: ...


class Pattern(Finder, Protocol):
    """What Python `re` and RE2 compiled patterns have in common and the engine uses."""

    def sub(self, repl: Callable[[Any], str], string: str, count: int = ...) -> str: ...


def substitute(
    regex: Finder, text: str, replace: Callable[[Any], str | None], chunk: int, overlap: int,
) -> tuple[str, int]:
    """`text` with every match replaced by `replace(match)` (None keeps it), and the count."""
    size = len(text)
    if size <= chunk + overlap:
        return substitute_window(regex, text, replace)
    out: list[str] = []
    count = 0
    pos = 0
    span = chunk + overlap
    while pos < size:
        end = min(size, pos + span)
        limit = size if end == size else pos + chunk
        written = pos
        next_pos = limit
        grow = False
        for match in regex.finditer(text, pos, end):
            start, stop = match.span()
            if start >= limit:
                break
            if stop == end and end < size:  # maybe cut short by the window
                if start > pos:
                    next_pos = start  # redo it from its start in the next window
                else:
                    grow = True  # it fills the window: redo this window, twice as large
                break
            replaced = replace(match)
            if replaced is not None:
                out.append(text[written:start])
                out.append(replaced)
                written = stop
                count += 1
            next_pos = max(limit, stop)
        if grow and written == pos:
            span *= 2
            continue
        out.append(text[written:next_pos])
        pos = next_pos
        span = chunk + overlap
    return ("".join(out), count) if count else (text, 0)


def substitute_window(
    regex: Finder, text: str, replace: Callable[[Any], str | None],
) -> tuple[str, int]:
    """`substitute` for a text no longer than one window: one `finditer` over all of it."""
    out: list[str] = []
    count = 0
    written = 0
    for match in regex.finditer(text):
        replaced = replace(match)
        if replaced is None:
            continue
        start, stop = match.span()
        out.append(text[written:start])
        out.append(replaced)
        written = stop
        count += 1
    if not count:
        return text, 0
    out.append(text[written:])
    return "".join(out), count
