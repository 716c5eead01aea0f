"""Typed reading of one YAML mapping with its key path, collecting problems instead of raising.

Every component parses its own part of the config from a `Section` (``FooConfig.from_section``).
Two components may read one section (routing reads `categories.<name>.match`, the file sink
the same sections' `path`, `rotation`, `retention_days`): asking twice for a child section
returns the same object. A section remembers which keys were read, so after all components have
had their look, `check_unknown()` reports every key nobody asked for — unknown keys are errors, with a hint
when the key is a near-miss of a known one. Problems accumulate in one list so the user sees
all of them at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sluice_collector.errors import ConfigProblem

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MISSING = object()


def _show(value: Any, redact: Callable[[str], str] | None = None) -> str:
    # Redacted before it is shortened: a secret cut in half would no longer be recognised.
    text = repr(value) if redact is None else redact(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


class Section:
    """A view of one config mapping at `path` (e.g. ``categories.audit``)."""

    def __init__(
        self, data: Any, path: str, problems: list[ConfigProblem], *, present: bool = True,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.path = path
        self.problems = problems
        # Applied to every value a message quotes (see `redact.Redactor`); children share it.
        self.redact = redact
        self.present = present and data is not None
        self._seen: set[str] = set()
        self._children: list[Section] = []
        self._child_of: dict[str, Any] = {}  # name → Section or dict of Sections, reused
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self._data: Mapping[str, Any] = {}
            problems.append(
                ConfigProblem(path or "(top level)", f"got {_show(data, redact)}; expected a mapping")
            )
        else:
            self._data = data

    # -- plumbing ---------------------------------------------------------------------------
    def key(self, name: str) -> str:
        if not name:
            return self.path
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> None:
        """Record a problem for key `name` of this section."""
        if self.redact is not None:
            message = self.redact(message)
        self.problems.append(ConfigProblem(self.key(name), message))

    def _show(self, value: Any) -> str:
        return _show(value, self.redact)

    def has(self, name: str) -> bool:
        # Asking about a key makes it a known key, so check_unknown() lists it as accepted.
        self._seen.add(name)
        return name in self._data

    def keys(self) -> list[str]:
        return [str(k) for k in self._data]

    def raw(self, name: str, default: Any = None) -> Any:
        self._seen.add(name)
        return self._data.get(name, default)

    def _get(self, name: str) -> Any:
        self._seen.add(name)
        return self._data.get(name, _MISSING)

    # -- scalars ----------------------------------------------------------------------------
    def get_str(
        self, name: str, default: str, *, choices: Iterable[str] | None = None,
        allow_empty: bool = True,
    ) -> str:
        value = self._get(name)
        if value is _MISSING or value is None:
            return default
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            self.error(name, f"got {self._show(value)}; expected a string")
            return default
        text = str(value)
        if choices is not None:
            options = list(choices)
            if text not in options:
                self.error(name, f"got {self._show(value)}; expected one of: {', '.join(options)}")
                return default
        if not allow_empty and not text.strip():
            self.error(name, "must not be empty")
            return default
        return text

    def get_optional_str(self, name: str) -> str | None:
        value = self._get(name)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, str):
            self.error(name, f"got {self._show(value)}; expected a string")
            return None
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is _MISSING or value is None:
            return default
        if not isinstance(value, bool):
            self.error(name, f"got {self._show(value)}; expected true or false")
            return default
        return value

    def get_int(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None,
    ) -> int:
        value = self._get(name)
        if value is _MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                self.error(name, f"got {self._show(value)}; expected a whole number"
                                 f"{_range(minimum, maximum)}")
                return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(name, f"got {value}; expected a whole number{_range(minimum, maximum)}")
            return default
        return int(value)

    def get_float(
        self, name: str, default: float, *, minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self._get(name)
        if value is _MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(name, f"got {self._show(value)}; expected a number{_range(minimum, maximum)}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(name, f"got {value}; expected a number{_range(minimum, maximum)}")
            return default
        return float(value)

    def get_size(self, name: str, default: int, *, minimum: int = 0) -> int:
        """A byte size: a number of bytes or a string such as ``64MiB``, ``10 MB``, ``512k``."""
        value = self._get(name)
        if value is _MISSING or value is None:
            return default
        parsed = parse_size(value)
        if parsed is None or parsed < minimum:
            self.error(
                name,
                f"got {self._show(value)}; expected a size in bytes ≥ {minimum}, e.g. 1048576, "
                '"64MiB", "500MB" or "512KiB"',
            )
            return default
        return parsed

    def get_duration(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        """A duration in seconds: a number, or a string such as ``500ms``, ``5s``, ``2m``, ``1h``."""
        value = self._get(name)
        if value is _MISSING or value is None:
            return default
        parsed = parse_duration(value)
        if parsed is None or parsed < minimum:
            self.error(
                name,
                f"got {self._show(value)}; expected a duration ≥ {minimum:g}s, e.g. 5, \"500ms\", "
                '"30s", "5m", "1h" or "7d"',
            )
            return default
        return parsed

    def get_str_list(self, name: str, default: list[str]) -> list[str]:
        value = self._get(name)
        if value is _MISSING or value is None:
            return list(default)
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(name, f"got {self._show(value)}; expected a list of strings")
            return list(default)
        return list(value)

    # -- nesting ----------------------------------------------------------------------------
    def section(self, name: str) -> Section:
        """The child mapping `name` (an empty, absent section when the key is missing)."""
        known = self._child_of.get(name)
        if isinstance(known, Section):
            return known
        value = self._get(name)
        child = Section(
            None if value is _MISSING else value, self.key(name), self.problems,
            present=value is not _MISSING, redact=self.redact,
        )
        self._children.append(child)
        self._child_of[name] = child
        return child

    def sections(self, name: str) -> dict[str, Section]:
        """A mapping of names to mappings, e.g. ``categories: {audit: {...}, app: {...}}``."""
        known = self._child_of.get(name)
        if isinstance(known, dict):
            return dict(known)
        value = self._get(name)
        out: dict[str, Section] = {}
        if value is _MISSING or value is None:
            pass
        elif not isinstance(value, Mapping):
            self.error(name, f"got {self._show(value)}; expected a mapping of names to settings")
        else:
            for sub_name, sub_value in value.items():
                child = Section(sub_value, f"{self.key(name)}.{sub_name}", self.problems,
                                redact=self.redact)
                self._children.append(child)
                out[str(sub_name)] = child
        self._child_of[name] = out
        return dict(out)

    def section_list(self, name: str) -> list[Section]:
        """A list of mappings, e.g. ``match: [{attribute: x}, {severity_at_least: WARN}]``."""
        value = self._get(name)
        if value is _MISSING or value is None:
            return []
        if isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, list):
            self.error(name, f"got {self._show(value)}; expected a list of mappings")
            return []
        out: list[Section] = []
        for index, item in enumerate(value):
            child = Section(item, f"{self.key(name)}[{index}]", self.problems, redact=self.redact)
            self._children.append(child)
            out.append(child)
        return out

    def check_unknown(self) -> None:
        """Report keys that no component read, here and in every child section."""
        known = sorted(self._seen)
        for raw_key in self._data:
            key = str(raw_key)
            if key in self._seen:
                continue
            hint = difflib.get_close_matches(key, known, n=1)
            accepted = f"did you mean {hint[0]!r}? " if hint else ""
            listing = ", ".join(known) if known else "none"
            self.problems.append(
                ConfigProblem(self.key(key), f"unknown key; {accepted}known keys here: {listing}")
            )
        for child in self._children:
            child.check_unknown()


def _range(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f" ≥ {minimum:g}"
    if maximum is not None:
        return f" ≤ {maximum:g}"
    return ""


def parse_size(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _SIZE_RE.match(value)
    if not match:
        return None
    unit = (match.group(2) or "").lower()
    factor = _SIZE_UNITS.get(unit)
    if factor is None:
        return None
    return int(float(match.group(1)) * factor)


def parse_duration(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _DURATION_RE.match(value)
    if not match:
        return None
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or ""]
