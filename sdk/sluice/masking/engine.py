"""The masking engine: strings in, masked strings out, a whole batch at a time.

`Masker.mask_many` is the hot path. It first settles what keys alone decide (allow-listed,
sensitive, pseudonymised), then runs one RE2 pre-scan over all remaining strings of the batch
(`_prescan.BatchPrescan`), and rewrites only the strings the pre-scan flagged, detector by
detector. With ~1% of strings carrying a secret, ~99% of strings cost one pass of a single DFA
instead of two dozen regex calls each.

Replacements never echo the secret: `mask` writes a token (`[REDACTED:<detector>]` by
default), `hash` a keyed HMAC-SHA256 token that is stable across records (so equal secrets can
still be correlated), `partial` keeps a part that identifies nothing alone (last four card
digits, e-mail domain, IP network), and `drop` masks and also flags the string so its record
can be dropped. Every token is recognised on a second pass, which makes masking idempotent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

from sluice.masking import keys as _keys
from sluice.masking._anchored import AnchoredPattern
from sluice.masking._prescan import BatchPrescan, widen_whitespace
from sluice.masking._rewrite import Finder, Pattern, substitute, substitute_window
from sluice.masking.config import (
    DEFAULT_REPLACEMENT,
    DetectorSetting,
    MaskerConfig,
    MaskingConfigError,
    Problem,
    validate,
)
from sluice.masking.detectors import BUILTIN_DETECTORS, DEFAULT_OFF, Check, Partial

__all__ = ["MaskedBatch", "Masker"]

# Anchors and word boundaries, outside a character class's leading ^ (a rough but safe test:
# a false positive only costs the fast path, never a missed secret).
_ASSERTION_RE = re.compile(r"(?<!\[)\^|\$|\\[bBAzZ]")
_HASH_SHAPE = r"\[HASH:[a-z0-9_]+:[0-9a-f]{12}\]"
_PSEUDONYM_SHAPE = r"pseu_[0-9a-f]{16}"
# A mask token is no hiding place for text glued to it, so when masking leaves a token touching
# the text around it (`Bearer ab=` + `0cd` -> `Bearer [REDACTED:bearer_token]0cd`), the string
# is scanned again (at most this often in all) and that text masked with it: masking the result
# once more then changes nothing. A token followed by a space, quote, `@`, delimiter or closing
# bracket, the usual case, ends the work after one round.
_MAX_ROUNDS = 4
# Detectors that can take an identifier for personal data: a 16- or 19-digit id (a snowflake)
# passes the Luhn check one time in ten, an order number can look like an SSN, a phone number
# or an IBAN, an instance id holds an address. Values under allow-listed keys (the ids and
# names correlation and routing depend on) skip these, and only these: a password, a token, a
# key or an e-mail address is masked wherever it is.
ID_LIKE_DETECTORS = frozenset({"card", "card_cvv", "iban", "ssn", "phone", "ipv4", "ipv6"})
_SAFE_AFTER_TOKEN = "\"'`,;&@)]}>"  # noqa: S105 (characters, not a password)


# What rewriting one string gives: (new text, values masked, masked per detector, drop?).
_Outcome = tuple[str, int, dict[str, int], bool]


def _load_plain() -> Callable[[str, int, bool], tuple[str, int, int, int] | None] | None:
    """`_plainmask.rewrite`, the compiled twin of `_rewrite_text` for strings only the card,
    e-mail and IPv4 detectors hit; None when it is not built or SLUICE_PURE_PYTHON is set."""
    if os.environ.get("SLUICE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from sluice.masking import _plainmask  # type: ignore[attr-defined]
    except ImportError:
        return None
    rewrite: Callable[[str, int, bool], tuple[str, int, int, int] | None] = _plainmask.rewrite
    return rewrite


_PLAIN_REWRITE = _load_plain()
# The detectors `_plainmask` models, their bit in its plan, and the actions it writes.
_PLAIN_BITS = {"card": 1, "email": 2, "ipv4": 4}
_PLAIN_IPV4_MASKED = 8
_PLAIN_ACTIONS = {"card": {"mask", "drop"}, "email": {"mask", "drop"}, "ipv4": {"partial", "mask", "drop"}}


@dataclass(slots=True)
class MaskedBatch:
    """The outcome of `Masker.mask_many` for a list of strings.

    `values[i]` is the new text of string i, or None when it is unchanged (the common case, so
    callers write back only what changed). `hits[i]` counts the values masked in string i;
    `drop` holds the indexes of strings that matched a detector whose action is `drop`.
    """

    values: list[str | None]
    counts: Counter[str] = field(default_factory=Counter)
    hits: dict[int, int] = field(default_factory=dict)
    drop: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Active:
    name: str
    regex: Pattern
    group_indexes: tuple[int, ...]
    check: Check | None
    action: str
    partial: Partial | None
    # What the per-string rewrite searches with: `regex`, or the same matches found from the
    # detector's anchor. `regex` itself stays the reference (mask_without_prescan).
    finder: Finder


class Masker:
    """Masks secrets and personal data in strings; see the module docstring for the actions.

    Construction validates `config` and raises `MaskingConfigError` listing every problem;
    after that, `mask` and `mask_many` never raise on any text.
    """

    def __init__(self, config: MaskerConfig | None = None, *, _for_allowed_keys: bool = False) -> None:
        config = config or MaskerConfig()
        problems = validate(config)
        if problems:
            raise MaskingConfigError(problems)
        self.config = config
        self._hash_key = config.hash_key or b""
        self._key_rules = _keys.KeyRules(
            (*_keys.DEFAULT_SENSITIVE_KEYS, *config.sensitive_keys),
            (*_keys.DEFAULT_ALLOW_KEYS, *config.allow_keys),
            config.pseudonymize_keys,
        )
        sensitive = config.detectors.get("sensitive_key")
        self._sensitive_enabled = sensitive is None or sensitive.enabled is not False
        self._sensitive_action = (sensitive.action if sensitive else None) or "mask"
        self._active = self._build_detectors(config)
        try:
            self._prescan = BatchPrescan([p for _, p in self._prescans])
        except re2.error as exc:
            raise MaskingConfigError([Problem(
                "custom", f"the detectors together are too large for one RE2 program ({exc})")]) from exc
        # Only the names this engine can write, so a user template such as "[{detector}]" does not
        # turn every "[word]" in a log line into something the second pass leaves alone.
        names = "|".join(re.escape(n) for n in sorted(
            {*(a.name for a in self._active), "sensitive_key", "pseudonymize"}, key=len, reverse=True))
        token_alternatives = [
            re.escape(config.replacement).replace(re.escape("{detector}"), f"(?:{names})"),
            _HASH_SHAPE, _PSEUDONYM_SHAPE,
        ]
        self._token_re = re.compile("|".join(f"(?:{t})" for t in token_alternatives))
        # How far before a secret a token overlapping it can start: longer than any token.
        self._token_reach = 200 + len(config.replacement)
        # Text every token holds (the template's text before `{detector}`, `[HASH:`, `pseu_`):
        # where none of it is near a match, no token can be, and the token regex need not run
        # (one search of the text around the match, no copy of it).
        prefix = config.replacement.split("{detector}", 1)[0]
        self._mark_texts = ("[HASH:", "pseu_", prefix)
        self._marks_re = (
            re.compile("|".join(re.escape(mark) for mark in self._mark_texts)) if prefix else None
        )
        self._tokens = {
            name: config.replacement.format(detector=name)
            for name in (*(a.name for a in self._active), "sensitive_key")
        }
        self._replacers = [self._replacer(active) for active in self._active]
        self._plain_bits, self._plain_plus = self._plain_plan()
        self._drops = frozenset(a.name for a in self._active if a.action == "drop")
        # The engine for values under allow-listed keys: everything but ID_LIKE_DETECTORS.
        self._on_allowed: Masker | None = None
        if not _for_allowed_keys:
            off = {name: DetectorSetting(enabled=False) for name in ID_LIKE_DETECTORS}
            self._on_allowed = Masker(dataclasses.replace(config, detectors={**config.detectors, **off}),
                                      _for_allowed_keys=True)

    # -- set-up ---------------------------------------------------------------------------------
    def _build_detectors(self, config: MaskerConfig) -> tuple[_Active, ...]:
        active: list[_Active] = []
        prescans: list[tuple[str, str]] = []
        options = re2.Options()
        options.log_errors = False
        # Custom detectors first: they express what this deployment knows about its own data.
        for custom in config.custom:
            regex = re2.compile(custom.pattern, options)
            index = regex.groupindex.get("secret")
            active.append(_Active(
                custom.name, regex, (index,) if index else (), None, custom.action, None, regex))
            # Multi-line, so ^ and $ also match at the joints of the batch pre-scan.
            prescans.append((custom.name, f"(?m:{custom.pattern})"))
        for detector in BUILTIN_DETECTORS:
            setting = config.detectors.get(detector.name)
            enabled = detector.name not in DEFAULT_OFF
            if setting is not None and setting.enabled is not None:
                enabled = setting.enabled
            if not enabled:
                continue
            compiled = re.compile(detector.pattern, re.ASCII)
            active.append(_Active(
                detector.name,
                compiled,
                tuple(compiled.groupindex[g] for g in detector.secret_groups),
                detector.check,
                (setting.action if setting else None) or detector.default_action,
                detector.partial,
                compiled if detector.anchor is None else AnchoredPattern(compiled, *detector.anchor),
            ))
            prescans.append((detector.name, detector.prescan))
        self._prescans = prescans
        return tuple(active)

    def _plain_plan(self) -> tuple[dict[int, int], int]:
        """Which detector positions `_plainmask` can rewrite (position -> plan bit), and the bits
        every plan carries; none when it is not built or the template is not the default."""
        if _PLAIN_REWRITE is None or self.config.replacement != DEFAULT_REPLACEMENT:
            return {}, 0
        bits: dict[int, int] = {}
        plus = 0
        for position, active in enumerate(self._active):
            if active.name in _PLAIN_BITS and active.action in _PLAIN_ACTIONS[active.name]:
                bits[position] = _PLAIN_BITS[active.name]
                if active.name == "ipv4" and active.action != "partial":
                    plus |= _PLAIN_IPV4_MASKED
        return bits, plus

    @property
    def detectors(self) -> tuple[str, ...]:
        """Names of the detectors that run, in the order they run."""
        return tuple(a.name for a in self._active)

    def raw_prescan_patterns(self) -> list[str] | None:
        """Patterns that match somewhere in any byte string holding something this engine would
        change, for scanning a serialised container (an encoded protobuf) where each string sits
        between binary framing bytes instead of newlines.

        Zero-width assertions are what breaks there (the byte before a string is a length, which
        may be a word character), so `\\b` is dropped from the built-in pre-scans — dropping an
        assertion only widens a pattern. Custom patterns are taken as written unless they use
        anchors or word boundaries; then None says "no safe superset, look at everything".
        Keys whose presence alone changes a value are matched loosely (any case, any of
        `-_. ` between letters), as `KeyRules` normalises them.
        """
        custom_names = {c.name for c in self.config.custom}
        out: list[str] = []
        for name, pattern in self._prescans:
            if name in custom_names:
                if _ASSERTION_RE.search(pattern):
                    return None
                out.append(pattern)
            else:
                out.append(widen_whitespace(pattern.replace("\\b", "")))
        for key in self._key_rules.watched():
            if key:
                # KeyRules drops every "-", "_", "." and space, however many: so may this.
                out.append("(?i:" + "[-_. ]*".join(re.escape(c) for c in key) + ")")
        return out

    def key_rule(self, key: str) -> _keys.KeyRule:
        """What the key alone decides for its value (memoised)."""
        return self._key_rules.rule(key)

    def token(self, detector: str) -> str:
        """The mask token of `detector`, e.g. ``[REDACTED:card]``."""
        return self.config.replacement.format(detector=detector)

    def is_token(self, text: str) -> bool:
        """Whether `text` is exactly something this engine writes (so it is left alone)."""
        return self._token_re.fullmatch(text) is not None

    # -- the work -------------------------------------------------------------------------------
    def mask(self, text: str, key: str | None = None) -> str:
        """`text` masked; `key` is the attribute key it was found under, if any."""
        out = self.mask_many([text], None if key is None else [key]).values[0]
        return text if out is None else out

    def mask_many(
        self, texts: Sequence[str], keys: Sequence[str | None] | None = None, *,
        prescanned: bool = False,
    ) -> MaskedBatch:
        """Mask a batch of strings with one pre-scan; `keys[i]` is the key of `texts[i]` or None.

        `prescanned`: the caller's own scan already narrowed `texts` to the strings around its
        hits (the receiver's scan of a request's bytes), so the batch pre-scan would flag nearly
        all of them and only cost a second pass (7-10 % of masking a PII-dense request). Each
        string then goes straight to the per-string detector set, which names no detector for a
        string the pre-scan would have skipped: the outcome is the same."""
        if keys is not None and len(keys) != len(texts):
            raise ValueError(f"got {len(keys)} keys for {len(texts)} strings; expected one (or None) each")
        result = MaskedBatch(values=[None] * len(texts))
        if keys is None:
            scan_indexes: Sequence[int] = range(len(texts))
            scan_texts: Sequence[str] = texts
        else:
            scan_indexes = []
            allowed: list[int] = []
            for index, key in enumerate(keys):
                if key is None:
                    scan_indexes.append(index)
                    continue
                rule = self._key_rules.rule(key)
                if rule is _keys.KeyRule.SCAN:
                    scan_indexes.append(index)
                elif rule is _keys.KeyRule.ALLOW:
                    allowed.append(index)
                else:
                    self._mask_by_key(index, texts[index], rule, result)
            scan_texts = [texts[i] for i in scan_indexes]
            if allowed and self._on_allowed is not None:
                self._merge(result, allowed, self._on_allowed.mask_many([texts[i] for i in allowed]))
        # Equal strings mask alike (the output depends on the text alone), so a value repeated
        # in a batch (a client address, a user's e-mail, the same header) is rewritten once.
        done: dict[str, _Outcome] = {}
        tally = result.counts
        flagged = range(len(scan_texts)) if prescanned else self._prescan.candidates(scan_texts)
        for position in flagged:
            index = scan_indexes[position]
            text = texts[index]
            outcome = done.get(text)
            if outcome is None:
                outcome = done[text] = self._rewrite_text(text)
            new, total, counts, drop = outcome
            if total:
                result.values[index] = new
                result.hits[index] = total
                for name, count in counts.items():
                    tally[name] += count
            if drop:
                result.drop.add(index)
        return result

    @staticmethod
    def _merge(result: MaskedBatch, indexes: Sequence[int], part: MaskedBatch) -> None:
        """Fold the outcome of masking `texts[i] for i in indexes` into `result`."""
        for position, value in enumerate(part.values):
            if value is not None:
                result.values[indexes[position]] = value
        for position, hits in part.hits.items():
            result.hits[indexes[position]] = hits
        for position in part.drop:
            result.drop.add(indexes[position])
        result.counts.update(part.counts)

    def mask_without_prescan(self, text: str) -> str:
        """Every detector over `text`, no pre-scan: the reference the fast path must equal.

        For tests and benchmarks; `mask_many` gives the same output far faster.
        """
        chunk, overlap = self.config.chunk_chars, self.config.overlap_chars
        for _ in range(_MAX_ROUNDS):
            before = text
            for active, replace in zip(self._active, self._replacers, strict=True):
                if len(text) <= chunk + overlap:
                    # Plain `sub`, the way a first implementation would do it (the benchmark's peer).
                    text = active.regex.sub(_keeping(replace), text)
                else:
                    text, _ = substitute(active.regex, text, replace, chunk, overlap)
            if text == before or not self._has_glued_token(text):
                break
        return text

    def mask_whole(self, text: str, rule: _keys.KeyRule) -> tuple[str | None, str, bool]:
        """Replacement for a whole value by key rule: (new text or None, detector, drop?)."""
        if not text or self.is_token(text):
            return None, "", False
        if rule is _keys.KeyRule.PSEUDONYMIZE:
            return self.pseudonym(text), "pseudonymize", False
        if not self._sensitive_enabled:
            return None, "", False
        return (
            self._render("sensitive_key", self._sensitive_action, text, None),
            "sensitive_key",
            self._sensitive_action == "drop",
        )

    def pseudonym(self, value: str) -> str:
        """A stable, keyed stand-in for an identifier (same input and key → same token)."""
        digest = hmac.new(self._hash_key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return "pseu_" + digest.hexdigest()[:16]

    def _mask_by_key(self, index: int, text: str, rule: _keys.KeyRule, result: MaskedBatch) -> None:
        new, detector, drop = self.mask_whole(text, rule)
        if new is None:
            return
        result.values[index] = new
        result.counts[detector] += 1
        result.hits[index] = 1
        if drop:
            result.drop.add(index)

    def _rewrite_text(self, text: str) -> _Outcome:
        """Every detector the pre-scan names for `text`, in order: (new text, values masked,
        masked per detector, whether a `drop` detector matched).

        The card, e-mail and IPv4 detectors come after every secret detector in the detector
        order. When those named last are among them, the compiled twin runs that tail: for most
        strings of an access or auth log it is all there is; else the Python code runs the
        detectors before it first (`password=` before the address after it). The twin answers
        None where the Python code must decide (a `[HASH:` or `pseu_` mark, a CIDR suffix, a
        glued token), and then the Python path does all of it."""
        positions = self._prescan.which(text)
        bits = self._plain_bits
        if bits and positions and len(text) <= self.config.chunk_chars + self.config.overlap_chars:
            split = len(positions)
            plan = self._plain_plus
            while split and positions[split - 1] in bits:
                split -= 1
                plan |= bits[positions[split]]
            if split < len(positions):
                outcome = self._rewrite_compiled(text, plan, positions[:split])
                if outcome is not None:
                    return outcome
        return self._rewrite_python(text, positions)

    def _rewrite_compiled(self, text: str, plan: int, before: Sequence[int] = ()) -> _Outcome | None:
        """The detectors at `before` in Python (one round), then `_plainmask.rewrite`'s `plan`,
        in `_rewrite_text`'s form; None when the twin leaves the string to the Python path."""
        assert _PLAIN_REWRITE is not None
        counts: dict[str, int] = {}
        total, drop = 0, False
        if before:
            text, total, drop = self._round(text, before, counts)
        out = _PLAIN_REWRITE(text, plan, total > 0)
        if out is None:
            return None
        new, cards, emails, addresses = out
        if cards:
            counts["card"] = cards
        if emails:
            counts["email"] = emails
        if addresses:
            counts["ipv4"] = addresses
        if cards or emails or addresses:
            total += cards + emails + addresses
            drop = drop or not self._drops.isdisjoint(counts)
        return new, total, counts, drop

    def _rewrite_python(self, text: str, positions: list[int] | None = None) -> _Outcome:
        """`_rewrite_text` in Python, the reference; `positions` is `which(text)` if known."""
        counts: dict[str, int] = {}
        drop = False
        total = 0
        for _ in range(_MAX_ROUNDS):
            # Detector order is kept: `which` answers in ascending order, the order they run in.
            text, changed, dropped = self._round(
                text, self._prescan.which(text) if positions is None else positions, counts)
            drop = drop or dropped
            positions = None
            total += changed
            if not changed or not self._has_glued_token(text):
                break
        return text, total, counts, drop

    def _round(self, text: str, positions: Sequence[int], counts: dict[str, int]) -> tuple[str, int, bool]:
        """The detectors at `positions` over `text`, in order, once: (new text, values masked,
        whether a `drop` detector matched); `counts` gets the values masked per detector."""
        chunk, overlap = self.config.chunk_chars, self.config.overlap_chars
        window = chunk + overlap
        active_all, replacers = self._active, self._replacers
        changed = 0
        drop = False
        for position in positions:
            active = active_all[position]
            if len(text) <= window:  # the usual case, without the windowing loop
                text, count = substitute_window(active.finder, text, replacers[position])
            else:
                text, count = substitute(active.finder, text, replacers[position], chunk, overlap)
            if count:
                changed += count
                counts[active.name] = counts.get(active.name, 0) + count
                if active.action == "drop":
                    drop = True
        return text, changed, drop

    def _replacer(self, active: _Active) -> Callable[[Any], str | None]:
        # Runs once per match of a flagged string, so what it needs is bound here once: the
        # group to mask, the check, and (for `mask`, the default) the token itself.
        name, check, partial, action = active.name, active.check, active.partial, active.action
        groups = active.group_indexes
        token = self._tokens[name]
        plain = action in {"mask", "drop"} or (action == "partial" and partial is None)
        marks = self._marks_re.search if self._marks_re is not None else None
        # The same marks as plain substrings: `in` finds none of them in a string that holds
        # no token at all (every string, until a detector writes one) far faster than the
        # regex search of the text around each match.
        hash_mark, pseudonym_mark, token_mark = self._mark_texts
        reach = self._token_reach
        outside_tokens = self._outside_tokens
        render = self._render
        whole = 4 * reach

        def replace(match: Any) -> str | None:
            whole_start, whole_end = match.span()
            start, end = whole_start, whole_end
            for group in groups:
                span = match.span(group)
                if span[0] >= 0:
                    start, end = span
                    break
            text: str = match.string
            # Tokens an earlier pass wrote are left as they are, so masking is idempotent; but
            # they are no hiding place: text glued to one is still masked. Where no token's
            # text is near the match, none can overlap it (the usual case: one search).
            # The substring test reads the whole text, so past `whole` characters (a long text
            # with a match every few characters would make that quadratic) only the window
            # around the match is searched.
            if marks is None or (
                (len(text) > whole or token_mark in text or hash_mark in text or pseudonym_mark in text)
                and marks(text, max(0, start - reach), end + reach) is not None
            ):
                start, end, fresh = outside_tokens(text, start, end)
                if not fresh:
                    return None
            if check is not None and not check(text, start, end):
                return None
            if plain:
                rendered = token
            elif action == "partial" and partial is not None:
                rendered = partial(text[start:end], token)
            else:
                rendered = render(name, action, text[start:end], partial)
            if start == whole_start and end == whole_end:
                return rendered
            return text[whole_start:start] + rendered + text[end:whole_end]

        return replace

    def _has_glued_token(self, text: str) -> bool:
        """Whether a token in `text` touches text a value could continue into (see _MAX_ROUNDS)."""
        for token in self._token_re.finditer(text):
            start, end = token.span()
            after = text[end:end + 1]
            if after and after not in _SAFE_AFTER_TOKEN and not after.isspace():
                return True
            if start and text[start - 1].isalnum() and text[start - 1].isascii():
                return True
        return False

    def _outside_tokens(self, text: str, start: int, end: int) -> tuple[int, int, bool]:
        """The secret span [start, end) cut short of any token reaching over its edges (that token
        belongs to the text around it), and whether the span holds anything but tokens and
        whitespace: `[REDACTED:kv_secret]` alone is done, `[REDACTED:kv_secret]Hunter2` is not."""
        reach = self._token_reach
        marks = self._marks_re
        if marks is not None and marks.search(text, max(0, start - reach), end + reach) is None:
            return start, end, True
        tokens = [
            token.span()
            for token in self._token_re.finditer(text, max(0, start - reach), min(len(text), end + reach))
            if token.start() < end and token.end() > start
        ]
        if not tokens:
            return start, end, True
        for t_start, t_end in tokens:
            if t_start < start:
                start = t_end
            if t_end > end:
                end = t_start
        if start >= end:
            return start, end, False
        rest: list[str] = []
        pos = start
        for t_start, t_end in tokens:
            if start <= t_start and t_end <= end:
                rest.append(text[pos:t_start])
                pos = t_end
        rest.append(text[pos:end])
        return start, end, bool("".join(rest).strip())

    def _render(self, detector: str, action: str, secret: str, partial: Partial | None) -> str:
        if action == "hash":
            digest = hmac.new(
                self._hash_key, f"{detector}\x00{secret}".encode("utf-8", "surrogatepass"),
                hashlib.sha256,
            ).hexdigest()[:12]
            return f"[HASH:{detector}:{digest}]"
        token = self._tokens.get(detector) or self.config.replacement.format(detector=detector)
        if action == "partial" and partial is not None:
            return partial(secret, token)
        return token


def _keeping(replace: Callable[[Any], str | None]) -> Callable[[Any], str]:
    """`replace` for `re.sub`: None (not a secret after all) keeps the match as it was."""

    def sub(match: Any) -> str:
        out = replace(match)
        return str(match.group(0)) if out is None else out

    return sub
