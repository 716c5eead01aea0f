"""Text from stored records made safe to show on a terminal.

Log bodies, service names, user ids and attribute values come from applications — or from
whoever can make an application log what they send. Printed raw, `ESC [ … m` recolours the
operator's terminal, `ESC ] 52 ; …` can set its clipboard, `\\r` or a cursor movement can hide
or rewrite what was printed before, 8-bit C1 controls (`\\x9b` is CSI) do the same on terminals
that honour them, and Unicode bidi overrides (`U+202E`) reorder what the reader sees. Every
human output of `sluice logs` (and the server's TXT and CSV exports) passes its text through
`printable`, which writes each such character as a visible escape (`\\x1b`, `\\n`, `\\u202e`).
JSON output for programs (`--json`, JSONL exports) is the stored line exactly. A JSON line
shown to people (CSV's `record` column) goes through `printable_json`: JSON escapes C0
controls itself but not DEL, C1 or bidi characters, which become `\\u009b`-style escapes —
the same JSON value, safe to look at.
"""

from __future__ import annotations

__all__ = ["printable", "printable_json"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 controls, DEL, C1 controls; the bidi embedding/override/isolate marks and the Unicode line
# and paragraph separators (which move the cursor like a newline in some terminals).
_UNSAFE = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F,
           *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]
_TABLE = {
    code: _NAMED.get(chr(code)) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in _UNSAFE
}
# C0 controls never occur raw in a JSON line (JSON escapes them; whitespace between tokens would
# not survive as an escape): only the rest.
_JSON_TABLE = {code: f"\\u{code:04x}" for code in _UNSAFE if code >= 0x7F}


def printable(text: str) -> str:
    """`text` with every control or bidi character written as a visible escape."""
    return text.translate(_TABLE)


def printable_json(line: str) -> str:
    """A JSON text with the characters `printable` escapes written as JSON `\\uXXXX` escapes:
    it decodes to the same value (they can only occur inside strings: JSON's structure is
    plain ASCII)."""
    return line.translate(_JSON_TABLE)
