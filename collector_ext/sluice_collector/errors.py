"""Errors raised by the receiver, translated at its boundaries.

    SluiceReceiverError
     ├── ConfigError          bad configuration; carries every problem found, not just the first
     ├── Unauthenticated      no or unknown bearer token               → UNAUTHENTICATED / 401
     ├── DecodeError          an OTLP request that cannot be decoded   → INVALID_ARGUMENT / 400
     ├── RequestTooLarge      a request over `max_request_bytes`       → RESOURCE_EXHAUSTED / 413
     └── Retryable            nothing was kept; come back after `retry_after_s`
          ├── Overloaded      the bounded in-flight set is full        → UNAVAILABLE + RetryInfo / 429
          ├── SinkError       a destination could not take a batch     → UNAVAILABLE + RetryInfo / 503
          │    └── DiskFullError   the file sink ran out of space
          └── InternalError   a bug of ours while handling the request → UNAVAILABLE + RetryInfo / 503

The ingest core raises them; each front door (`receivers/`) maps them to its transport's status
codes, and only the CLI's `main` turns them into exit codes. Nothing in the receiver answers
`INTERNAL` (or HTTP 500) for bad input.
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


class Unauthenticated(SluiceReceiverError):
    """No bearer token, or one no tenant owns. `reason` ("missing" | "invalid") labels
    /metrics; the message is safe to send to the client (it never quotes the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "missing bearer token; send `authorization: Bearer <token>`" if reason == "missing"
            else "invalid bearer token"
        )
        self.reason = reason


class DecodeError(SluiceReceiverError):
    """The request bytes are not a valid OTLP Export request."""


class RequestTooLarge(SluiceReceiverError):
    """The request is larger than the receiver accepts."""


class Retryable(SluiceReceiverError):
    """Nothing of the request was kept; the client should retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(Retryable):
    """The receiver is over its in-flight bound."""


class SinkError(Retryable):
    """A sink could not durably take a batch; nothing of the batch may be acknowledged."""


class DiskFullError(SinkError):
    """The file system under `files.directory` is full (ENOSPC/EDQUOT)."""


class InternalError(Retryable):
    """An unexpected failure of ours while handling a request; logged once per kind."""
