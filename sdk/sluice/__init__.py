"""sluice: one call to make a Python app emit correlated logs, spans and metrics over OTLP.

    import sluice
    sluice.init(service_name="billing")          # reads SLUICE_* and OTEL_* variables too
    log = sluice.get_logger("security")
    with sluice.context(request_id=rid, user_id=uid):
        log.warning("login failed")              # carries trace/span ids, request.id, user.id, log.category

Everything documented here is public; modules starting with `_` are not. See docs/sdk.md.
"""

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
