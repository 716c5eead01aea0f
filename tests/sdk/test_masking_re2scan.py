"""The C++ twin of the masking pre-scans' RE2 calls (`sluice.masking._re2scan`) against the
Python binding: the same match spans over any bytes, the same detectors named for any string.

The twin links Debian's RE2 and the binding ships its own, so "same engine, same options" is
the argument and these tests are the check. `make test` runs them on the compiled path; with
SLUICE_PURE_PYTHON=1 (or no g++ / libre2-dev) the binding is all there is and they skip."""

from __future__ import annotations

import threading
import types

import pytest
import re2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sluice.masking import DetectorSetting, Masker, MaskerConfig, _prescan
from sluice.masking._prescan import BatchPrescan, Scan, match_spans, strip_group_names

pytestmark = pytest.mark.skipif(
    _prescan.COMPILED is None, reason="sluice.masking._re2scan is not built or SLUICE_PURE_PYTHON is set")

MANY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MASKER = Masker(MaskerConfig(detectors={"phone": DetectorSetting(enabled=True)}))
# The receiver's raw scan (processors/masking.py builds it this way) and the batch pre-scan.
RAW = Scan("|".join(f"(?:{strip_group_names(p)})"
                    for p in dict.fromkeys(MASKER.raw_prescan_patterns() or [])).encode())
PRESCAN = MASKER._prescan
EDGES = [Scan(rb"a*"), Scan(rb"(?:\d\.)+\d|p(?:ass)?"), Scan(rb"^|$"), Scan(rb"\b"), Scan(rb"(?i)\x{e9}t\x{e9}")]

SECRETS = [
    "password=Canary5ecretValue", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "4111 1111 1111 1111",
    "bob@example.org", "10.2.3.4", "postgres://app:s3cr3t@db:5432/x", "AKIA" + "Q7W2E9R4T1Y6U3I8",
    "authorization: Basic YWxhZGRpbjpvcGVu", "été", "\u0661\u0662", "\ud800", "\x00\x0b\x85",
]
LOGGY = st.text(alphabet=st.sampled_from(list("aAkKsS019457 -_.:=/@?&%\"'\\\n[]{}()+,;xXpPé\u2028")),
                max_size=80)
TEXT = st.lists(st.one_of(LOGGY, st.sampled_from(SECRETS), st.text(max_size=12)), max_size=8).map("".join)
# What a scan of an encoded request sees: strings between framing bytes, invalid UTF-8 included.
WIRE = st.lists(
    st.one_of(st.binary(max_size=6), TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))), max_size=12,
).map(b"".join)


def _binding_spans(scan: Scan, data: bytes) -> list[tuple[int, int]]:
    return match_spans(scan.regex, data)


@MANY
@given(WIRE)
@example(b"")
@example(b"\xff\xfepassword=x\xc3")
@example(b"\n" * 3)
def test_spans_are_the_bindings_over_any_bytes(data: bytes) -> None:
    for scan in (RAW, PRESCAN._scan, *EDGES):
        assert scan is not None
        assert scan.compiled
        assert scan.spans(data) == _binding_spans(scan, data)


@MANY
@given(TEXT)
@example("")
@example("\ud800password=x")
@example("pass\x0bword: y")
def test_which_is_the_bindings_for_any_string(text: str) -> None:
    assert PRESCAN._compiled_which is not None
    assert PRESCAN.which(text) == PRESCAN.which_python(text)


def test_a_dense_request_scans_alike_and_finds_every_secret() -> None:
    """A long buffer with a match every few bytes (the PII-dense case the twin is for)."""
    data = b"\x12\x07".join(s.encode("utf-8", "surrogatepass") for s in SECRETS * 400)
    spans = RAW.spans(data)
    assert spans == _binding_spans(RAW, data)
    assert len(spans) >= 400 * 6  # at least the password, token, card, e-mail, IP and DSN of each round


def test_threads_scanning_at_once_agree() -> None:
    """`spans` lets go of the GIL while RE2 scans; RE2 programs are safe to share between threads."""
    data = b"\n".join(s.encode("utf-8", "surrogatepass") for s in SECRETS * 200)
    expected = _binding_spans(RAW, data)
    results: list[bool] = []

    def scan() -> None:
        results.extend(RAW.spans(data) == expected for _ in range(20))

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 80


def test_bad_arguments_get_clear_errors() -> None:
    compiled = _prescan.COMPILED
    with pytest.raises(ValueError, match="RE2 did not compile the pattern: missing \\)"):
        compiled.Program(b"(a", _prescan.MAX_MEM)
    with pytest.raises(ValueError, match="RE2 did not compile pattern 1"):
        compiled.PatternSet(["a", "(b"], _prescan.MAX_MEM)
    with pytest.raises(TypeError):
        compiled.Program(b"a", _prescan.MAX_MEM).spans("a str, not bytes")
    with pytest.raises(TypeError):
        compiled.PatternSet(["a"], _prescan.MAX_MEM).which(b"bytes, not a str")
    assert compiled.PatternSet([], _prescan.MAX_MEM).which("anything") == []
    assert compiled.Program(b"b", _prescan.MAX_MEM).spans(bytearray(b"abcb")) == [(1, 2), (3, 4)]


def test_a_pattern_the_twin_refuses_is_scanned_by_the_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The twin links another RE2 than the binding; should it refuse a pattern the binding took,
    the binding scans and names detectors, with the same answers. (A stand-in for the module
    here: no pattern is refused by one of today's two RE2 builds and taken by the other.)"""

    def refuse(*_: object) -> None:
        raise ValueError("RE2 did not compile the pattern: not in this build")

    monkeypatch.setattr(_prescan, "COMPILED", types.SimpleNamespace(Program=refuse, PatternSet=refuse))
    scan = Scan(rb"pass(?:word)?=\S+")
    prescan = BatchPrescan([r"pass(?:word)?=\S+", r"\d{4}"])
    assert not scan.compiled
    assert prescan._compiled_which is None
    assert scan.spans(b"x password=1 pass=2") == [(2, 12), (13, 19)]
    assert prescan.which("pass=1 and 2024") == [0, 1]
    with pytest.raises(re2.error):
        Scan(b"(unbalanced")  # the binding still decides what is a valid pattern
