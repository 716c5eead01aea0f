"""The little of ASGI the receiver's HTTP ports share: the callable's types and one helper.

Plain ASGI (no framework), so any ASGI server — uvicorn, granian, hypercorn — can serve the
apps built on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "respond"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def respond(send: Send, status: int, content_type: str, body: bytes,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """One whole response, always with `X-Content-Type-Options: nosniff`."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"), *(headers or []),
    ]})
    await send({"type": "http.response.body", "body": body})
