"""Property tests for the masking engine: it never raises, is idempotent, batches change nothing,
and known canary secrets never survive whatever text surrounds them."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
import re2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.masking import DetectorSetting, Masker, MaskerConfig
from sluice.masking._prescan import match_spans
from sluice.masking.validators import card_ok, ip_ok, luhn_valid

MASKER = Masker(MaskerConfig(detectors={"phone": DetectorSetting(enabled=True)}))
SMALL_CHUNKS = Masker(MaskerConfig(chunk_chars=1024, overlap_chars=256))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that looks like logs: the characters detectors care about, so random strings come close to
# secrets, tokens and their look-alikes far more often than uniform unicode would.
LOGGY = st.text(
    alphabet=st.sampled_from(list("aAkKsS019457 -_.:=/@?&%\"'\\\n[]{}()+,;xXpPgGhH")), max_size=120,
)
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=()), max_size=200)
KEYS = st.one_of(st.none(), st.sampled_from(
    ["password", "http.route", "user.id", "message", "db.statement", "X-Api-Key", ""]))

CANARIES = [
    "gh" + "p_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2",
    "AK" + "IA" + "Q7W2E9R4T1Y6U3I8",
    "password=" + "Canary5ecretValue",
    "4111 1111 1111 1111",
    "canary.person@example.com",
    "postgres://app:" + "Canary5ecret" + "@db:5432/x",
    "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJjYW5hcnkifQ." + "c2lnbmF0dXJlMTIz",
    "xox" + "b-1234567890-" + "CanarySlackToken",
    "DE89370400440532013000",
    "123-45-6789",
]
# The part of each canary that must not appear in the output.
CANARY_CORES = [
    CANARIES[0], CANARIES[1], "Canary5ecretValue", "4111 1111 1111 1111", "canary.person",
    "Canary5ecret", "c2lnbmF0dXJlMTIz", "CanarySlackToken", "DE89370400440532013000", "123-45-6789",
]


@FAST
@given(ANY_TEXT, KEYS)
def test_mask_never_raises_on_any_unicode_including_lone_surrogates(text: str, key: str | None) -> None:
    out = MASKER.mask(text, key)
    assert isinstance(out, str)


@FAST
@given(st.one_of(LOGGY, ANY_TEXT))
def test_masking_twice_equals_masking_once(text: str) -> None:
    once = MASKER.mask(text)
    assert MASKER.mask(once) == once


@FAST
@given(st.lists(st.one_of(LOGGY, st.sampled_from(CANARIES)), max_size=12))
def test_batch_result_equals_masking_each_string_alone(texts: list[str]) -> None:
    """Joining a batch for the one-pass pre-scan must not change any string's outcome."""
    batch = MASKER.mask_many(texts).values
    assert [t if v is None else v for t, v in zip(texts, batch, strict=True)] == [MASKER.mask(t) for t in texts]


@FAST
@given(st.lists(st.one_of(LOGGY, st.sampled_from(CANARIES), st.builds(
    lambda a, c, b: f"{a}{c}{b}", LOGGY, st.sampled_from(CANARIES), LOGGY)), max_size=8))
def test_pre_scan_never_hides_a_string_a_detector_would_change(texts: list[str]) -> None:
    """The batch pre-scan may only skip strings that running every detector leaves unchanged."""
    fast = MASKER.mask_many(texts).values
    for text, value in zip(texts, fast, strict=True):
        assert (text if value is None else value) == MASKER.mask_without_prescan(text)


@FAST
@given(st.lists(st.tuples(st.one_of(LOGGY, ANY_TEXT, st.sampled_from(CANARIES), st.builds(
    lambda a, c, b: f"{a}{c}{b}", LOGGY, st.sampled_from(CANARIES), LOGGY)), KEYS), max_size=10))
def test_a_prescanned_batch_masks_exactly_like_a_scanned_one(pairs: list[tuple[str, str | None]]) -> None:
    """`prescanned` skips the batch pre-scan (the receiver's raw scan did that work): every
    string then meets the per-string detector set, with the same outcome in every field."""
    texts = [text for text, _ in pairs]
    keys = [key for _, key in pairs]
    assert MASKER.mask_many(texts, keys, prescanned=True) == MASKER.mask_many(texts, keys)
    assert MASKER.mask_many(texts, prescanned=True) == MASKER.mask_many(texts)


@FAST
@given(LOGGY, st.sampled_from(range(len(CANARIES))), LOGGY)
def test_a_canary_never_survives_its_surroundings(prefix: str, which: int, suffix: str) -> None:
    text = f"{prefix}\n{CANARIES[which]}\n{suffix}"
    assert CANARY_CORES[which] not in MASKER.mask(text)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=5000), st.sampled_from(range(len(CANARIES))))
def test_a_canary_in_a_long_string_is_found_at_any_offset(offset: int, which: int) -> None:
    text = "x " * offset + "\n" + CANARIES[which] + "\n" + "y " * 2000
    assert CANARY_CORES[which] not in SMALL_CHUNKS.mask(text)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(LOGGY, st.sampled_from(CANARIES)), min_size=20, max_size=80))
def test_scanning_in_windows_gives_the_same_result_as_one_pass(pieces: list[str]) -> None:
    """Window edges (1 KiB windows here) must neither hide a secret nor split one."""
    text = " ".join(pieces) * 3
    assert SMALL_CHUNKS.mask(text) == Masker(MaskerConfig(chunk_chars=1 << 20)).mask(text)


# -- the mask token is no hiding place ------------------------------------------------------------
# (A pseudonym, `pseu_<hex>`, is a word: glued to a word it hides a `\b` as any word would.)
TOKENS = st.sampled_from([
    "[REDACTED:kv_secret]", "[REDACTED:email]", "[REDACTED:x]", "[REDACTED:bearer_token]",
    "[HASH:kv_secret:0123456789ab]", "[REDACTED:url_credentials]",
])
# (key, value) pairs whose value must vanish even when a token sits between them or inside it.
KEYED = [
    ("password=", "Canary5ecretValue"), ("Bearer ", "Canary5ecretToken1"),
    ("postgres://app:", "Canary5ecret@db:5432/x"), ("Authorization: Bearer ", "Canary5ecretToken2"),
    ('{"api_key": "', 'Canary5ecretKey"}'), ("Cookie: sid=", "Canary5ecretCookie"),
    ("AccountKey=", "abcdefghijABCDEFGHIJ1234=="),
]


@FAST
@given(st.lists(st.one_of(LOGGY, TOKENS, st.just("pseu_0123456789abcdef"), st.sampled_from(CANARIES),
                          st.sampled_from([k for k, _ in KEYED])), max_size=8))
def test_masking_text_with_tokens_in_it_twice_equals_once(pieces: list[str]) -> None:
    """Glued together or apart, tokens, keys and secrets mask the same on a second pass."""
    once = MASKER.mask("".join(pieces))
    assert MASKER.mask(once) == once


@FAST
@given(LOGGY, TOKENS, st.sampled_from(range(len(KEYED))), st.sampled_from([" ", "\n"]))
def test_a_secret_glued_to_a_token_is_still_masked(prefix: str, token: str, which: int, gap: str) -> None:
    key, value = KEYED[which]
    core = value.split("@")[0].rstrip('"}')
    for text in (f"{prefix}{gap}{key}{token}{value}", f"{prefix}{gap}{token}{key}{value}",
                 f"{prefix}{gap}{key}{value.replace(core, core[:6] + token + core[6:])}"):
        masked = MASKER.mask(text)
        assert core not in masked, (text, masked)
        assert core[6:] not in masked, (text, masked)


@FAST
@given(LOGGY, TOKENS, st.sampled_from(range(len(CANARIES))), LOGGY)
def test_a_canary_right_after_a_token_is_still_masked(prefix: str, token: str, which: int, suffix: str) -> None:
    text = f"{prefix}{token}{CANARIES[which]}\n{suffix}"
    assert CANARY_CORES[which] not in MASKER.mask(text)


# -- benign text is never touched --------------------------------------------------------------------
_WORDS = ["GET", "POST", "order", "shipped", "took", "worker", "flushed", "records", "status", "ok", "route",
          "latency", "version", "retry", "count", "shard", "region", "eu-west-1", "cache", "hit", "miss",
          "pass", "token_count", "session_duration", "password reset requested", "secret_name"]
_BENIGN_ATOMS = st.one_of(
    st.sampled_from(_WORDS),
    st.uuids().map(str),
    st.binary(min_size=8, max_size=32).map(bytes.hex),  # trace/span ids, git SHAs, digests
    st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
    st.dates().map(str),
    st.times().map(lambda t: t.isoformat(timespec="seconds")),
    st.tuples(*[st.integers(0, 99)] * 3).map(lambda v: f"v{v[0]}.{v[1]}.{v[2]}"),
    st.integers(1, 65535).map(lambda p: f"port :{p}"),
    st.tuples(st.integers(0, 99_999), st.sampled_from(["ms", "s", "ns", "us", "m", "h"])).map(
        lambda d: f"{d[0]}{d[1]}"),
    st.floats(0, 10_000, allow_nan=False).map(lambda f: f"took {f:.3f}s"),
    st.integers(1_000_000_000, 1_999_999_999).map(lambda t: f"ts={t}"),  # epoch s, ms, ns
    st.integers(1_000_000_000_000, 1_999_999_999_999).map(lambda t: f"ts_ms={t}"),
    st.integers(10**18, 2 * 10**18 - 1).map(lambda t: f"ts_ns={t}"),
    st.integers(0, 10**9).map(lambda n: f"order #{n}"),
    st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "10.0.0.0/8", "192.168.0.0/16", "fe80::/10",
                     "[::1]:4317", "127.0.0.1:8080", "localhost:4318"]),
    st.tuples(st.integers(0, 99), st.integers(0, 9999)).map(
        lambda v: f"id 000-{v[0]:02d}-{v[1]:04d}"),  # SSN-shaped but never issued (area 000)
)
_BENIGN_TEXT = st.lists(_BENIGN_ATOMS, min_size=1, max_size=10).flatmap(
    lambda atoms: st.sampled_from([" ", ", ", " | ", "\n", "; "]).map(lambda sep: sep.join(atoms)))
DEFAULT = Masker()


@FAST
@given(_BENIGN_TEXT)
def test_masking_never_changes_or_grows_benign_text(text: str) -> None:
    """Ids, hashes, times, versions, ports, durations, epoch stamps and non-personal addresses,
    in any order and joined in any usual way, come out exactly as they went in."""
    result = DEFAULT.mask_many([text])
    assert result.values[0] is None, (text, result.values[0], result.counts)


@pytest.mark.parametrize("space", [" ", "\t", "\x0b", "\x0c", "\r", "\n"])
@pytest.mark.parametrize("template", [
    "password{s}={s}Canary5ecretValue", "Authorization:{s}Bearer{s}Canary5ecretToken1",
    "Bearer{s}Canary5ecretToken1", "AccountKey{s}={s}abcdefghijABCDEFGHIJ1234==",
])
def test_every_whitespace_the_detectors_accept_is_seen_by_the_pre_scan(space: str, template: str) -> None:
    """RE2's \\s lacks \\v while Python's has it: the pre-scan must still flag these strings."""
    text = template.format(s=space)
    assert MASKER.mask(text) == MASKER.mask_without_prescan(text)
    assert "Canary5ecret" not in MASKER.mask(text)


@FAST
@given(st.lists(st.sampled_from([*CANARIES, "ip 10.1.2.3 and 10.1.2.3", "plain words"]), max_size=12))
def test_a_string_repeated_in_a_batch_is_counted_each_time(texts: list[str]) -> None:
    """Repeated strings are rewritten once per batch, but every occurrence gets its new text, its
    hits and its share of the per-detector counts, exactly as when masked one by one."""
    batch = MASKER.mask_many(texts)
    expected_counts: Counter[str] = Counter()
    for index, text in enumerate(texts):
        alone = MASKER.mask_many([text])
        assert batch.values[index] == alone.values[0]
        assert batch.hits.get(index) == alone.hits.get(0)
        assert (index in batch.drop) == (0 in alone.drop)
        expected_counts.update(alone.counts)
    assert batch.counts == expected_counts


_OCTETS = st.sampled_from(["0", "00", "1", "01", "9", "10", "99", "100", "127", "199", "200", "249",
                           "250", "255", "256", "300", "1000", "-1", "a", "", " 1", "0x1", "1e2",
                           "\u0661", "\u00b2"])


@FAST
@given(st.lists(_OCTETS, min_size=1, max_size=6).map(".".join) | st.text(max_size=20))
def test_the_ipv4_fast_path_answers_as_ipaddress_does(text: str) -> None:
    """`ip_ok` decides dotted quads without `ipaddress`; its answer must be the same."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        expected = False
    else:
        expected = not (address.is_loopback or address.is_unspecified)
    assert ip_ok(text) is expected


@FAST
@given(st.lists(st.one_of(LOGGY, st.sampled_from(CANARIES)), max_size=10))
def test_match_spans_finds_what_finditer_finds(pieces: list[str]) -> None:
    """The raw and batch pre-scans read match spans straight from the RE2 program: the same
    spans, in the same order, as the binding's `finditer`, also on empty matches."""
    data = "\n".join(pieces).encode("utf-8", "surrogatepass")
    for regex in (MASKER._prescan._scan.regex, re2.compile(rb"a*"), re2.compile(rb"(?:\d\.)+\d|p(?:ass)?")):
        assert match_spans(regex, data) == [m.span() for m in regex.finditer(data)]


def _card_ok_reference(text: str) -> bool:
    """`card_ok` as it was before its ASCII fast path: one Python step per character."""
    separators = {c for c in text if not c.isdigit()}
    if separators:
        if len(separators) > 1:
            return False
        groups = text.split(separators.pop())
        if any(len(group) < 4 for group in groups[:-1]):
            return False
    digits = "".join(c for c in text if c.isdigit())
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456":
        return False
    if len(set(digits)) == 1:
        return False
    return luhn_valid(digits)


_CARD_LIKE = st.lists(st.text(alphabet="0123456789", min_size=0, max_size=7), min_size=1, max_size=6).flatmap(
    lambda groups: st.sampled_from(["", " ", "-", ".", "\u00a0"]).map(lambda sep: sep.join(groups)))


@FAST
@given(_CARD_LIKE | st.text(alphabet="0123456789 -4\u0663", max_size=24))
def test_the_card_check_fast_path_answers_as_before(text: str) -> None:
    """`card_ok` checks ASCII text with str methods; its answer must not change."""
    assert card_ok(text) is _card_ok_reference(text)


@pytest.mark.parametrize(("text", "card"), [
    ("4111 1111 1111 1111", True), ("4111-1111-1111-1111", True), ("4111111111111111", True),
    ("4111 1111 1111 1112", False), ("4111 1111-1111 1111", False), ("4444 4444 4444 4444", False),
])
def test_the_card_check_fast_path_on_known_numbers(text: str, card: bool) -> None:
    assert card_ok(text) is card
