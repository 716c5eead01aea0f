"""Errors the SDK raises, all at setup time (after `init()` nothing raises into app code).

    SluiceError            base of everything sluice raises on purpose
     └── ConfigError       a bad argument or variable to `init()`; names it, the value, what is accepted
"""

from __future__ import annotations

__all__ = ["ConfigError", "SluiceError"]


class SluiceError(Exception):
    """Base class so callers can catch everything sluice raises on purpose in one clause."""


class ConfigError(SluiceError, ValueError):
    """A bad `init()` argument or environment variable.

    It subclasses `ValueError` so code written against plain Python conventions still catches it.
    """

    def __init__(self, name: str, value: object, accepted: str, *, message: str | None = None) -> None:
        self.name = name
        self.value = value
        self.accepted = accepted
        super().__init__(message or f"sluice.init: {name}={value!r} is invalid; expected {accepted}")
