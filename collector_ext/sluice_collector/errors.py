"""Errors raised by the receiver, translated at its boundaries.

    SluiceReceiverError
     ├── ConfigError          bad configuration; carries every problem found, not just the first
     ├── DecodeError          an OTLP request that cannot be decoded  → gRPC INVALID_ARGUMENT
     ├── RequestTooLarge      a request over `max_request_bytes`      → gRPC RESOURCE_EXHAUSTED
     ├── Overloaded           the bounded in-flight queue is full     → gRPC UNAVAILABLE + retry info
     └── SinkError            a destination could not take a batch    → gRPC UNAVAILABLE + retry info
          └── DiskFullError   the file sink ran out of space

Only the CLI's `main` turns these into exit codes; the gRPC services turn them into status codes.
Nothing in the receiver answers `INTERNAL` for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass


class SluiceReceiverError(Exception):
    """Base class of every error the receiver raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config: where, what was found, and what would be accepted."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(SluiceReceiverError):
    """A config that cannot run; `problems` lists all of them so users fix them in one go."""

    def __init__(self, problems: list[ConfigProblem], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(f"{count} config problem{'s' if count != 1 else ''}{where}:\n{lines}")


class DecodeError(SluiceReceiverError):
    """The request bytes are not a valid OTLP Export request."""


class RequestTooLarge(SluiceReceiverError):
    """The request is larger than the receiver accepts."""


class Overloaded(SluiceReceiverError):
    """The receiver is over its in-flight bound; the client should retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SinkError(SluiceReceiverError):
    """A sink could not durably take a batch; nothing of the batch may be acknowledged."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DiskFullError(SinkError):
    """The file system under `files.directory` is full (ENOSPC/EDQUOT)."""
