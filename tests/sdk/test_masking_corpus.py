"""The corpus per detector kind (`masking_corpus.py`): each secret is masked by its detector and
vanishes, each look-alike and every line of everyday log content is left exactly as it was."""

from __future__ import annotations

import re

import pytest

from sluice.masking import BUILTIN_DETECTORS, DetectorSetting, Masker, MaskerConfig
from tests.sdk import masking_corpus as corpus
from tests.sdk.test_masking_detectors import NEGATIVES as TABLE_NEGATIVES
from tests.sdk.test_masking_detectors import POSITIVES as TABLE_POSITIVES

ALL_ON = Masker(MaskerConfig(detectors={"phone": DetectorSetting(enabled=True)}))
_RUN = re.compile(r"[A-Za-z0-9_+/.~-]+")


def secret_of(text: str, secret: str) -> str:
    """The given secret, or else the longest token-like run of the text (the token itself)."""
    return secret or max(_RUN.findall(text), key=len)


def _params(table: dict[str, list[tuple[str, str]]] | dict[str, list[str]]) -> list[object]:
    return [pytest.param(kind, case, id=f"{kind}-{i}") for kind, cases in table.items()
            for i, case in enumerate(cases)]


def test_every_detector_has_several_positives_and_look_alikes() -> None:
    for detector in BUILTIN_DETECTORS:
        positives = len(corpus.POSITIVES.get(detector.name, [])) + len(TABLE_POSITIVES.get(detector.name, []))
        negatives = len(corpus.NEGATIVES.get(detector.name, [])) + len(TABLE_NEGATIVES.get(detector.name, []))
        assert positives >= 3, detector.name
        assert negatives >= 2, detector.name


@pytest.mark.parametrize(("kind", "case"), _params(corpus.POSITIVES))
def test_a_secret_of_each_kind_is_masked_by_its_detector(kind: str, case: tuple[str, str]) -> None:
    text, secret = case
    result = ALL_ON.mask_many([text])
    masked = result.values[0]
    assert masked is not None, text
    assert result.counts[kind] >= 1, (text, masked, result.counts)
    hidden = secret_of(text, secret)
    assert hidden not in masked, (text, masked)
    middle = hidden[len(hidden) // 3: 2 * len(hidden) // 3]
    assert len(middle) < 3 or middle not in masked, (text, masked)
    assert ALL_ON.mask(masked) == masked  # idempotent


@pytest.mark.parametrize(("kind", "text"), _params(corpus.NEGATIVES))
def test_a_look_alike_of_each_kind_is_left_unchanged(kind: str, text: str) -> None:
    result = ALL_ON.mask_many([text])
    assert result.values[0] is None, (text, result.values[0], result.counts)


@pytest.mark.parametrize("text", corpus.BENIGN)
def test_everyday_log_content_is_left_unchanged(text: str) -> None:
    result = ALL_ON.mask_many([text])
    assert result.values[0] is None, (text, result.values[0], result.counts)


def test_benign_lines_joined_into_one_string_are_left_unchanged() -> None:
    text = " | ".join(corpus.BENIGN)
    assert ALL_ON.mask_many([text]).values[0] is None


def _every_text() -> list[str]:
    texts = [text for cases in corpus.POSITIVES.values() for text, _ in cases]
    texts += [text for cases in TABLE_POSITIVES.values() for text, _ in cases]
    return texts + [text for cases in corpus.NEGATIVES.values() for text in cases] + corpus.BENIGN


@pytest.mark.parametrize("detector", BUILTIN_DETECTORS, ids=lambda d: d.name)
def test_each_pre_scan_matches_wherever_its_detector_does(detector: object) -> None:
    """A pre-scan narrower than its pattern would let secrets through unseen: on every corpus
    text, a detector's RE2 pre-scan (as the batch uses it, and widened as the receiver's raw scan
    uses it) matches wherever its pattern does."""
    import re2

    from sluice.masking._prescan import widen_whitespace
    from sluice.masking.detectors import Detector

    assert isinstance(detector, Detector)
    pattern = re.compile(detector.pattern, re.ASCII)
    prescan = re2.compile(widen_whitespace(detector.prescan))
    raw = re2.compile(widen_whitespace(detector.prescan.replace("\\b", "")))
    for text in _every_text():
        if pattern.search(text):
            assert prescan.search(text), (detector.name, text)
            assert raw.search(text), (detector.name, text)


@pytest.mark.parametrize("detector", BUILTIN_DETECTORS, ids=lambda d: d.name)
def test_each_pattern_is_in_the_common_subset_of_python_re_and_re2(detector: object) -> None:
    """So a compiled (RE2) hot path can run the same declarative patterns."""
    import re2

    from sluice.masking.detectors import Detector

    assert isinstance(detector, Detector)
    re2.compile(detector.pattern)
    re2.compile(detector.prescan)


def test_the_fast_path_equals_every_detector_on_the_whole_corpus() -> None:
    texts = _every_text()
    fast = ALL_ON.mask_many(texts).values
    for text, value in zip(texts, fast, strict=True):
        assert (text if value is None else value) == ALL_ON.mask_without_prescan(text), text
