"""A pattern's matches found from its anchor: the same matches as `finditer`, for less work.

`kv_secret` starts `\\b[\\w.-]*?(?i:password|token|api_key|...)`: a key with any prefix
(`db_password`, `x-api-key`). Python's regex engine tries that at every word boundary of a
string, stretching the prefix one character at a time and trying the keywords at each. On an
auth log line of 68 characters that holds one `password=`, that was 13.6 µs per `finditer`, most
of it before the key and after the value, where no key is.

Every match holds an occurrence of the keyword alternation (the anchor), and before it in the
match only key characters (the lead). So the next match, searching from `pos`, cannot start
before the first anchor occurrence at or after `pos` less the run of lead characters in front of
it: a match starting earlier would hold lead characters up to its own keyword, which lies at or
after that occurrence, and so across the character that ended the run. One search for the
anchor and one search of the full pattern from there give the same next match as the full
search from `pos`; when no anchor occurrence is left, no match is.

Exactness rests on the detector's pattern and anchor being written from the same parts
(detectors.py builds kv_secret's key from `_KEY_LEAD` and `_KEY_ANCHOR`); the differential tests
in tests/sdk/test_masking_anchored.py hold the two to the same matches.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

__all__ = ["AnchoredPattern"]


class AnchoredPattern:
    """`regex`'s matches, searched for from the occurrences of `anchor` (see the module doc).

    `lead` is a regex character class: what may come before the anchor in a match. Both are
    compiled with `flags`, the detector's own (re.ASCII for the built-ins), so they read the
    text as `regex` does."""

    __slots__ = ("_anchor", "_ascii_lead", "_lead", "regex")

    def __init__(self, regex: re.Pattern[str], anchor: str, lead: str, flags: int = re.ASCII) -> None:
        self.regex = regex
        self._anchor = re.compile(anchor, flags)
        self._lead = re.compile(lead, flags)
        self._ascii_lead = frozenset(c for c in map(chr, range(128)) if self._lead.fullmatch(c))

    def finditer(self, string: str, pos: int = 0, endpos: int = sys.maxsize) -> Iterator[re.Match[str]]:
        """What `regex.finditer(string, pos, endpos)` yields, in the same order."""
        anchor, regex = self._anchor.search, self.regex.search
        ascii_lead, lead = self._ascii_lead, self._lead.fullmatch
        position = max(pos, 0)
        end = max(0, min(endpos, len(string)))
        while True:
            found = anchor(string, position, end)
            if found is None:
                return
            start = found.start()
            while start > position and (
                (char := string[start - 1]) in ascii_lead or (not char.isascii() and lead(char))
            ):
                start -= 1
            match = regex(string, start, end)
            if match is None:
                return
            if match.start() == match.end():
                # A plain `finditer` from `position` yields this match first (none starts
                # before it), then keeps its own rule after an empty match: let it go on.
                yield from self.regex.finditer(string, position, end)
                return
            yield match
            position = match.end()
