"""`printable`: what a terminal is shown of app-sent text (sluice logs, TXT/CSV exports)."""

from __future__ import annotations

import json

from sluice_collector.query.printable import printable, printable_json


def test_every_control_and_bidi_character_becomes_a_visible_escape() -> None:
    hostile = "a\x1b[31mb\x07c\rd\ne\tf\x00g\x7fh\x9bi\u202ej\u2066k\u2028l"
    shown = printable(hostile)
    assert shown == "a\\x1b[31mb\\x07c\\rd\\ne\\tf\\x00g\\x7fh\\x9bi\\u202ej\\u2066k\\u2028l"
    assert all(ch.isprintable() for ch in shown)


def test_ordinary_text_is_unchanged() -> None:
    text = "Zoë paid 12 € — “ok” 東京 C:\\temp\\x"
    assert printable(text) == text
    assert printable_json(json.dumps({"m": text}, ensure_ascii=False)) == json.dumps(
        {"m": text}, ensure_ascii=False)


def test_a_json_line_keeps_its_value_and_loses_its_raw_controls() -> None:
    line = json.dumps({"body": "\x1b[33m\x9b2J\u202e", "n": 1}, ensure_ascii=False)
    shown = printable_json(line)
    assert json.loads(shown) == json.loads(line)
    assert all(ch.isprintable() for ch in shown)
