"""An asyncio event loop on a thread of its own, driven from synchronous code.

The gRPC front door runs on `grpc.aio` so that a request waiting for its message holds no
thread; the rest of the receiver (sinks, status, CLI) stays synchronous. `EventLoopThread` is
the seam: the receiver starts and stops the server through `call`, and request handlers hand
blocking work to thread pools with `run_blocking`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoopThread:
    """One event loop, run forever on a daemon thread until `stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout_s)


async def run_blocking(executor: Executor, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on `executor`, awaited without holding the loop. Shielded: a call cancelled
    meanwhile (its client went away) still runs to the end on the pool — it may hold an
    admission place only its own `finally` gives back — and only the waiting stops."""
    future = asyncio.wrap_future(executor.submit(fn, *args))
    # Nobody may await it any more when the caller was cancelled: fetch its outcome anyway, so
    # asyncio does not log "exception was never retrieved".
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return await asyncio.shield(future)
