"""What the receiver needs beyond the SDK, and the message when it is not installed.

`pip install sluice-otel` installs the SDK (an app's `sluice.init()`, `sluice run`, the masking
engine) and nothing an app does not use; `pip install 'sluice-otel[receiver]'` adds what the
receiver and the commands that read its files need. The `sluice` command itself works with the
SDK alone: `--help`, `version` and `run` never import the receiver's dependencies, and a
receiver command without them says what to install instead of a traceback.
"""

from __future__ import annotations

import importlib.util

__all__ = ["RECEIVER_EXTRA", "RECEIVER_MODULES", "MissingExtra", "missing_receiver_dependencies",
           "require_receiver"]

RECEIVER_EXTRA = "sluice-otel[receiver]"
# Module the receiver imports → the distribution in the `receiver` extra that provides it
# (tests/test_packaging.py checks this against pyproject.toml).
RECEIVER_MODULES: dict[str, str] = {
    "yaml": "pyyaml",
    "orjson": "orjson",
    "prometheus_client": "prometheus-client",
    "grpc_health": "grpcio-health-checking",
    "opentelemetry.proto": "opentelemetry-proto",
    "google.protobuf": "protobuf",
    "tqdm": "tqdm",
    "uvicorn": "uvicorn",
    "httptools": "httptools",
}


class MissingExtra(ImportError):
    """A receiver command was run where only the SDK is installed."""


def missing_receiver_dependencies() -> list[str]:
    """The distributions of the `receiver` extra whose modules cannot be found."""
    missing = []
    for module, dist in RECEIVER_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing
            found = False
        if not found:
            missing.append(dist)
    return missing


def require_receiver(command: str) -> None:
    """Raise `MissingExtra` naming what to install when `command` cannot run here."""
    missing = missing_receiver_dependencies()
    if missing:
        raise MissingExtra(
            f"`sluice {command}` needs the receiver's dependencies, which are not installed "
            f"(missing: {', '.join(missing)}); install them with: pip install '{RECEIVER_EXTRA}'")
