"""The engine's settings, and the start-up checks that keep bad ones from ever running.

Problems are collected, not raised one by one, and each names the setting with the same path a
YAML file would use (`custom[0].pattern`, `detectors.card.action`) so the receiver can prefix its
own section name and report them all at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import re2

from sluice.masking.detectors import BUILTIN_DETECTORS

__all__ = [
    "ACTIONS", "DEFAULT_REPLACEMENT", "KEY_DETECTORS", "CustomDetector", "DetectorSetting",
    "MaskerConfig", "MaskingConfigError", "Problem", "check_custom_pattern", "validate",
]

ACTIONS: tuple[str, ...] = ("mask", "hash", "partial", "drop")
DEFAULT_REPLACEMENT = "[REDACTED:{detector}]"
# Pseudo-detectors for decisions made from keys, configurable like the others.
KEY_DETECTORS: tuple[str, ...] = ("sensitive_key",)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Constructs RE2 refuses because they need backtracking; named here so the message says why.
_BACKTRACKING = re.compile(r"\(\?<?[=!]|\(\?P=|\\[1-9]|\\k<")


@dataclass(frozen=True, slots=True)
class Problem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class MaskingConfigError(ValueError):
    """Settings the engine cannot run with; `problems` lists every one found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class DetectorSetting:
    """Override for one detector; None keeps the built-in default."""

    enabled: bool | None = None
    action: str | None = None


@dataclass(frozen=True, slots=True)
class CustomDetector:
    """A named RE2 pattern; a group named `secret`, when present, is all that gets masked."""

    name: str
    pattern: str
    action: str = "mask"


@dataclass(frozen=True, slots=True)
class MaskerConfig:
    detectors: Mapping[str, DetectorSetting] = field(default_factory=dict)
    custom: tuple[CustomDetector, ...] = ()
    sensitive_keys: tuple[str, ...] = ()  # added to keys.DEFAULT_SENSITIVE_KEYS
    allow_keys: tuple[str, ...] = ()  # added to keys.DEFAULT_ALLOW_KEYS
    pseudonymize_keys: tuple[str, ...] = ()
    hash_key: bytes | None = None  # HMAC-SHA256 key for `hash` actions and pseudonyms
    replacement: str = DEFAULT_REPLACEMENT
    # Strings longer than this are scanned in windows of chunk_chars + overlap_chars.
    chunk_chars: int = 65536
    overlap_chars: int = 8192


def check_custom_pattern(pattern: str) -> str | None:
    """Why `pattern` cannot be a detector, or None when it can."""
    if not pattern:
        return "must not be empty"
    bad = _BACKTRACKING.search(pattern)
    if bad:
        return (
            f"uses {bad.group(0)!r}: lookarounds and backreferences are not supported; patterns use "
            "RE2 syntax, which runs in linear time"
        )
    options = re2.Options()
    options.log_errors = False
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"is not a valid RE2 pattern ({reason})"
    if compiled.search("") is not None:
        return "matches the empty string; a detector must match at least one character"
    return None


def validate(config: MaskerConfig) -> list[Problem]:
    """Every problem with `config`, keyed like the YAML that would have produced it."""
    problems: list[Problem] = []
    builtin = {d.name: d for d in BUILTIN_DETECTORS}
    known = sorted([*builtin, *KEY_DETECTORS])
    needs_key = bool(config.pseudonymize_keys)
    for name, setting in config.detectors.items():
        if name not in builtin and name not in KEY_DETECTORS:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(Problem(
                f"detectors.{name}", f"unknown detector; {hint}known detectors: {', '.join(known)}"))
            continue
        if setting.action is None:
            continue
        partial_ok = name in builtin and builtin[name].partial is not None
        allowed = [a for a in ACTIONS if a != "partial" or partial_ok]
        if setting.action not in allowed:
            problems.append(Problem(
                f"detectors.{name}.action",
                f"got {setting.action!r}; expected one of: {', '.join(allowed)}"))
        needs_key = needs_key or setting.action == "hash"
    seen: set[str] = set()
    for index, custom in enumerate(config.custom):
        where = f"custom[{index}]"
        if not _NAME_RE.match(custom.name):
            problems.append(Problem(
                f"{where}.name",
                f"got {custom.name!r}; expected lower-case letters, digits and _ (starting with a letter)"))
        elif custom.name in builtin or custom.name in KEY_DETECTORS or custom.name in seen:
            problems.append(Problem(f"{where}.name", f"got {custom.name!r}; that name is already taken"))
        seen.add(custom.name)
        reason = check_custom_pattern(custom.pattern)
        if reason:
            problems.append(Problem(f"{where}.pattern", f"got {custom.pattern!r}; {reason}"))
        if custom.action not in ("mask", "hash", "drop"):
            problems.append(Problem(
                f"{where}.action", f"got {custom.action!r}; expected one of: mask, hash, drop"))
        needs_key = needs_key or custom.action == "hash"
    if "{detector}" not in config.replacement or not config.replacement.strip():
        problems.append(Problem(
            "replacement",
            f"got {config.replacement!r}; expected a template containing {{detector}}, "
            f"e.g. {DEFAULT_REPLACEMENT!r}"))
    else:
        try:
            config.replacement.format(detector="x")
        except (KeyError, IndexError, ValueError):
            problems.append(Problem(
                "replacement",
                f"got {config.replacement!r}; the only placeholder allowed is {{detector}} "
                "(write {{ and }} for literal braces)"))
    if needs_key and not config.hash_key:
        problems.append(Problem("hash_key", "the hash action and pseudonymisation need a secret key"))
    elif config.hash_key is not None and len(config.hash_key) < 16:
        problems.append(Problem(
            "hash_key", f"got a {len(config.hash_key)}-byte key; expected at least 16 bytes"))
    if config.chunk_chars < 1024 or config.overlap_chars < 256:
        problems.append(Problem(
            "chunk_chars", "expected chunk_chars ≥ 1024 and overlap_chars ≥ 256"))
    return problems
