"""The compiled card/e-mail/IPv4 rewrite (`sluice.masking._plainmask`) against its Python
reference (`Masker._rewrite_python`): wherever the compiled twin answers, it answers the same
text, counts and drop flag; where it cannot be exact it answers None and Python decides.

`make test` runs the suite on the compiled path; SLUICE_PURE_PYTHON=1 (or an install without a
compiler) runs the Python path, which these tests hold the twin to."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sluice.masking import DetectorSetting, Masker, MaskerConfig
from sluice.masking import engine as _engine

pytestmark = pytest.mark.skipif(
    _engine._PLAIN_REWRITE is None, reason="sluice.masking._plainmask is not built or SLUICE_PURE_PYTHON is set")

DEFAULT = Masker(MaskerConfig())
# Every action the twin models, and a deployment that turns a detector off.
VARIANTS = [
    DEFAULT,
    Masker(MaskerConfig(detectors={"ipv4": DetectorSetting(action="mask"), "card": DetectorSetting(action="drop")})),
    Masker(MaskerConfig(detectors={"ipv4": DetectorSetting(action="drop"), "email": DetectorSetting(action="drop")})),
    Masker(MaskerConfig(detectors={"email": DetectorSetting(enabled=False)})),
]
MANY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _card(rnd: random.Random, size: int) -> str:
    digits = [rnd.randint(2, 6)] + [rnd.randint(0, 9) for _ in range(size - 2)]
    total = sum((d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 == 0 else d
                for i, d in enumerate(reversed(digits)))
    return "".join(map(str, [*digits, (10 - total % 10) % 10]))


def _grouped(seed: int, size: int, sep: str) -> str:
    """A Luhn-valid card number split into groups of 1-6 digits (printed ones use 4+)."""
    rnd = random.Random(seed)
    digits = _card(rnd, size)
    groups = []
    while digits:
        cut = rnd.randint(1, 6)
        groups.append(digits[:cut])
        digits = digits[cut:]
    return sep.join(groups)


# Pieces that come close to each detector's edges: octets out of range and with leading zeros,
# Luhn-valid and -invalid cards grouped every way, URL-encoded and image-suffixed addresses, labels
# and local parts at their length limits, tokens already there, CIDR suffixes, non-ASCII digits
# and spaces, word characters glued on.
EDGES = [
        "1.2.3.4", "10.0.0.1", "127.0.0.1", "0.1.2.3", "255.255.255.255", "256.1.1.1", "01.2.3.4",
        "1.2.3.04", "1.2.3", "1.2.3.4.5", "10.0.0.0/8", "192.168.1.23/24", "1.2.3.4/", "9.9.9.9",
        "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5555 5555 5555 4444",
        "3714 496353 98431", "6666666666666", "6666 6666 66666", "4111 11 11 1111 1111", "2000-01-03 1999-03-01", "4444444444444444",
        "bob@example.org", "a.b+c@sub.example.co.uk", "bob%40example.org", "icon@2x.png",
        "LOGO@A.PNG", "x@y.z", "x@y.toolongtopleveldomainxxxxxx", "x@y." + "a" * 24, "x@y." + "a" * 25, "u@host.org-x.com", "u@a..com",
        "a@b.c1", "a@b.com_x", "%40", "@", ".", "-", "_", "/", " ", "  ", "\t", "\u2028", "\x0b",
        "\u0663", "\u00e9", "\U0001f600", "x", "A", "9", "0", "[REDACTED:card]", "[REDACTED:",
        "[HASH:card:0123456789ab]", "pseu_0123456789abcdef", "]", "[", "\"", "'", "@x", "=",
        "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com", "a@c." + "b" * 63 + ".com", "a@c." + "b" * 64 + ".com",
        "l" * 64 + "@x.com", "l" * 65 + "@x.com", "l" * 63 + "%40x.com", "l" * 64 + "%40x.com",
        # secrets other detectors mask first, in the same string
        "password=", "password=hunter2 ", "?token=", "&pass=", "postgres://app:", "://u:p@", "Bearer ",
        "Authorization: ", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "AKIAQ7W2E9R4T1Y6U3I8",
        "DE89370400440532013000", "123-45-6789", "[REDACTED:kv_secret]", "[REDACTED:x]",
    ]
PIECES = st.one_of(
    st.sampled_from(EDGES),
    st.integers(13, 19).map(lambda n: _card(random.Random(n * 7919), n)),
    st.builds(_grouped, st.integers(0, 10**6), st.integers(13, 19), st.sampled_from([" ", "-", " -"])),
    st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", *(st.integers(0, 300) for _ in range(4))),
    st.from_regex(r"[A-Za-z0-9._%+-]{1,70}(@|%40)[A-Za-z0-9-]{1,8}(\.[A-Za-z0-9-]{1,8}){0,3}\.[A-Za-z]{1,26}",
                  fullmatch=True),
    st.text(alphabet="0123456789 -.", min_size=1, max_size=24),
)
TEXTS = st.lists(PIECES, max_size=12).map("".join)
PLANS = st.sampled_from([1, 2, 3, 4, 5, 6, 7])


def _python_for_plan(masker: Masker, text: str, plan: int) -> tuple[str, int, dict[str, int], bool]:
    positions = [i for i, name in enumerate(masker.detectors) if _engine._PLAIN_BITS.get(name, 0) & plan
                 and i in masker._plain_bits]
    return masker._rewrite_python(text, positions)


@MANY
@given(TEXTS, PLANS, st.sampled_from(range(len(VARIANTS))))
@example("from 10.1.2.3, card 4111 1111 1111 1111, mail bob@example.org", 7, 0)
@example("1.2.3.4-4111 1111 1111 1111", 5, 0)
@example("x@y.com" * 30, 2, 0)
def test_compiled_rewrite_equals_python(text: str, plan: int, variant: int) -> None:
    masker = VARIANTS[variant]
    plan &= sum(_engine._PLAIN_BITS[masker.detectors[i]] for i in masker._plain_bits)
    if not plan:
        return
    compiled = masker._rewrite_compiled(text, plan | masker._plain_plus)
    if compiled is not None:
        assert compiled == _python_for_plan(masker, text, plan)


def _random_line(rnd: random.Random) -> str:
    """Up to 12 pieces, every edge piece equally likely (hypothesis favours the first ones)."""
    pieces = []
    for _ in range(rnd.randint(1, 12)):
        kind = rnd.random()
        if kind < 0.6:
            pieces.append(rnd.choice(EDGES))
        elif kind < 0.75:
            pieces.append(_grouped(rnd.randrange(10**6), rnd.randint(13, 19), rnd.choice(" -")))
        elif kind < 0.9:
            pieces.append(".".join(str(rnd.choice((0, 1, 9, 10, 99, 100, 127, 199, 200, 249, 250, 255, 256)))
                                   for _ in range(rnd.randint(3, 5))))
        else:
            pieces.append("".join(rnd.choice("0123456789 -.@%4x_") for _ in range(rnd.randint(1, 20))))
    return "".join(pieces)


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_compiled_rewrite_equals_python_on_many_random_lines(variant: int) -> None:
    """20,000 seeded lines per variant: the answers match wherever the twin answers, and it
    answers (and masks something) for a good share of them, so the comparison is not empty."""
    masker = VARIANTS[variant]
    plan = sum(_engine._PLAIN_BITS[masker.detectors[i]] for i in masker._plain_bits)
    rnd = random.Random(20261203 + variant)
    answered = masked = 0
    for _ in range(20_000):
        text = _random_line(rnd)
        compiled = masker._rewrite_compiled(text, plan | masker._plain_plus)
        if compiled is None:
            continue
        answered += 1
        masked += compiled[1] > 0
        assert compiled == _python_for_plan(masker, text, plan), text
    assert answered > 10_000, answered
    assert masked > 1_000, masked


def test_rewrite_text_equals_python_on_many_random_lines() -> None:
    """The whole per-string rewrite (`_rewrite_text`: which detectors, the Python ones first,
    the twin for card/e-mail/IPv4 after them) against the Python path on 20,000 seeded lines,
    many of which put a `password=`, a URL password or a token before an address."""
    rnd = random.Random(20261204)
    after_python = 0
    for _ in range(20_000):
        text = _random_line(rnd)
        assert DEFAULT._rewrite_text(text) == DEFAULT._rewrite_python(text), text
        positions = DEFAULT._prescan.which(text)
        tail = [p for p in positions if p in DEFAULT._plain_bits]
        if tail and len(tail) < len(positions) and positions[-len(tail):] == tail:
            plan = sum(DEFAULT._plain_bits[p] for p in tail) | DEFAULT._plain_plus
            after_python += DEFAULT._rewrite_compiled(text, plan, positions[:-len(tail)]) is not None
    assert after_python > 1_000, after_python


@MANY
@given(TEXTS)
def test_mask_many_equals_the_python_path(text: str) -> None:
    """The whole engine: `_rewrite_text` (which picks the twin) against `_rewrite_python`."""
    assert DEFAULT._rewrite_text(text) == DEFAULT._rewrite_python(text)


@pytest.mark.parametrize("text", [
    "203.0.113.9 - u-17 \"GET /orders/1 HTTP/1.1\" 200 512",
    "charge failed for card 4111 1111 1111 1111 amount=12.00 EUR",
    "sent reset mail to u-17@example.org",
    "client 198.51.100.4 paid with 5555555555554444, receipt to ann.lee+shop@mail.example.com",
])
def test_access_and_payment_lines_take_the_compiled_path(text: str) -> None:
    """The lines the twin exists for: it answers (no fallback), and masks them."""
    positions = DEFAULT._prescan.which(text)
    plan = DEFAULT._plain_plus
    for position in positions:
        plan |= DEFAULT._plain_bits[position]
    out = DEFAULT._rewrite_compiled(text, plan)
    assert out is not None
    assert out[1] >= 1
    assert out == DEFAULT._rewrite_python(text)


@pytest.mark.parametrize(("text", "why"), [
    ("from 10.1.2.3/32", "a CIDR suffix: the network check is Python's"),
    ("[HASH:card:0123456789ab] and 4111 1111 1111 1111", "a hash token already there"),
    ("pseu_0123456789abcdef and 10.1.2.3", "a pseudonym already there"),
    ("mail bob@example.org[x", "the token it would write is glued to '['"),
])
def test_undecided_cases_go_to_python(text: str, why: str) -> None:
    assert DEFAULT._rewrite_compiled(text, 7) is None, why
    assert DEFAULT._rewrite_text(text) == DEFAULT._rewrite_python(text)


def test_a_custom_template_keeps_the_python_path() -> None:
    custom = Masker(MaskerConfig(replacement="<{detector}>"))
    assert custom._plain_bits == {}
    assert custom.mask("mail bob@example.org") == "mail <email>"


def test_partial_card_action_keeps_the_python_path() -> None:
    last4 = Masker(MaskerConfig(detectors={"card": DetectorSetting(action="partial")}))
    assert "card" not in {last4.detectors[i] for i in last4._plain_bits}
    assert last4.mask("card 4111 1111 1111 1111") == "card [REDACTED:card]1111"
