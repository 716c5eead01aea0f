"""`audit()`: one structured record per change, in category `audit`.

The record names who (`audit.actor`) did what (`audit.action`) to which entity, the values before
and after, and which keys changed, so an audit trail can be rebuilt from the log alone. Delivery
is the strongest the SDK has: the shipper never drops the `audit` category and spills it to disk
while the receiver is away.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sluice import _health
from sluice._categories import Category, get_logger, safe_extra

__all__ = ["audit", "changed_keys"]

_MISSING = object()


def changed_keys(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """Keys added, removed or whose value differs, sorted so the record is stable."""
    before, after = old or {}, new or {}
    return sorted(k for k in set(before) | set(after) if before.get(k, _MISSING) != after.get(k, _MISSING))


def audit(
    action: str,
    *,
    actor: str,
    entity_type: str,
    entity_id: str | int,
    old: Mapping[str, Any] | None = None,
    new: Mapping[str, Any] | None = None,
    status: str = "success",
    message: str | None = None,
    **attributes: Any,
) -> None:
    """Record that `actor` performed `action` on `entity_type`/`entity_id`; never raises.

    A non-success `status` logs at WARNING so failed changes stand out in plain log views too.
    """
    try:
        extra: dict[str, Any] = dict(safe_extra(dict(attributes)))
        extra.update({
            "event.name": f"audit.{action}",
            "audit.action": action,
            "audit.actor": str(actor),
            "audit.entity.type": entity_type,
            "audit.entity.id": str(entity_id),
            "audit.status": status,
            "audit.changed_keys": changed_keys(old, new),
        })
        if old is not None:
            extra["audit.old"] = dict(old)
        if new is not None:
            extra["audit.new"] = dict(new)
        level = logging.INFO if status == "success" else logging.WARNING
        text = message or "%s %s %s/%s: %s"
        args = () if message else (actor, action, entity_type, entity_id, status)
        get_logger(Category.AUDIT).log(level, text, *args, extra=extra, stacklevel=2)
    except Exception as exc:
        _health.report_once("audit", "could not record an audit event", exc)
