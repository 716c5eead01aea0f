"""Category loggers: stdlib loggers whose records carry `log.category`.

The receiver files each record by `log.category` (access, security, audit, ...). Setting it at the
source is cheaper and more exact than the receiver guessing from attributes, so a category logger
is just a `LoggerAdapter` that merges the attribute into `extra` of every call.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import MutableMapping
from typing import Any

__all__ = ["Category", "CategoryLogger", "get_logger", "safe_extra"]


class Category(enum.StrEnum):
    """The categories the receiver knows out of the box; any other lowercase name works too."""

    ACCESS = "access"
    APP = "app"
    AUDIT = "audit"
    ERROR = "error"
    PERFORMANCE = "performance"
    SECURITY = "security"
    SYSTEM = "system"


_RESERVED = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


def safe_extra(attributes: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Rename keys that would clash with `LogRecord` fields (stdlib raises KeyError on those)."""
    clashes = [k for k in attributes if k in _RESERVED]
    for key in clashes:
        attributes[f"attr.{key}"] = attributes.pop(key)
    return attributes


class CategoryLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A stdlib-compatible logger that tags every record with `log.category`.

    Unlike the stock `LoggerAdapter`, a caller's own `extra=` is merged, not replaced.
    """

    def __init__(self, logger: logging.Logger, category: str) -> None:
        super().__init__(logger, {"log.category": category})
        self.category = category

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.get("extra")
        own: dict[str, Any] = dict(self.extra or {})
        kwargs["extra"] = {**safe_extra(dict(extra)), **own} if extra else own
        return msg, kwargs


_cache: dict[tuple[str, str | None], CategoryLogger] = {}
_cache_lock = threading.Lock()


def normalise(category: str | Category) -> str:
    text = str(category.value if isinstance(category, Category) else category).strip().lower()
    return text or Category.APP.value


def get_logger(category: str | Category = Category.APP, name: str | None = None) -> CategoryLogger:
    """A logger for `category` (one of `Category` or a custom name), by default named `sluice.<category>`.

    The default-named loggers are set to INFO (when unset) so deliberate records are not lost to a
    root logger at WARNING; pass `name` to use (and configure) a logger of your own instead.

    Never raises: an odd category is normalised (stripped, lower-cased; empty becomes `app`).
    """
    cat = normalise(category)
    key = (cat, name)
    with _cache_lock:
        adapter = _cache.get(key)
        if adapter is None:
            logger = logging.getLogger(name or f"sluice.{cat}")
            if name is None and logger.level == logging.NOTSET:
                # Records sent through sluice's own loggers are deliberate (audit trails, events,
                # access lines): INFO must not vanish because the root logger sits at WARNING.
                logger.setLevel(logging.INFO)
            adapter = _cache[key] = CategoryLogger(logger, cat)
        return adapter
