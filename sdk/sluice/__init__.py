"""sluice: one call to make a Python app emit correlated logs, spans and metrics over OTLP.

    import sluice
    sluice.init(service_name="billing")          # reads SLUICE_* and OTEL_* variables too
    log = sluice.get_logger("security")
    with sluice.context(request_id=rid, user_id=uid):
        log.warning("login failed")              # carries trace/span ids, request.id, user.id, log.category

Everything documented here is public; modules starting with `_` are not. See docs/sdk.md.

The names below are imported on first use (PEP 562), so `import sluice.masking` — the pure
masking engine the receiver shares — does not load the OpenTelemetry SDK, and `import sluice`
costs nothing until the app calls into it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice._audit import audit
    from sluice._categories import Category, CategoryLogger, get_logger
    from sluice._context import context
    from sluice._events import EventType, event
    from sluice._jobs import job
    from sluice._runtime import Sluice, init, shutdown
    from sluice.errors import ConfigError, SluiceError

__version__ = "0.1.0.dev0"
__all__ = [
    "Category",
    "CategoryLogger",
    "ConfigError",
    "EventType",
    "Sluice",
    "SluiceError",
    "__version__",
    "audit",
    "context",
    "event",
    "get_logger",
    "init",
    "job",
    "shutdown",
]

# Public name → the module that defines it.
_LAZY = {
    "audit": "sluice._audit",
    "Category": "sluice._categories",
    "CategoryLogger": "sluice._categories",
    "get_logger": "sluice._categories",
    "context": "sluice._context",
    "EventType": "sluice._events",
    "event": "sluice._events",
    "job": "sluice._jobs",
    "Sluice": "sluice._runtime",
    "init": "sluice._runtime",
    "shutdown": "sluice._runtime",
    "ConfigError": "sluice.errors",
    "SluiceError": "sluice.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sluice' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
