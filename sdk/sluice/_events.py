"""Typed events: a fixed vocabulary (`EventType`) mapped to categories and `event.name`.

Mapping decisions (documented in docs/sdk.md):

- `AUTH_*` -> `security`: logins, logouts, API keys and failures are what a security review reads.
- `API_*` -> `access`: request/response records belong beside the HTTP access log.
- `SYSTEM_*` -> `system`.
- Git-style changes that alter state someone may have to account for (COMMIT, PUSH, MERGE,
  FILE_CREATE/CHANGE/DELETE, PULL_REQUEST) -> `audit`, so they get audit retention and delivery.
- Read-only or conversational ones (CLONE, FETCH, COMMENT, REVIEW) -> `app`.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from sluice import _health
from sluice._categories import Category, get_logger, safe_extra

__all__ = ["EVENT_CATEGORIES", "EventType", "event"]


class EventType(enum.StrEnum):
    """Event names as they appear in `event.name` (dotted, lower case)."""

    COMMIT = "git.commit"
    PUSH = "git.push"
    PULL_REQUEST = "git.pull_request"
    FILE_CHANGE = "file.change"
    FILE_CREATE = "file.create"
    FILE_DELETE = "file.delete"
    CLONE = "git.clone"
    FETCH = "git.fetch"
    MERGE = "git.merge"
    COMMENT = "collab.comment"
    REVIEW = "collab.review"
    AUTH_LOGIN = "auth.login"
    AUTH_LOGOUT = "auth.logout"
    AUTH_API_KEY = "auth.api_key"
    AUTH_FAILURE = "auth.failure"
    API_REQUEST = "api.request"
    API_RESPONSE = "api.response"
    API_ERROR = "api.error"
    SYSTEM_START = "system.start"
    SYSTEM_STOP = "system.stop"
    SYSTEM_CONFIG = "system.config"


EVENT_CATEGORIES: dict[EventType, Category] = {
    EventType.COMMIT: Category.AUDIT,
    EventType.PUSH: Category.AUDIT,
    EventType.PULL_REQUEST: Category.AUDIT,
    EventType.FILE_CHANGE: Category.AUDIT,
    EventType.FILE_CREATE: Category.AUDIT,
    EventType.FILE_DELETE: Category.AUDIT,
    EventType.MERGE: Category.AUDIT,
    EventType.CLONE: Category.APP,
    EventType.FETCH: Category.APP,
    EventType.COMMENT: Category.APP,
    EventType.REVIEW: Category.APP,
    EventType.AUTH_LOGIN: Category.SECURITY,
    EventType.AUTH_LOGOUT: Category.SECURITY,
    EventType.AUTH_API_KEY: Category.SECURITY,
    EventType.AUTH_FAILURE: Category.SECURITY,
    EventType.API_REQUEST: Category.ACCESS,
    EventType.API_RESPONSE: Category.ACCESS,
    EventType.API_ERROR: Category.ACCESS,
    EventType.SYSTEM_START: Category.SYSTEM,
    EventType.SYSTEM_STOP: Category.SYSTEM,
    EventType.SYSTEM_CONFIG: Category.SYSTEM,
}

_FAILED = {"failure", "failed", "error", "denied"}


def event(
    event_type: EventType | str,
    *,
    user_id: str | None = None,
    status: str | None = None,
    duration_ms: float | None = None,
    source_ip: str | None = None,
    files_changed: int | None = None,
    message: str | None = None,
    **metadata: Any,
) -> None:
    """Emit one typed event record (category from `EVENT_CATEGORIES`); never raises.

    Errors and failures (`API_ERROR`, `AUTH_FAILURE`, or a failing `status`) log at WARNING.
    """
    try:
        kind = EventType(event_type)
        extra: dict[str, Any] = dict(safe_extra(dict(metadata)))
        extra["event.name"] = kind.value
        for key, value in (("user.id", user_id), ("event.status", status), ("event.duration_ms", duration_ms),
                           ("client.address", source_ip), ("event.files_changed", files_changed)):
            if value is not None:
                extra[key] = value
        failed = kind in (EventType.API_ERROR, EventType.AUTH_FAILURE) or (status or "").lower() in _FAILED
        get_logger(EVENT_CATEGORIES[kind]).log(
            logging.WARNING if failed else logging.INFO, message or kind.value, extra=extra, stacklevel=2)
    except Exception as exc:
        _health.report_once("event", f"could not record event {event_type!r}", exc)
