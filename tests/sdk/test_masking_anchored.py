"""`AnchoredPattern` finds exactly the matches `finditer` finds (sluice/masking/_anchored.py).

The kv_secret detector is the one built-in with an anchor; its per-string rewrite searches
through it, while `Masker.mask_without_prescan` (the reference of the other property tests)
keeps the plain pattern. Here the two searches meet match by match, groups included, on text
dense in keys, key characters, separators, values and the characters case-folding trips on.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.masking import Masker
from sluice.masking._anchored import AnchoredPattern
from sluice.masking.detectors import _KEYWORD, BUILTIN_DETECTORS

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KV = next(d for d in BUILTIN_DETECTORS if d.name == "kv_secret")
assert KV.anchor is not None
KV_REGEX = re.compile(KV.pattern, re.ASCII)
KV_ANCHORED = AnchoredPattern(KV_REGEX, *KV.anchor)

PIECES = st.sampled_from([
    "password", "PassWord", "passwd", "pwd", "token", "api_key", "api-key", "apikey", "secret_key",
    "session_id", "sessid", "client_secret", "credential", "x-", "db_", "user.", "my", "_", ".", "-",
    "=", ":", " ", "\t", "\n", "\r", "=>", "%3D", "%3a", "%22", "\"", "'", "\\\"", "<", ">", "</",
    "&", "?", ";", ",", "(", ")", "[", "{", "}", "hunter2", "s3cr3t", "abc", "42", "é", "ſ",
    "\u212a", "\u0130", "ß", "\ud800", "password=", "token: ", "<password>", "key",
])
KEYISH = st.lists(PIECES, max_size=24).map("".join)
# A key in any mix of cases, after a prefix, before a separator and a value.
WORDS = st.sampled_from(["password", "passphrase", "pwd", "private_key", "kennwort", "secret-key",
                         "session_token", "signing_key", "token", "api-key", "client_secret",
                         "credentials", "master_key", "hmac_key", "auth_key", "access_key"])
CASED = st.tuples(WORDS, st.randoms(use_true_random=False)).map(
    lambda pair: "".join(c.upper() if pair[1].random() < 0.5 else c for c in pair[0]))
KEYED = st.tuples(KEYISH, st.sampled_from(["", "db_", "x-", "my.", "A"]), CASED,
                  st.sampled_from(["=", ": ", "\"=\"", "%3D", "=>", ">", " "]), KEYISH).map("".join)
ANY = st.text(max_size=80)


def spans(matches: object) -> list[tuple[tuple[int, int], tuple[str | None, ...]]]:
    return [(m.span(), m.groups()) for m in matches]  # type: ignore[attr-defined]


@FAST
@given(st.one_of(KEYISH, KEYED, ANY, st.tuples(KEYISH, ANY, KEYED).map("".join)),
       st.integers(min_value=-3, max_value=90), st.integers(min_value=-3, max_value=200))
def test_the_anchored_search_finds_exactly_the_matches_finditer_finds(text: str, pos: int, endpos: int) -> None:
    assert spans(KV_ANCHORED.finditer(text, pos, endpos)) == spans(KV_REGEX.finditer(text, pos, endpos))
    assert spans(KV_ANCHORED.finditer(text)) == spans(KV_REGEX.finditer(text))


def test_a_key_prefix_before_the_anchor_is_part_of_the_match() -> None:
    text = "x=1 my.db_Password=hunter2 X-API-KEY: abc;token=t0k"
    found = [m.group(0) for m in KV_ANCHORED.finditer(text)]
    assert found == ["my.db_Password=hunter2", "X-API-KEY: abc", "token=t0k"]
    assert found == [m.group(0) for m in KV_REGEX.finditer(text)]


def test_the_search_starts_no_earlier_than_pos_and_stops_at_endpos() -> None:
    text = "db_password=hunter2 and token=t0k"
    # From inside `db`, no `\b` is left in front of the first key: finditer's first match is
    # the second key, and so is the anchored search's, though it starts from the first.
    assert [m.group(0) for m in KV_ANCHORED.finditer(text, 1)] == ["token=t0k"]
    assert spans(KV_ANCHORED.finditer(text, 1)) == spans(KV_REGEX.finditer(text, 1))
    assert [m.group(0) for m in KV_ANCHORED.finditer(text, 0, 15)] == ["db_password=hun"]
    assert spans(KV_ANCHORED.finditer(text, 0, 15)) == spans(KV_REGEX.finditer(text, 0, 15))


def test_an_empty_match_hands_over_to_finditer_and_ends() -> None:
    # `(?=key)` matches empty in front of each anchor: the plain search takes over from there.
    anchored = AnchoredPattern(re.compile("(?=key)"), "key", "[a-z]")
    text = "a key and a keykey"
    assert spans(anchored.finditer(text)) == spans(re.compile("(?=key)").finditer(text))
    assert len(spans(anchored.finditer(text))) == 3


def test_the_kv_secret_rewrite_searches_through_the_anchor() -> None:
    masker = Masker()
    finders = {active.name: active.finder for active in masker._active}
    assert isinstance(finders["kv_secret"], AnchoredPattern)
    text = "POST /login?user=u-1&password=fd746bb6a3deQz! from 65.0.138.222"
    assert masker.mask(text) == masker.mask_without_prescan(text)
    assert "fd746bb6a3deQz!" not in masker.mask(text)


@FAST
@given(st.one_of(KEYISH, KEYED, ANY))
def test_the_anchor_starts_where_the_detectors_keyword_starts(text: str) -> None:
    # The anchor spells the keywords' first letter in both cases so that Python's engine can
    # skip positions; under ASCII rules it must find the same leftmost keyword.
    plain = re.compile(r"(?i:" + _KEYWORD + ")", re.ASCII)
    anchor = re.compile(KV.anchor[0], re.ASCII)  # type: ignore[index]
    for pos in range(len(text) + 1):
        ours, theirs = anchor.search(text, pos), plain.search(text, pos)
        assert (ours and ours.span()) == (theirs and theirs.span())
